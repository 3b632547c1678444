"""Structures -> one batched graph of tensors, and batched outputs -> one dict per structure.

Several structures batch into one graph by concatenating atoms and edges (edge indices
offset by the atoms before them), with ``BATCH`` telling which structure each atom
belongs to; models never need to know how many structures they see. How each field
batches is read from its level in ``ase_mpnn.keys``.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np
import torch

from .. import keys
from .charge_spin import GlobalState, global_state_tensors
from .neighbors import shifts_after_wrap, wrap_into_cell
from .structure import MIN_DISTANCE, Structure, is_single_structure, make_structure

Graph = dict[str, torch.Tensor]


def build_graph(
    structures: Any,
    cutoff: float,
    species: Sequence[str],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    min_distance: float = MIN_DISTANCE,
) -> Graph:
    """Build one graph (a batch) from one structure or a list of them.

    Args:
        structures: ase.Atoms (or pymatgen Structure/Molecule), or a sequence of them.
        cutoff: neighbour cutoff radius, Angstrom.
        species: the model's element symbols; SPECIES indexes into this list.
        dtype: floating dtype of positions, cell and shifts.
        device: where the tensors live.
        min_distance: closest allowed approach of two atoms, Angstrom.

    Returns:
        A dict keyed by the constants in ase_mpnn.keys (see there for shapes).
    """
    if is_single_structure(structures):
        structures = [structures]
    records = [make_structure(s, cutoff, species, min_distance) for s in structures]
    return collate(records, dtype=dtype, device=device)


def collate(
    records: Sequence[Structure],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Graph:
    """Concatenate structures (``Structure`` records) into one batched graph."""
    if not len(records):
        raise ValueError("cannot build a graph from an empty list of structures")
    records = [local_frame(r) for r in records]
    counts = np.array([r.n_atoms for r in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if len(records) == 1:  # the calculator's case: no copies
        edges = records[0].edges
    else:
        edges = np.concatenate([r.edges + off for r, off in zip(records, offsets)], axis=1)

    def cat(name: str) -> np.ndarray:
        if len(records) == 1:
            return getattr(records[0], name)
        return np.concatenate([getattr(r, name) for r in records])

    float_kw = {"dtype": dtype, "device": device}
    int_kw = {"dtype": torch.int64, "device": device}
    states = [GlobalState(r.charge, r.multiplicity) for r in records]
    return {
        keys.ATOMIC_NUMBERS: torch.as_tensor(cat("numbers"), **int_kw),
        keys.SPECIES: torch.as_tensor(cat("species"), **int_kw),
        keys.POSITIONS: torch.as_tensor(cat("positions").reshape(-1, 3), **float_kw),
        keys.CELL: torch.as_tensor(np.stack([r.cell for r in records]), **float_kw),
        keys.PBC: torch.as_tensor(np.stack([r.pbc for r in records]), device=device),
        keys.EDGE_INDEX: torch.as_tensor(edges, **int_kw),
        keys.CELL_SHIFTS: torch.as_tensor(cat("shifts").reshape(-1, 3), **float_kw),
        keys.BATCH: torch.repeat_interleave(torch.arange(len(records), device=device),
                                            torch.as_tensor(counts, device=device)),
        keys.N_ATOMS: torch.as_tensor(counts, **int_kw),
        # TOTAL_CHARGE, SPIN_MULTIPLICITY: only when some structure is charged / not singlet
        **global_state_tensors(states, dtype, device),
    }


def local_frame(record: Structure) -> Structure:
    """The same structure with every atom wrapped into the cell along periodic directions
    and the whole centred on the origin, its shifts adjusted so that every pair vector
    x_j - x_i + S @ cell is unchanged (exactly, in float64).

    A float32 model then sees the relative geometry to float32 precision wherever the atoms
    are: a cell translated by 1e4 A, or unwrapped MD coordinates, would otherwise lose
    three to four digits in x_j - x_i. Forces and stress are unchanged (a translation of
    each atom by lattice vectors, applied before the strain).
    """
    if not record.n_atoms:
        return record
    positions, wraps = wrap_into_cell(record.positions, record.cell, record.pbc)
    centers, neighbors = record.edges
    # the given positions are the wrapped ones moved by +wraps: undo what the list did
    shifts = shifts_after_wrap(record.shifts, -wraps, centers, neighbors)
    return record._replace(positions=positions - positions.mean(axis=0), shifts=shifts)


def unbatch(out: Graph, n_atoms: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Batched node and graph fields -> one dict per structure, as float64/int64 numpy.

    Args:
        out: tensors keyed by registered node- or graph-level keys (e.g. a potential's
            outputs); edge-level and unregistered keys are left out.
        n_atoms: atoms of each structure, in batch order.

    Returns:
        One dict per structure: node fields (n_atoms_k, ...), graph fields (...) (the
        structure's own row).
    """
    bounds = [0, *itertools.accumulate(int(n) for n in n_atoms)]
    split: list[dict[str, np.ndarray]] = [{} for _ in n_atoms]
    for key, tensor in out.items():
        level = keys.level(key)
        if level not in ("node", "graph"):
            continue
        dtype = torch.float64 if tensor.is_floating_point() else tensor.dtype
        array = tensor.detach().to("cpu", dtype).numpy()
        for k, part in enumerate(split):
            part[key] = (array[bounds[k]:bounds[k + 1]] if level == "node" else array[k]).copy()
    return split
