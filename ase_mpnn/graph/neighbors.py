"""Neighbour lists: every pair (i, j, S) with |x_j - x_i + S @ cell| < cutoff.

Three interchangeable backends:

- ``native``: ase-mpnn's own cell list in C++ (``ase_mpnn/csrc/cell_list.cpp``), the
  default wherever the native kernels are built (``ase_mpnn.native``). It makes the list
  sorted by centre as it goes, with no sort after it: a list of 108 Cu atoms (5 A) takes
  0.33 ms against vesin's 0.81 through ``neighbor_list`` (the C++ call alone: 0.16 ms);
- ``vesin`` (a dependency): the default where the kernels are not built;
- ``matscipy``: the default wherever vesin cannot be imported.

``benchmarks/run.py`` times all three on every cell size, which is how the default was
chosen. Choose with ``set_neighbor_backend`` or the ``ASE_MPNN_NEIGHBORS`` environment
variable (``native``, ``vesin`` or ``matscipy``); tests check that all give the same pairs,
sorted by centre.

All search cell lists. They bin atoms inside the cell they are given, so
along non-periodic directions we hand it a box that just encloses the atoms (origin at
their lower corner). That keeps a molecule far from the origin, or a slab whose atoms stick
out of its nominal cell, as cheap as one centred in its box. Periodic lattice vectors are
passed unchanged, so the integer shifts S refer to the structure's own cell.
"""

from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

import numpy as np
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list

from .. import native
from ..errors import InvalidStructureError

BACKENDS = ("matscipy", "vesin", "native")


def vesin_available() -> bool:
    """True when the vesin package can be imported."""
    return importlib.util.find_spec("vesin") is not None


#: "auto": native where the kernels are built, else vesin, else matscipy
_backend = os.environ.get("ASE_MPNN_NEIGHBORS", "auto")


def set_neighbor_backend(name: str) -> None:
    """Select ``"native"``, ``"vesin"`` or ``"matscipy"`` for every neighbour list built
    from now on (``"auto"``: the default order)."""
    global _backend
    _check_backend(name)
    _backend = name


def get_neighbor_backend() -> str:
    """Name of the neighbour-list backend in use."""
    if _backend == "auto":
        if native.available():
            return "native"
        return "vesin" if vesin_available() else "matscipy"
    _check_backend(_backend)  # as set by ASE_MPNN_NEIGHBORS, or turned off since
    return _backend


def _check_backend(name: str) -> None:
    """Raise ValueError for an unknown backend name, ImportError for one that cannot run."""
    if name not in (*BACKENDS, "auto"):
        raise ValueError(f"unknown neighbour-list backend {name!r} (set_neighbor_backend or "
                         f"ASE_MPNN_NEIGHBORS); choose one of {BACKENDS}")
    if name == "vesin" and not vesin_available():
        raise ImportError("vesin is not installed: pip install vesin")
    if name == "native" and not native.available():
        raise ImportError("ase-mpnn's native kernels are not built (or ASE_MPNN_KERNELS=off): "
                          "run `ase-mpnn kernels --build`")

#: padding (Angstrom) added to the enclosing box along non-periodic directions
_BOX_PADDING = 1.0

#: a list expected to hold more pairs than this is refused before it is built (about
#: 5 GB of list alone; the model needs far more per pair)
MAX_PAIRS = 100_000_000


class NeighborList(NamedTuple):
    """A full (both directions) neighbour list of one structure.

    Attributes:
        centers: (n_edges,) int64, index i of the centre atom.
        neighbors: (n_edges,) int64, index j of the neighbour.
        shifts: (n_edges, 3) int64, lattice translation S of j (zero along non-periodic axes).
        distances: (n_edges,) float64, |x_j - x_i + S @ cell| in Angstrom.
    """

    centers: np.ndarray
    neighbors: np.ndarray
    shifts: np.ndarray
    distances: np.ndarray


