"""Many structures per model call: batched static evaluation in one graph.

Screening thousands of small cells one ASE call at a time spends most of its time outside
the model (Python, neighbour lists, tiny tensor kernels). Here the structures are packed
into one disjoint graph per chunk (the core's batch format), chunked by an atom and edge
budget, and one forward + backward pass gives every structure's energy, forces and stress.

    >>> from ase_mpnn.batch import evaluate
    >>> results = evaluate(structures, "emt-cuni-schnet")          # doctest: +SKIP
    >>> results[0]["energy"], results[0]["forces"].shape             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from ase import Atoms
from tqdm import tqdm

from ..errors import ASEMPNNError
from ..graph import MIN_DISTANCE, Structure, collate, make_structure
from ..graph.charge_spin import GlobalState, check_state_taken
from ..graph.structure import is_one_structure
from ..loading import ModelSource, potential_for
from ..potential import Potential
from ..results import to_ase_results

#: default budget of one chunk; a graph of this size takes well under 1 GB even for MACE
MAX_ATOMS = 4096
MAX_EDGES = 262_144


def chunks_by_budget(atoms_per_item: Sequence[int], edges_per_item: Sequence[int],
                     max_atoms: int = MAX_ATOMS, max_edges: int = MAX_EDGES) -> Iterator[list[int]]:
    """Consecutive index chunks whose atom and edge totals stay within the budget.

    An item larger than the budget on its own forms a chunk by itself.
    """
    chunk: list[int] = []
    n_atoms = n_edges = 0
    for i, (a, e) in enumerate(zip(atoms_per_item, edges_per_item)):
        if chunk and (n_atoms + a > max_atoms or n_edges + e > max_edges):
            yield chunk
            chunk, n_atoms, n_edges = [], 0, 0
        chunk.append(i)
        n_atoms += a
        n_edges += e
    if chunk:
        yield chunk


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's (CUDA or CPU) out-of-memory errors."""
    oom = getattr(torch, "OutOfMemoryError", ())
    return isinstance(exc, oom) or "out of memory" in str(exc).lower()


def evaluate_records(potential: Potential, records: Sequence[Structure]) -> list[dict[str, Any]]:
    """ASE results of prepared structures, evaluated as one graph; on out-of-memory, halve
    the chunk and retry each half, down to single structures."""
    weights = next(potential.parameters())
    try:
        graph = collate(records, dtype=weights.dtype, device=weights.device)
        periodic = [r.periodic for r in records]
        out = potential(graph, forces=True, stress=any(periodic))
        return to_ase_results(out, [r.n_atoms for r in records], periodic)
    except (RuntimeError, MemoryError) as exc:
        if len(records) == 1 or not (isinstance(exc, MemoryError) or is_out_of_memory(exc)):
            raise
        if weights.device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(records) // 2
        return (evaluate_records(potential, records[:half])
                + evaluate_records(potential, records[half:]))


def prepare(structures: Sequence[Any], potential: Potential, min_distance: float,
            errors: str) -> list[Structure | str]:
    """Checked record and neighbour list of each structure; with errors="store" a structure
    that fails its checks (a charge or spin the model does not take among them) gets its
    error message instead."""
    prepared: list[Structure | str] = []
    takes = getattr(potential, "global_inputs", ())
    for structure in structures:
        try:
            record = make_structure(structure, potential.cutoff, potential.species,
                                    min_distance)
            check_state_taken(GlobalState(record.charge, record.multiplicity), takes,
                              f"this {potential.architecture} model")
            prepared.append(record)
        except (ASEMPNNError, ValueError, TypeError) as exc:
            if errors == "raise":
                raise
            prepared.append(f"{type(exc).__name__}: {exc}")
    return prepared


def evaluate(
    structures: Sequence[Atoms] | Atoms,
    model: ModelSource,
    *,
    device: str | None = None,
    dtype: str | None = None,
    max_atoms: int = MAX_ATOMS,
    max_edges: int = MAX_EDGES,
    min_distance: float = MIN_DISTANCE,
    errors: str = "raise",
    progress: bool = False,
) -> list[dict[str, Any]] | dict[str, Any]:
    """Energy, forces and stress of many structures, many per model call.

    Args:
        structures: ase.Atoms (or pymatgen structures); any mix of sizes, elements and pbc.
        model: a model file, built-in name, model object, a loaded Potential (as
            ``MPNNCalculator.potential``, used as it is unless device or dtype differ) or
            an MPNNCalculator (its potential, compiled or not).
        device: as for MPNNCalculator; None: the given Potential's own, else "auto".
        dtype: as for MPNNCalculator; None: the given Potential's own, else
            ``ase_mpnn.loading.DEFAULT_DTYPE``.
        max_atoms: atoms in one chunk (one graph) at most; an out-of-memory error halves
            the chunk and retries.
        max_edges: edges (neighbour pairs) in one chunk at most.
        errors: "raise" (default) stops at the first structure that fails its checks;
            "store" gives that structure ``{"error": message}`` and goes on.
        progress: show a tqdm bar over structures.

    Returns:
        One dict per structure, in input order, with ``energy`` and ``free_energy`` (eV),
        ``energies`` (n,) eV, ``forces`` (n, 3) eV/A and, for 3-D periodic cells, ``stress``
        (6,) eV/A^3 Voigt; identical to one MPNNCalculator call per structure. A single
        structure (one Atoms or pymatgen object) gives its one dict.
    """
    if errors not in ("raise", "store"):
        raise ValueError(f"errors must be 'raise' or 'store', got {errors!r}")
    if is_one_structure(structures):
        return evaluate([structures], model, device=device, dtype=dtype, max_atoms=max_atoms,
                        max_edges=max_edges, min_distance=min_distance, errors=errors)[0]
    potential = potential_for(model, device, dtype)
    prepared = prepare(structures, potential, min_distance, errors)
    results: list[dict[str, Any]] = [{"error": p} if isinstance(p, str) else {} for p in prepared]
    good = [i for i, p in enumerate(prepared) if not isinstance(p, str)]
    sizes = [prepared[i].n_atoms for i in good]
    edges = [prepared[i].n_edges for i in good]
    bar = tqdm(total=len(good), desc="evaluate", unit="structure", disable=not progress)
    for chunk in chunks_by_budget(sizes, edges, max_atoms, max_edges):
        indices = [good[k] for k in chunk]
        for i, result in zip(indices, evaluate_records(potential, [prepared[i] for i in indices])):
            results[i] = result
        bar.update(len(chunk))
    bar.close()
    return results
