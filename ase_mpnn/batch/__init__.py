"""Many structures per model call: batched static evaluation and batched relaxation.

Both take a potential (or any model source, loaded through ``ase_mpnn.loading``) and never
an ASE calculator; ``MPNNCalculator.calculate_batch`` is a thin call into ``evaluate``.
"""

from .evaluate import MAX_ATOMS, MAX_EDGES, chunks_by_budget, evaluate
from .relax import relax_batch

__all__ = ["MAX_ATOMS", "MAX_EDGES", "chunks_by_budget", "evaluate", "relax_batch"]