def _free_directions(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(3 - n_periodic, 3) orthonormal directions perpendicular to the periodic vectors."""
    periodic = cell[pbc]
    if not len(periodic):
        return np.eye(3)
    # orthonormal basis whose first rows span the periodic vectors
    q, _ = np.linalg.qr(np.vstack([periodic, np.eye(3)]).T, mode="complete")
    return q.T[len(periodic) : 3]


def _close_gaps(positions: np.ndarray, free_dirs: np.ndarray, cutoff: float) -> np.ndarray:
    """Positions with every empty gap wider than the cutoff along a non-periodic direction
    narrowed to ``cutoff + _BOX_PADDING``.

    Atoms on either side of such a gap are farther apart than the cutoff before and after,
    and atoms on the same side keep their relative vectors, so the list of pairs (and
    their vectors) is unchanged. It keeps the search box small: two atoms 1e6 A apart
    would otherwise ask the cell-list backends for ~1e5 empty bins along that direction
    (vesin dies with SIGFPE there).
    """
    positions = positions.copy()
    for direction in free_dirs:
        heights = positions @ direction
        order = np.argsort(heights, kind="stable")
        excess = np.clip(np.diff(heights[order]) - (cutoff + _BOX_PADDING), 0.0, None)
        if excess.any():
            closed = np.concatenate([[0.0], np.cumsum(excess)])
            positions[order] -= closed[:, None] * direction
    return positions


def wrap_into_cell(positions: np.ndarray, cell: np.ndarray,
                   pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions moved by whole lattice vectors into the cell along periodic directions.

    Returns:
        (wrapped, wraps): (n_atoms, 3) positions, Angstrom, and the (n_atoms, 3) int64
        lattice translations taken off (zero along non-periodic axes):
        wrapped = positions - wraps @ cell. A pair (i, j, S) of the wrapped positions is
        the pair (i, j, S - wraps[j] + wraps[i]) of the given ones.
    """
    wraps = np.zeros((len(positions), 3), dtype=np.int64)
    if not pbc.any() or not len(positions):
        return positions, wraps
    if pbc.all():  # x = f @ cell: a 3 x 3 solve (no SVD as in pinv)
        fractional = np.linalg.solve(cell.T, positions.T).T
    else:
        fractional = positions @ np.linalg.pinv(cell[pbc])  # (n_atoms, n_periodic)
    wraps[:, pbc] = np.floor(fractional).astype(np.int64)
    return (positions - wraps @ cell if wraps.any() else positions), wraps


def shifts_after_wrap(shifts: np.ndarray, wraps: np.ndarray, centers: np.ndarray,
                      neighbors: np.ndarray) -> np.ndarray:
    """Pairs (i, j, S) of wrapped positions x - wraps @ cell (``wrap_into_cell``) restated
    for the positions x: shifts S - wraps[j] + wraps[i], the same pair vectors exactly.
    With ``-wraps``, the reverse: pairs of x restated for the wrapped positions.

    ``shifts`` itself when no atom moved. ``np.take`` gathers the rows 3x faster than
    fancy indexing (0.05 against 0.15 ms for 4,600 pairs).

    Args:
        shifts: (n_pairs, 3) int64 lattice shifts S.
        wraps: (n_atoms, 3) int64 lattice translations taken off each atom.
        centers, neighbors: (n_pairs,) int64 atoms i and j.
    """
    if not wraps.any():
        return shifts
    return shifts - np.take(wraps, neighbors, axis=0) + np.take(wraps, centers, axis=0)


def _search_box(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cell and origin to search in: periodic vectors kept, the rest span the atoms.

    Returns:
        (cell, origin): (3, 3) lattice vectors as rows, (3,) Cartesian origin, Angstrom.
    """
    free_dirs = _free_directions(cell, pbc)
    heights = positions @ free_dirs.T  # (n_atoms, n_free)
    lower = heights.min(axis=0) - _BOX_PADDING / 2
    extent = heights.max(axis=0) - heights.min(axis=0) + _BOX_PADDING
    box = cell.copy()
    box[~pbc] = free_dirs * extent[:, None]
    origin = lower @ free_dirs
    return box, origin


def expected_pairs(n_atoms: int, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> float:
    """Rough number of pairs of a periodic structure's list: n^2 times the lattice images
    within ``cutoff`` (ball volume over the periodic cell's length, area or volume);
    0 for a structure with no periodic direction (at most n^2 pairs, no images)."""
    periodic = cell[pbc]
    if not len(periodic):
        return 0.0
    measure = np.sqrt(max(np.linalg.det(periodic @ periodic.T), 0.0))
    ball = {1: 2.0 * cutoff, 2: np.pi * cutoff**2, 3: 4.0 / 3.0 * np.pi * cutoff**3}[len(periodic)]
    return float(n_atoms) ** 2 * ball / max(measure, 1e-300)


def check_pair_count(n_atoms: int, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> None:
    """Raise InvalidStructureError before building a list of more than MAX_PAIRS pairs
    (a tiny or collapsed periodic cell, or a huge cutoff + skin), instead of running out
    of memory or time."""
    count = expected_pairs(n_atoms, cell, pbc, cutoff)
    if count > MAX_PAIRS:
        raise InvalidStructureError(
            f"the neighbour list of {n_atoms} atoms within {cutoff:g} A in this cell (volume "
            f"{abs(np.linalg.det(cell)):.4g} A^3) would hold ~{count:.2g} pairs, more than "
            f"{MAX_PAIRS:.0e}: is the cell too small, or the cutoff + skin too large?")


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> NeighborList:
    """All pairs closer than ``cutoff``, periodic images included, self-pairs excluded,
    sorted by the centre atom i (the models process an atom's edges as one block).

    An atom may neighbour its own periodic image (cells smaller than the cutoff), in which
    case it appears with a non-zero shift. Positions outside the cell are fine.

    Args:
        positions: (n_atoms, 3) Cartesian positions, Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom (ignored along non-periodic axes).
        pbc: (3,) periodicity flags.
        cutoff: radius in Angstrom.
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if len(positions) == 0 or (len(positions) == 1 and not pbc.any()):
        empty = np.zeros(0, dtype=np.int64)
        return NeighborList(empty, empty, np.zeros((0, 3), np.int64), np.zeros(0))
    check_pair_count(len(positions), cell, pbc, cutoff)
    # backends handle coordinates many cells away slowly or not at all (vesin hangs on an
    # atom 1e5 cells out of a slab's plane): hand them wrapped positions
    positions, wraps = wrap_into_cell(positions, cell, pbc)
    if not pbc.all():
        positions = _close_gaps(positions, _free_directions(cell, pbc), cutoff)
    box, origin = (cell, np.zeros(3)) if pbc.all() else _search_box(positions, cell, pbc)
    backend = get_neighbor_backend()
    if backend == "native":
        i, j, shifts, d = _native_pairs(positions - origin, box, pbc, float(cutoff))
    elif backend == "vesin":
        i, j, shifts, d = _vesin_pairs(positions - origin, box, pbc, float(cutoff))
    else:
        i, j, shifts, d = _matscipy_neighbour_list(
            "ijSd", positions=positions, cell=box, pbc=pbc, cutoff=float(cutoff),
            cell_origin=origin,
        )
    i, j = _as_int64(i), _as_int64(j)
    shifts = shifts.astype(np.int64, copy=False)
    return NeighborList(i, j, shifts_after_wrap(shifts, wraps, i, j), d)


def _as_int64(indices: np.ndarray) -> np.ndarray:
    """Atom indices as int64: vesin's uint64 reinterpreted in place (they are far below
    2**63), anything else converted."""
    if indices.dtype == np.uint64:
        return indices.view(np.int64)
    return indices.astype(np.int64, copy=False)


def _native_pairs(positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, cutoff: float):
    """ase-mpnn's C++ cell list of the same search box (``ase_mpnn/csrc/cell_list.cpp``),
    sorted by centre as it is made."""
    import torch

    i, j, shifts, d = torch.ops.ase_mpnn.cell_list(
        torch.from_numpy(np.ascontiguousarray(positions)), torch.from_numpy(box),
        [int(p) for p in pbc], cutoff)
    return i.numpy(), j.numpy(), shifts.numpy(), d.numpy()


def _vesin_pairs(positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, cutoff: float):
    """vesin's full list of the same search box (positions relative to its origin)."""
    from vesin import NeighborList as VesinList

    try:  # sorted by centre inside vesin (0.2 ms faster at 108 atoms than numpy's sort)
        search = VesinList(cutoff=cutoff, full_list=True, sorted=True)
    except TypeError:  # a vesin without ``sorted``
        search = None
    i, j, shifts, d = (search or VesinList(cutoff=cutoff, full_list=True)).compute(
        points=positions, box=box, periodic=pbc.tolist(), quantities="ijSd")
    if search is not None:
        return i, j, shifts, d
    order = np.argsort(i, kind="stable")  # vesin groups pairs by cell, not by centre
    return i[order], j[order], shifts[order], d[order]
