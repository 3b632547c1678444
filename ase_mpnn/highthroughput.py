"""High-throughput entry points under their first names (kept for existing scripts).

The code lives in ``ase_mpnn.batch`` (batched evaluation and relaxation) and
``ase_mpnn.runs`` (Dask runs into a results database).
"""

from .batch import MAX_ATOMS, MAX_EDGES, chunks_by_budget, evaluate, relax_batch
from .results import attach_results

__all__ = ["MAX_ATOMS", "MAX_EDGES", "attach_results", "chunks_by_budget", "evaluate",
           "relax_batch"]
