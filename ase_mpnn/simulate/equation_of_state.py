"""Equation of state: energy over an isotropic volume scan, fit by ase.eos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.eos import EquationOfState

from ..checks import require_integer
from .structures import prepare

#: the largest +- lattice strain of a scan (beyond it no equation of state describes a solid)
MAX_EOS_STRAIN = 0.3
#: fewest volumes of a scan: the four-parameter equations need more points than parameters
MIN_EOS_POINTS = 5


def eos(structure: Any, calc: Calculator, strain: float = 0.06, points: int = 11,
        kind: str = "birchmurnaghan", plot: str | Path | None = None) -> dict:
    """Energy over an isotropic volume scan of +-``strain`` in lattice constant, fit by ase.eos.

    ``points`` cells from (1 - strain) to (1 + strain) times the lattice, atoms scaled with
    the cell; ``kind`` is an ase.eos equation ("birchmurnaghan", "murnaghan", ...);
    ``plot`` saves the fit as an image. Returns V0 (A^3), E0 (eV), B0 (GPa), the lattice
    scale factor at V0 and the scan (volumes A^3, energies eV).
    """
    if not 0 < strain <= MAX_EOS_STRAIN:
        raise ValueError(f"strain must be > 0 and <= {MAX_EOS_STRAIN}, got {strain!r}")
    require_integer("points", points, MIN_EOS_POINTS)
    atoms = prepare(structure, calc)
    if not atoms.pbc.all():
        raise ValueError("an equation of state needs a cell periodic in all three directions")
    cell = atoms.cell.array.copy()
    volumes, energies = _scan(atoms, np.linspace(1 - strain, 1 + strain, points))
    fit = EquationOfState(volumes, energies, eos=kind)
    v0, e0, b0 = fit.fit()
    if plot:
        _save_plot(fit, plot)
    return {"V0_A3": float(v0), "E0_eV": float(e0), "B0_GPa": float(b0 / units.GPa),
            "scale_at_V0": float((v0 / np.linalg.det(cell)) ** (1 / 3)),
            "volumes_A3": volumes, "energies_eV": energies}


def _scan(atoms: Atoms, scales: np.ndarray) -> tuple[list[float], list[float]]:
    """Volumes (A^3) and energies (eV) of ``atoms`` with its cell scaled by each factor."""
    cell = atoms.cell.array.copy()
    volumes, energies = [], []
    for scale in scales:
        atoms.set_cell(cell * scale, scale_atoms=True)
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    return volumes, energies


def _save_plot(fit: EquationOfState, path: str | Path) -> None:
    """The fitted E(V) curve and the scan as an image (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = fit.plot(show=False)
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)
