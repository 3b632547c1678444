"""Geometry optimisation: positions and, for bulk cells, the cell (ase.optimize + filters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, optimize
from ase.calculators.calculator import Calculator
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize.optimize import Optimizer

from ..results import attach_results
from .structures import prepare

OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")


def optimizer_class(name: str) -> type[Optimizer]:
    """The ase.optimize class called ``name`` (one of OPTIMIZERS)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return getattr(optimize, name)


def relax(structure: Any, calc: Calculator, fmax: float = 0.01, steps: int = 500,
          cell: bool = True, optimizer: str = "FIRE", fix_symmetry: bool = False,
          trajectory: str | Path | None = None, logfile: str | None = None) -> tuple[Atoms, dict]:
    """Relax positions and, for cells periodic in 3-D with ``cell=True``, the cell.

    Stops when every force is below ``fmax`` (eV/A) or after ``steps`` steps. The cell moves
    through ase.filters.FrechetCellFilter; constraints on the input (e.g. FixAtoms) are
    kept, and ``fix_symmetry`` adds FixSymmetry. Returns the relaxed Atoms (holding their
    results) and a summary (energy eV, max force eV/A, volume A^3, stress eV/A^3, steps,
    converged).
    """
    chosen = optimizer_class(optimizer)
    atoms = prepare(structure, calc)
    if fix_symmetry:
        atoms.set_constraint([*atoms.constraints, FixSymmetry(atoms)])
    movable: Any = FrechetCellFilter(atoms) if cell and atoms.pbc.all() else atoms
    opt = chosen(movable, logfile=logfile, trajectory=str(trajectory) if trajectory else None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    return attach_results(atoms, copy=False), _summary(atoms, converged, opt.nsteps)


def _summary(atoms: Atoms, converged: bool, steps: int) -> dict:
    """Energy (eV), max force (eV/A), volume (A^3) and stress (eV/A^3) after a relaxation."""
    summary = {"energy_eV": atoms.get_potential_energy(), "converged": converged,
               "steps": steps, "max_force_eV_per_A": float(np.abs(atoms.get_forces()).max()),
               "volume_A3": atoms.get_volume() if atoms.pbc.all() else None}
    if atoms.pbc.all():
        summary["stress_eV_per_A3"] = atoms.get_stress().tolist()
    return summary
