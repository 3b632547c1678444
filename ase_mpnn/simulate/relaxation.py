"""Geometry optimisation: positions and, for bulk cells, the cell (ase.optimize + filters);
with a committee, the force spread of every step, optionally guarded by a threshold."""

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
from .uncertainty import UncertaintyMonitor

OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")


def optimizer_class(name: str) -> type[Optimizer]:
    """The ase.optimize class called ``name`` (one of OPTIMIZERS)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return getattr(optimize, name)


def relax(structure: Any, calc: Calculator, fmax: float = 0.01, steps: int = 500,
          cell: bool = True, optimizer: str = "FIRE", fix_symmetry: bool = False,
          trajectory: str | Path | None = None, logfile: str | None = None,
          max_force_std: float | None = None,
          on_uncertain: str = "stop") -> tuple[Atoms, dict]:
    """Relax positions and, for cells periodic in 3-D with ``cell=True``, the cell.

    Stops when every force is below ``fmax`` (eV/A) or after ``steps`` steps. The cell moves
    through ase.filters.FrechetCellFilter; constraints on the input (e.g. FixAtoms) are
    kept, and ``fix_symmetry`` adds FixSymmetry. Returns the relaxed Atoms (holding their
    results) and a summary (energy eV, max force eV/A, volume A^3, stress eV/A^3, steps,
    converged).

    With a committee calculator (one giving ``forces_std``) every trajectory frame, the
    returned Atoms and the summary hold ``max_force_std`` (the largest per-atom force std
    over the members, eV/A; atoms.info for frames) and ``uncertain_atom`` (its index).
    ``max_force_std`` and ``on_uncertain`` guard the relaxation as they guard ``md``:
    "stop" raises SimulationError at the first step above the threshold (its frame is in
    the trajectory), "flag" marks such frames (atoms.info ``uncertain``) and counts them
    in the summary (``uncertain_steps``, ``first_uncertain_step``).
    """
    chosen = optimizer_class(optimizer)
    monitor = UncertaintyMonitor(calc, max_force_std, on_uncertain)
    atoms = prepare(structure, calc)
    if fix_symmetry:
        atoms.set_constraint([*atoms.constraints, FixSymmetry(atoms)])
    movable: Any = FrechetCellFilter(atoms) if cell and atoms.pbc.all() else atoms
    opt = chosen(movable, logfile=logfile, trajectory=str(trajectory) if trajectory else None)
    if monitor.enabled:
        _watch(opt, atoms, monitor)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    summary = {**_summary(atoms, converged, opt.nsteps),
               **monitor.check(atoms, opt.nsteps), **monitor.summary()}
    summary.pop("uncertain", None)  # a per-step mark: the count is uncertain_steps
    return attach_results(atoms, copy=False), summary


def _watch(opt: Optimizer, atoms: Atoms, monitor: UncertaintyMonitor) -> None:
    """Check the force spread after every step (and before the first): into atoms.info
    before the optimizer's trajectory writes the frame, and only then, the frame kept,
    a stop."""
    def record() -> None:
        atoms.info.update(monitor.check(atoms, opt.nsteps))

    def enforce() -> None:
        fields = monitor.check(atoms, opt.nsteps)
        if monitor.stops(fields):
            raise monitor.error(atoms, opt.nsteps, fields)

    opt.insert_observer(record)  # first: ahead of the trajectory writer
    opt.attach(enforce, interval=1)  # last: after it


def _summary(atoms: Atoms, converged: bool, steps: int) -> dict:
    """Energy (eV), max force (eV/A), volume (A^3) and stress (eV/A^3) after a relaxation."""
    summary = {"energy_eV": atoms.get_potential_energy(), "converged": converged,
               "steps": steps, "max_force_eV_per_A": float(np.abs(atoms.get_forces()).max()),
               "volume_A3": atoms.get_volume() if atoms.pbc.all() else None}
    if atoms.pbc.all():
        summary["stress_eV_per_A3"] = atoms.get_stress().tolist()
    return summary
