"""Neighbour lists: every pair (i, j, S) with |x_j - x_i + S @ cell| < cutoff.

Two interchangeable backends: vesin (the default, a dependency) and matscipy (the default
wherever vesin cannot be imported); ``benchmarks/run.py`` times both on every cell size,
which is how the default was chosen. Choose with ``set_neighbor_backend`` or the
``ASE_MPNN_NEIGHBORS`` environment variable
(``matscipy`` or ``vesin``); tests check that both give the same pairs, sorted by centre.

Both search cell lists. They bin atoms inside the cell they are given, so
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

BACKENDS = ("matscipy", "vesin")


def vesin_available() -> bool:
    """True when the vesin package can be imported."""
    return importlib.util.find_spec("vesin") is not None


_backend = os.environ.get("ASE_MPNN_NEIGHBORS", "vesin" if vesin_available() else "matscipy")


def set_neighbor_backend(name: str) -> None:
    """Select ``"matscipy"`` or ``"vesin"`` for every neighbour list built from now on."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown neighbour-list backend {name!r}; choose one of {BACKENDS}")
    if name == "vesin" and not vesin_available():
        raise ImportError("vesin is not installed: pip install vesin")
    _backend = name


def get_neighbor_backend() -> str:
    """Name of the neighbour-list backend in use."""
    return _backend

#: padding (Angstrom) added to the enclosing box along non-periodic directions
_BOX_PADDING = 1.0


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


def _search_box(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cell and origin to search in: periodic vectors kept, the rest span the atoms.

    Returns:
        (cell, origin): (3, 3) lattice vectors as rows, (3,) Cartesian origin, Angstrom.
    """
    periodic = cell[pbc]
    if len(periodic):
        # orthonormal basis whose first rows span the periodic vectors
        q, _ = np.linalg.qr(np.vstack([periodic, np.eye(3)]).T, mode="complete")
        free_dirs = q.T[len(periodic) : 3]
    else:
        free_dirs = np.eye(3)
    heights = positions @ free_dirs.T  # (n_atoms, n_free)
    lower = heights.min(axis=0) - _BOX_PADDING / 2
    extent = heights.max(axis=0) - heights.min(axis=0) + _BOX_PADDING
    box = cell.copy()
    box[~pbc] = free_dirs * extent[:, None]
    origin = lower @ free_dirs
    return box, origin


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
    box, origin = (cell, np.zeros(3)) if pbc.all() else _search_box(positions, cell, pbc)
    if _backend == "vesin":
        i, j, shifts, d = _vesin_pairs(positions - origin, box, pbc, float(cutoff))
    else:
        i, j, shifts, d = _matscipy_neighbour_list(
            "ijSd", positions=positions, cell=box, pbc=pbc, cutoff=float(cutoff),
            cell_origin=origin,
        )
    return NeighborList(i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64), d)


def _vesin_pairs(positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, cutoff: float):
    """vesin's full list of the same search box (positions relative to its origin)."""
    from vesin import NeighborList as VesinList

    i, j, shifts, d = VesinList(cutoff=cutoff, full_list=True).compute(
        points=positions, box=box, periodic=pbc.tolist(), quantities="ijSd")
    order = np.argsort(i, kind="stable")  # vesin groups pairs by cell, not by centre
    return i[order], j[order], shifts[order], d[order]
