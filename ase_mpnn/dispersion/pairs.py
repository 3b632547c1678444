"""Image pairs for D3: every (i, j, lattice translation) closer than a cutoff, each once.

D3's cutoffs (32 A for the two-body sum) exceed the cell of most structures many times, so
an atom meets hundreds of images of every other atom. A cell-list neighbour search
(``ase_mpnn.graph.neighbor_list``, vesin or matscipy) is slow there: vesin took 3.6 s
for the half list of a 1372-atom Cu cell (7.8 M pairs) that simple-dftd3 sums in 1.2 s
(one thread, measured for issue 16). C6_ij does not depend on the image, so the list is
built the way D3 sums: atom pairs (i <= j) once, each with its minimum-image vector d_ij,
times the lattice translations T that can bring d_ij + T within the cutoff. It is built
in torch without gradients (float64); the energy recomputes the vectors

    r_ij,T = (x_j - x_i + w_ij @ cell) + T @ cell

from the positions and cell it is given, so forces and stress follow by autograd
(w_ij: the integer wrap of the pair, T: integer translation).

Each interaction is listed once: i < j with every T, and i == j (an atom and its own
image) with only one of T and -T, so the energy is a plain sum over the list.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch

#: candidate (atom pair, translation) checks per chunk: bounds the search's memory
_CHUNK = 1 << 22


class ImagePairs(NamedTuple):
    """Atom pairs, lattice translations and which (pair, translation) lie within cutoffs.

    Attributes:
        first, second: (n_pairs,) int64 atoms i <= j of each atom pair (batch indices).
        wrap: (n_pairs, 3) float, integer lattice vector w taking x_j - x_i to its minimum
            image (zero along non-periodic axes).
        pair_graph: (n_pairs,) int64 structure of each atom pair.
        shifts: (n_trans, 3) float, integer lattice translations T.
        shift_graph: (n_trans,) int64 structure of each translation.
        within: {cutoff: (pair index (n,), translation index (n,))} for each cutoff asked.
    """

    first: torch.Tensor
    second: torch.Tensor
    wrap: torch.Tensor
    pair_graph: torch.Tensor
    shifts: torch.Tensor
    shift_graph: torch.Tensor
    within: dict[float, tuple[torch.Tensor, torch.Tensor]]


def _translations(cell: torch.Tensor, pbc: torch.Tensor, radius: float) -> torch.Tensor:
    """(n_trans, 3) integer translations T (as float) with |T @ cell| <= radius, zero along
    non-periodic axes; T = 0 first."""
    periodic = torch.nonzero(pbc).flatten().tolist()
    if not periodic:
        return torch.zeros(1, 3, dtype=cell.dtype, device=cell.device)
    lattice = cell[periodic]  # (n_per, 3)
    # |n_a| <= radius |b_a|, b_a the reciprocal vectors of the periodic sub-lattice
    reciprocal = torch.linalg.pinv(lattice)  # (3, n_per)
    bounds = torch.ceil(radius * torch.linalg.vector_norm(reciprocal, dim=0)).long().tolist()
    ranges = [range(-b, b + 1) for b in bounds]
    grid = torch.tensor(list(itertools.product(*ranges)), dtype=cell.dtype, device=cell.device)
    grid = grid[torch.linalg.vector_norm(grid @ lattice, dim=1) <= radius]
    grid = grid[torch.argsort(torch.linalg.vector_norm(grid, dim=1))]  # T = 0 first
    shifts = torch.zeros(len(grid), 3, dtype=cell.dtype, device=cell.device)
    shifts[:, periodic] = grid
    return shifts


def _positive_half(shifts: torch.Tensor) -> torch.Tensor:
    """(n_trans,) bool: T is lexicographically positive (one of T, -T; never T = 0)."""
    sign = torch.zeros(len(shifts), dtype=torch.long, device=shifts.device)
    for axis in range(3):
        undecided = sign == 0
        sign = torch.where(undecided, torch.sign(shifts[:, axis]).long(), sign)
    return sign > 0


def _structure_pairs(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                     cutoffs: list[float], listed: list[float]):
    """One structure's atom pairs, wraps, translations (reaching the largest of
    ``cutoffs``) and hits within each of ``listed`` (local indices)."""
    n = len(positions)
    first, second = torch.triu_indices(n, n, device=positions.device)
    vectors = positions[second] - positions[first]
    wrap = torch.zeros_like(vectors)
    if pbc.any():
        lattice = cell[pbc]
        fractional = vectors @ torch.linalg.pinv(lattice)
        wrap[:, pbc] = -torch.round(fractional)
        vectors = vectors + wrap[:, pbc] @ lattice
    reach = max(cutoffs)
    longest = float(torch.linalg.vector_norm(vectors, dim=1).max()) if n else 0.0
    shifts = _translations(cell, pbc, reach + longest)
    if not listed:
        return first, second, wrap, shifts, []
    translations = shifts @ cell
    # an atom and its own image: keep one of T and -T (r2 = inf for the others and T = 0)
    self_pairs = torch.nonzero(first == second).flatten()
    excluded = torch.nonzero(~_positive_half(shifts)).flatten()
    # |d + T|^2 = |d|^2 + 2 d.T + |T|^2: one matrix product per block of translations
    # instead of an (n_pairs, n_trans, 3) array
    d2, t2 = (vectors * vectors).sum(-1), (translations * translations).sum(-1)
    squared = [c * c for c in listed]
    found: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in listed]
    step = max(1, _CHUNK // max(len(vectors), 1))
    for start in range(0, len(shifts), step):
        block = slice(start, start + step)
        r2 = torch.addmm(t2[None, block], vectors, translations[block].T, alpha=2.0)
        r2 += d2[:, None]
        cols = excluded[(excluded >= start) & (excluded < start + r2.shape[1])] - start
        r2[self_pairs[:, None], cols[None, :]] = float("inf")
        for k, limit in enumerate(squared):
            pair, trans = torch.nonzero(r2 <= limit, as_tuple=True)
            found[k].append((pair, trans + start))
    within = [tuple(torch.cat(side) for side in zip(*parts)) for parts in found]
    return first, second, wrap, shifts, within


def image_pairs(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                n_atoms: torch.Tensor, cutoffs: list[float],
                listed: list[float] | None = None) -> ImagePairs:
    """Atom pairs and the translations that reach within the largest of ``cutoffs``
    (Angstrom), with the (pair, translation) hits within each of ``listed`` (default: all
    of ``cutoffs``), without gradients.

    Args:
        positions: (n_atoms, 3) Angstrom; cell: (n_graphs, 3, 3); pbc: (n_graphs, 3) bool;
        n_atoms: (n_graphs,) atoms per structure (consecutive in ``positions``).
    """
    listed = list(cutoffs) if listed is None else list(listed)
    with torch.no_grad():
        positions, cell = positions.detach().double(), cell.detach().double()
        counts = n_atoms.tolist()
        if len(counts) == 1:  # the calculator's case: no offsets, no copies
            first, second, wrap, shifts, within = _structure_pairs(positions, cell[0], pbc[0],
                                                                   list(cutoffs), listed)
            zeros = torch.zeros_like
            return ImagePairs(first, second, wrap, zeros(first), shifts,
                              torch.zeros(len(shifts), dtype=torch.long, device=shifts.device),
                              dict(zip(listed, within)))
        parts, atom_offset, trans_offset = [], 0, 0
        pair_offset = 0
        for k, count in enumerate(counts):
            local = positions[atom_offset:atom_offset + count]
            first, second, wrap, shifts, within = _structure_pairs(local, cell[k], pbc[k],
                                                                   list(cutoffs), listed)
            within = [(p + pair_offset, t + trans_offset) for p, t in within]
            parts.append((first + atom_offset, second + atom_offset, wrap,
                          torch.full_like(first, k), shifts,
                          torch.full((len(shifts),), k, dtype=torch.long,
                                     device=shifts.device), within))
            atom_offset += count
            pair_offset += len(first)
            trans_offset += len(shifts)
        first, second, wrap, pair_graph, shifts, shift_graph, within = zip(*parts)
        hits = {c: tuple(torch.cat(side) for side in zip(*(w[k] for w in within)))
                for k, c in enumerate(listed)}
        return ImagePairs(torch.cat(first), torch.cat(second), torch.cat(wrap),
                          torch.cat(pair_graph), torch.cat(shifts), torch.cat(shift_graph),
                          hits)
