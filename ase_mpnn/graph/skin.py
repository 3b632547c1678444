"""Skin neighbour lists (Verlet lists): build at cutoff + skin, reuse while provably complete.

Between two MD or relaxation steps atoms move by a tiny fraction of the cutoff, so the
pairs within the cutoff are almost the same. A list built at ``cutoff + skin`` stays
complete (holds every pair now closer than ``cutoff``) as long as no pair can have closed
in by ``skin``. The potential then drops the pairs beyond the cutoff before the model
runs, so results are identical to those with a fresh list.

The test, exact for any cell change: write the new cell as C' = C0 G (G = C0^-1 C', rows
are lattice vectors) and the new positions as x' = x0 G + u, u being what the affine
deformation does not explain. Every pair vector then is r' = r0 G + (u_j - u_i), so
|r'| >= sigma_min(G) |r0| - 2 max|u|. A pair left out of the list had |r0| >= cutoff +
skin, so the list is complete while sigma_min(G) (cutoff + skin) - 2 max|u| > cutoff.
With a fixed cell (G = I) this is the familiar "no atom moved more than skin / 2".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from .charge_spin import read_global_state
from .structure import (
    MIN_DISTANCE,
    Structure,
    check_edge_lengths,
    check_geometry,
    make_structure,
)


def check_skin(skin: float, cutoff: float) -> None:
    """A Verlet skin must lie in [0, cutoff] (Angstrom): ValueError naming both otherwise."""
    if not 0 <= skin <= cutoff:
        raise ValueError(f"skin must be between 0 and the cutoff ({cutoff:g} A), got {skin!r}")


class SkinNeighborList:
    """Per-calculator neighbour-list cache with a Verlet skin.

    Args:
        cutoff: the model's cutoff, Angstrom.
        skin: extra radius of the stored list, Angstrom (0 rebuilds on every call).
        species: the model's element symbols.
        min_distance: closest allowed approach, Angstrom (checked when the list is built).

    ``builds`` and ``reuses`` count what happened, for tests and benchmarks.
    """

    def __init__(self, cutoff: float, skin: float, species: Sequence[str],
                 min_distance: float = MIN_DISTANCE):
        check_skin(skin, cutoff)
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.species, self.min_distance = list(species), float(min_distance)
        self.builds = self.reuses = 0
        self._reference: Structure | None = None

    @property
    def list_cutoff(self) -> float:
        """Radius the stored list was built with, Angstrom."""
        return self.cutoff + self.skin

    def structure(self, atoms: Atoms) -> Structure:
        """The ``Structure`` of ``atoms`` with a list at cutoff + skin, reused when valid."""
        positions = np.asarray(atoms.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        if self._still_complete(atoms, positions, cell):
            if not np.array_equal(cell, self._reference.cell):  # new cells are checked;
                check_geometry(positions, cell, np.asarray(atoms.pbc, dtype=bool))
            # NaN positions never get here (_still_complete returns False for them)
            # the charge and spin are read afresh: atoms.info may have changed since
            state = read_global_state(atoms.info, atoms.numbers)
            reused = self._reference._replace(positions=positions.reshape(-1, 3), cell=cell,
                                              charge=state.charge,
                                              multiplicity=state.multiplicity)
            # the list holds every pair within cutoff + skin, so every close pair
            check_edge_lengths(reused.positions, cell, reused.edges, reused.shifts,
                               self.min_distance)
            self.reuses += 1
            return reused
        built = make_structure(atoms, self.list_cutoff, self.species, self.min_distance)
        # own copies: the arrays may share memory with ``atoms``, which callers change in place
        self._reference = built.copy()
        self.builds += 1
        return self._reference

    def _still_complete(self, atoms: Atoms, positions: np.ndarray, cell: np.ndarray) -> bool:
        ref = self._reference
        if ref is None or self.skin == 0 or len(positions) != len(ref.positions):
            return False
        if not (np.array_equal(atoms.numbers, ref.numbers) and np.array_equal(atoms.pbc, ref.pbc)):
            return False
        if np.array_equal(cell, ref.cell):
            deformation, sigma_min = None, 1.0
        elif atoms.pbc.all():  # NPT or a cell filter: allow what the strain bound allows
            deformation = np.linalg.solve(ref.cell, cell)  # G with C' = C0 G
            sigma_min = float(np.linalg.svd(deformation, compute_uv=False).min())
        else:
            return False
        affine = ref.positions if deformation is None else ref.positions @ deformation
        moved = np.sqrt(((positions - affine) ** 2).sum(axis=1).max()) if len(positions) else 0.0
        if not np.isfinite(moved):
            return False  # NaN positions: rebuild, which reports them
        return sigma_min * self.list_cutoff - 2.0 * moved > self.cutoff
