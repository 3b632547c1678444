"""Molecular dynamics (NVE, NVT, NPT) with sanity checks that stop a run that blows up."""

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
from .md_output import FrameWriter, append_csv, log_row
from .structures import SimulationError, prepare

#: longest MD timestep accepted, fs (metals run at 1-5 fs; hydrogen needs <= 1 fs)
MAX_TIMESTEP_FS = 20.0


def check_md_options(temperature_K: float, timestep_fs: float, steps: int,
                     log_interval: int) -> None:
    """ValueError naming the first MD option out of range."""
    if not (np.isfinite(temperature_K) and temperature_K >= 0):
        raise ValueError(f"temperature_K must be a finite number >= 0, got {temperature_K!r}")
    if not 0 < timestep_fs <= MAX_TIMESTEP_FS:
        raise ValueError(f"timestep_fs must be > 0 and <= {MAX_TIMESTEP_FS:g} fs, "
                         f"got {timestep_fs!r}")
    require_integer("steps", steps, 1)
    require_integer("log_interval", log_interval, 1)


def md(structure: Any, calc: Calculator, ensemble: str = "nvt", temperature_K: float = 300.0,
       timestep_fs: float = 1.0, steps: int = 1000, thermostat: str | None = None,
       pressure_bar: float = 1.0, seed: int | None = 0, trajectory: str | Path | None = None,
       log_interval: int = 10, progress: bool = True,
       log_file: str | Path | None = None) -> tuple[Atoms, dict]:
    """Molecular dynamics from a Maxwell-Boltzmann start at ``temperature_K``.

    Ensembles: "nve" (velocity Verlet), "nvt" (thermostat "langevin", "bussi" or
    "nose-hoover"), "npt" (isotropic "mtk" or "berendsen", at ``pressure_bar``); see
    ase_mpnn.simulate.integrators. Every ``log_interval`` steps the frame goes to
    ``trajectory`` (.traj or .extxyz) and a log row (time fs, potential, kinetic and total
    energy eV, temperature K, pressure GPa) to the summary's "log" and, line by line as the
    run goes, to ``log_file`` (CSV). A blow-up raises SimulationError; the frames and log
    rows written so far are kept. Returns the final Atoms (holding their results) and a
    summary (mean temperature K, NVE energy drift eV/atom, final volume A^3, the log).
    """
    check_md_options(temperature_K, timestep_fs, steps, log_interval)
    atoms = prepare(structure, calc)
    if len(atoms) < 2:
        raise ValueError("MD needs at least two atoms: repeat the cell (atoms.repeat)")
    thermalize(atoms, temperature_K, seed=seed)  # before the integrator: Bussi needs momenta
    dynamics = integrator(atoms, ensemble, thermostat, temperature_K, timestep_fs, pressure_bar,
                          seed)
    with FrameWriter(trajectory, atoms) as frames:
        log = _run(dynamics, atoms, steps, timestep_fs, log_interval, temperature_K, frames,
                   log_file, progress=progress, desc=f"{ensemble.upper()} MD")
    summary = _summary(atoms, log, ensemble, steps, timestep_fs)
    atoms.get_forces()
    return attach_results(atoms, copy=False), summary


def _run(dynamics: MolecularDynamics, atoms: Atoms, steps: int, timestep_fs: float,
         log_interval: int, temperature_K: float, frames: FrameWriter,
         log_file: str | Path | None, progress: bool, desc: str) -> list[dict[str, float]]:
    """Step ``steps`` times, checking, logging and writing a frame every ``log_interval``
    steps and after the last one; returns the log rows."""
    log: list[dict[str, float]] = []
    for step in tqdm(range(0, steps + 1), desc=desc, unit="step", disable=not progress):
        if step:
            dynamics.run(1)
        if step % log_interval == 0 or step == steps:
            check_sane(atoms, temperature_K, step)
            log.append(log_row(atoms, step * timestep_fs))
            frames.write(atoms)
            append_csv(log_file, log[-1], header=len(log) == 1)
    return log


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
