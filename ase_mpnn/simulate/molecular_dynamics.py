"""Molecular dynamics (NVE, NVT, NPT) with sanity checks that stop a run that blows up and,
with a committee, a watch on its force spread that stops (or flags) a run that leaves the
training data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.md.md import MolecularDynamics
from tqdm import tqdm

from .._compat import thermalize
from ..checks import require_integer
from ..graph import neighbor_list
from ..results import attach_results
from .integrators import integrator
from .md_output import FrameWriter, MDRecord
from .structures import SimulationError, prepare
from .uncertainty import UncertaintyMonitor, check_uncertainty_options

#: longest MD timestep accepted, fs (metals run at 1-5 fs; hydrogen needs <= 1 fs)
MAX_TIMESTEP_FS = 20.0


def check_md_options(temperature_K: float, timestep_fs: float, steps: int,
                     log_interval: int, max_force_std: float | None = None,
                     on_uncertain: str = "stop") -> None:
    """ValueError naming the first MD option out of range."""
    if not (np.isfinite(temperature_K) and temperature_K >= 0):
        raise ValueError(f"temperature_K must be a finite number >= 0, got {temperature_K!r}")
    if not 0 < timestep_fs <= MAX_TIMESTEP_FS:
        raise ValueError(f"timestep_fs must be > 0 and <= {MAX_TIMESTEP_FS:g} fs, "
                         f"got {timestep_fs!r}")
    require_integer("steps", steps, 1)
    require_integer("log_interval", log_interval, 1)
    check_uncertainty_options(max_force_std, on_uncertain)


def md(structure: Any, calc: Calculator, ensemble: str = "nvt", temperature_K: float = 300.0,
       timestep_fs: float = 1.0, steps: int = 1000, thermostat: str | None = None,
       pressure_bar: float = 1.0, seed: int | None = 0, trajectory: str | Path | None = None,
       log_interval: int = 10, progress: bool = True,
       log_file: str | Path | None = None, max_force_std: float | None = None,
       on_uncertain: str = "stop") -> tuple[Atoms, dict]:
    """Molecular dynamics from a Maxwell-Boltzmann start at ``temperature_K``.

    Ensembles: "nve" (velocity Verlet), "nvt" (thermostat "langevin", "bussi" or
    "nose-hoover"), "npt" (isotropic "mtk" or "berendsen", at ``pressure_bar``); see
    ase_mpnn.simulate.integrators. Every ``log_interval`` steps the frame goes to
    ``trajectory`` (.traj or .extxyz) and a log row (time fs, potential, kinetic and total
    energy eV, temperature K, pressure GPa) to the summary's "log" and, line by line as the
    run goes, to ``log_file`` (CSV). A blow-up raises SimulationError; the frames and log
    rows written so far are kept. Returns the final Atoms (holding their results) and a
    summary (mean temperature K, NVE energy drift eV/atom, final volume A^3, the log).

    With a committee calculator (one giving ``forces_std``, see ase_mpnn.committee), every
    log row and frame also holds ``max_force_std``, the largest per-atom force std over the
    members (eV/A), and ``uncertain_atom``, the index of that atom (frames: in atoms.info;
    the per-atom std (n_atoms,) is ``forces_std`` in atoms.arrays for extxyz, atoms.info
    for .traj). ``max_force_std`` (eV/A, > 0) then guards the run: the largest std is
    checked after every step (from the integrator's own force call, nothing is evaluated
    again), and when it is above the threshold, ``on_uncertain="stop"`` writes that frame
    and log row and raises SimulationError naming the step, atom, element and std, while
    ``on_uncertain="flag"`` runs on and marks it (log/CSV column and atoms.info
    ``uncertain``); the summary then holds ``uncertain_steps``, of the steps + 1
    configurations checked (the start is step 0), and ``first_uncertain_step`` (None if
    none). A ``max_force_std`` with a calculator giving no ``forces_std`` is a ValueError.
    Returned Atoms carry the last step's fields in atoms.info.
    """
    check_md_options(temperature_K, timestep_fs, steps, log_interval, max_force_std,
                     on_uncertain)
    monitor = UncertaintyMonitor(calc, max_force_std, on_uncertain)
    atoms = prepare(structure, calc)
    if len(atoms) < 2:
        raise ValueError("MD needs at least two atoms: repeat the cell (atoms.repeat)")
    thermalize(atoms, temperature_K, seed=seed)  # before the integrator: Bussi needs momenta
    dynamics = integrator(atoms, ensemble, thermostat, temperature_K, timestep_fs, pressure_bar,
                          seed)
    with FrameWriter(trajectory, atoms) as frames:
        record = MDRecord(frames, log_file)
        _run(dynamics, atoms, steps, timestep_fs, log_interval, temperature_K, record,
             monitor, progress=progress, desc=f"{ensemble.upper()} MD")
    summary = {**_summary(atoms, record.rows, ensemble, steps, timestep_fs), **monitor.summary()}
    atoms.get_forces()
    atoms.info.update(monitor.check(atoms, steps))
    return attach_results(atoms, copy=False), summary


def _run(dynamics: MolecularDynamics, atoms: Atoms, steps: int, timestep_fs: float,
         log_interval: int, temperature_K: float, record: MDRecord,
         monitor: UncertaintyMonitor, progress: bool, desc: str) -> None:
    """Step ``steps`` times, checking, logging and writing a frame every ``log_interval``
    steps and after the last one; with a committee, check its force spread every step."""
    def checkpoint(step: int, log: bool) -> None:
        """Check step ``step``'s force spread; record it when logged or when it stops the
        run (the offending frame is written before the SimulationError)."""
        fields = monitor.check(atoms, step)
        stop = monitor.stops(fields)
        if log or stop:
            per_atom = {"forces_std": monitor.forces_std(atoms)} if fields else {}
            record.add(atoms, step * timestep_fs, fields, per_atom)
        if stop:
            raise monitor.error(atoms, step, fields)

    if monitor.enabled:  # ASE calls it after every step (and before the first)
        dynamics.attach(lambda: checkpoint(dynamics.nsteps, log=False), interval=1)
    for step in tqdm(range(0, steps + 1), desc=desc, unit="step", disable=not progress):
        if step:
            dynamics.run(1)
        if step % log_interval == 0 or step == steps:
            check_sane(atoms, temperature_K, step)
            checkpoint(step, log=True)


def _summary(atoms: Atoms, log: list[dict[str, float]], ensemble: str, steps: int,
             timestep_fs: float) -> dict:
    """Mean temperature (K, without the starting row), the NVE energy drift (max |E_tot -
    E_tot(0)|, eV/atom), the final volume (A^3, periodic cells) and the log."""
    totals = np.array([row["total_eV"] for row in log])
    summary = {"ensemble": ensemble, "steps": steps, "timestep_fs": timestep_fs,
               "mean_temperature_K": float(np.mean([r["temperature_K"] for r in log[1:] or log]))}
    if ensemble == "nve":  # only NVE conserves the total energy
        summary["energy_drift_eV_per_atom"] = float(np.abs(totals - totals[0]).max() / len(atoms))
    if atoms.pbc.all():
        summary["final_volume_A3"] = atoms.get_volume()
    summary["log"] = log
    return summary


def check_sane(atoms: Atoms, temperature_K: float, step: int) -> None:
    """Raise SimulationError, saying how, when the energy is not finite, the temperature is
    over 10x the target ``temperature_K`` (at least 30 K), or two atoms are under 0.5 A apart."""
    energy = atoms.get_potential_energy()
    if not np.isfinite(energy):
        raise SimulationError(f"step {step}: the energy is {energy}")
    temperature = atoms.get_temperature()
    if temperature > 10 * max(temperature_K, 30.0):
        raise SimulationError(f"step {step}: temperature {temperature:.0f} K is over 10x the "
                              f"target {temperature_K} K: the dynamics blew up")
    nl = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 0.5)
    if len(nl.distances):
        raise SimulationError(f"step {step}: atoms {nl.centers[0]} and {nl.neighbors[0]} are "
                              f"{nl.distances[0]:.3f} A apart (< 0.5 A): the structure collapsed")
