"""Vibrations of a molecule (or any structure) from one Hessian: frequencies and modes.

The harmonic normal modes are the eigenvectors of the mass-weighted Hessian
M^-1/2 H M^-1/2 and the frequencies the square roots of its eigenvalues (Wilson, Decius
and Cross, Molecular Vibrations, 1955). ASE's ``Vibrations`` builds H from 6N displaced
force calls; here H comes from the calculator's ``get_hessian`` (autograd, exact to
rounding) and ASE's ``VibrationsData`` does the rest: ``get_frequencies()`` (cm^-1,
imaginary ones complex), ``get_energies()`` (eV), ``get_modes()``, ``tabulate()``,
``write_jmol()``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from ase.calculators.calculator import Calculator
from ase.vibrations import VibrationsData

from ..graph import to_atoms


def vibrations(structure: Any, calc: Calculator,
               indices: Sequence[int] | None = None) -> VibrationsData:
    """Harmonic vibrations of ``structure`` (ase.Atoms or pymatgen) at its geometry.

    Args:
        structure: the (relaxed) geometry; not modified.
        calc: a calculator with ``get_hessian(atoms, indices)`` -> the rows of those atoms,
            (3 len(indices), 3N) eV/A^2 (MPNNCalculator).
        indices: the atoms that vibrate (default all); the others stay fixed, as in
            ``ase.vibrations.Vibrations(indices=...)``.

    Returns:
        ase.vibrations.VibrationsData over ``indices``.
    """
    atoms = to_atoms(structure).copy()
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    if not callable(getattr(calc, "get_hessian", None)):
        raise ValueError(f"vibrations need a calculator with get_hessian (MPNNCalculator); "
                         f"{type(calc).__name__} has none: use ase.vibrations.Vibrations")
    chosen = np.arange(len(atoms)) if indices is None else np.asarray(indices, dtype=int)
    if chosen.ndim != 1 or len(chosen) == 0 or len(set(chosen.tolist())) != len(chosen) \
            or chosen.min() < -len(atoms) or chosen.max() >= len(atoms):
        raise ValueError(f"indices must be distinct atom indices of the {len(atoms)} atoms, "
                         f"got {list(np.atleast_1d(chosen))}")
    chosen = chosen % len(atoms)
    columns = (3 * chosen[:, None] + np.arange(3)).ravel()  # x, y, z of each chosen atom
    # only the chosen atoms' rows: one backward pass each
    hessian = np.asarray(calc.get_hessian(atoms, indices=chosen))[:, columns]
    return VibrationsData.from_2d(atoms, hessian, indices=chosen.tolist())
