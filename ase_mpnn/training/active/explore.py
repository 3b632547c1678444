"""Exploration: the current committee drives MD (and relaxations) from the seed structures;
every ``sample_interval`` steps the frame is kept with its largest per-atom force std.

Each trajectory is Langevin MD (ASE) at one temperature from one seed structure, with
velocities and thermostat noise seeded by (config seed, round, trajectory index): a round
explored again after a kill makes the same frames. A trajectory that blows up (NaN energy,
runaway temperature, atoms merging: ``simulate.molecular_dynamics.check_sane``, or any
error of the calculator) ends there with its reason; the others go on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ase import Atoms, units
from ase.io import read
from ase.md.langevin import Langevin
from ase.optimize import BFGS
from tqdm import tqdm

from ..._compat import thermalize
from ...calculator import MPNNCalculator
from ...errors import exception_reason
from ...simulate.molecular_dynamics import check_sane
from .config import ActiveConfig
from .files import frame_hash

#: sample(atoms, sample index, step, largest per-atom force std eV/A)
Sampler = Callable[[Atoms, int, int, float], None]


@dataclasses.dataclass
class Trajectory:
    """One exploration run: MD at ``temperature_K`` (K), or a relaxation (None)."""

    name: str
    seed: Atoms
    temperature_K: float | None


def trajectories(config: ActiveConfig) -> list[Trajectory]:
    """Every seed structure (each frame of each file) at each of its temperatures, then,
    with ``relax_steps``, its relaxation."""
    runs = []
    for path, temperatures in config.seed_entries():
        frames = read(path, ":")
        for k, atoms in enumerate(frames):
            name = Path(path).name + (f"#{k}" if len(frames) > 1 else "")
            runs += [Trajectory(f"{name} {t:g} K", atoms, t) for t in temperatures]
            if config.relax_steps:
                runs.append(Trajectory(f"{name} relax", atoms, None))
    return runs


def _steps(config: ActiveConfig, run: Trajectory) -> int:
    return config.md_steps if run.temperature_K is not None else config.relax_steps


def explore(config: ActiveConfig, committee: str | Path, round_index: int
            ) -> tuple[list[Atoms], list[dict[str, Any]]]:
    """Run every trajectory with the committee in file ``committee``.

    Returns the sampled frames (bare Atoms; info: al_traj, al_sample (1, 2, ... within the
    trajectory), al_step, al_std (largest per-atom force std, eV/A), al_hash) and one summary
    per trajectory (name, samples, steps run, max_std eV/A, blew_up: the reason or None).
    """
    calc = MPNNCalculator(str(committee), device="cpu", dtype=config.dtype)
    runs = trajectories(config)
    frames: list[Atoms] = []
    summaries = []
    bar = tqdm(total=sum(_steps(config, r) for r in runs), unit="step",
               desc=f"round {round_index}: explore", disable=not config.progress)
    for index, run in enumerate(runs):
        mine: list[Atoms] = []

        def sample(atoms: Atoms, k: int, step: int, std: float, name: str = run.name,
                   mine: list[Atoms] = mine) -> None:
            frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                          pbc=atoms.pbc)
            frame.info.update(al_traj=name, al_sample=k, al_step=step, al_std=std)
            mine.append(frame)
            bar.update(config.sample_interval)

        seeds = np.random.SeedSequence([config.seed, round_index, index]).generate_state(2)
        blew_up = _run_one(config, run, calc, [int(s) for s in seeds], sample)
        if blew_up:
            print(f"round {round_index}: trajectory {run.name} stopped: {blew_up}")
        frames += mine
        summaries.append({"name": run.name, "temperature_K": run.temperature_K,
                          "samples": len(mine), "steps": len(mine) * config.sample_interval,
                          "max_std": max((f.info["al_std"] for f in mine), default=None),
                          "blew_up": blew_up})
    bar.close()
    return frames, summaries


def with_hashes(frames: list[Atoms]) -> list[Atoms]:
    """``frames`` with ``al_hash`` (files.frame_hash) in their info; call on frames read
    back from the round's file, so that the hash is of what the reference will see."""
    for atoms in frames:
        atoms.info["al_hash"] = frame_hash(atoms)
    return frames


def _run_one(config: ActiveConfig, run: Trajectory, calc: MPNNCalculator, seeds: list[int],
             sample: Sampler) -> str | None:
    """Run one trajectory, sampling it; the reason it blew up, or None."""
    atoms = run.seed.copy()
    atoms.calc = calc
    try:
        if run.temperature_K is None:
            _relax(config, atoms, sample)
        else:
            _md(config, atoms, run.temperature_K, seeds, sample)
    except Exception as exc:  # noqa: BLE001 - a blow-up of any kind ends this trajectory only
        return exception_reason(exc)
    return None


def _md(config: ActiveConfig, atoms: Atoms, temperature_K: float, seeds: list[int],
        sample: Sampler) -> None:
    thermalize(atoms, temperature_K, seed=seeds[0])
    dynamics = Langevin(atoms, config.timestep_fs * units.fs, temperature_K=temperature_K,
                        friction=config.friction_per_fs / units.fs, fixcm=False,
                        rng=np.random.default_rng(seeds[1]))
    for k in range(1, config.md_steps // config.sample_interval + 1):
        dynamics.run(config.sample_interval)
        step = k * config.sample_interval
        check_sane(atoms, temperature_K, step)
        sample(atoms, k, step, float(np.max(atoms.calc.get_property("forces_std", atoms))))


def _relax(config: ActiveConfig, atoms: Atoms, sample: Sampler) -> None:
    optimizer = BFGS(atoms, logfile=None)
    for k in range(1, config.relax_steps // config.sample_interval + 1):
        converged = optimizer.run(fmax=config.relax_fmax, steps=config.sample_interval)
        energy = atoms.get_potential_energy()
        if not np.isfinite(energy):
            raise FloatingPointError(f"step {k * config.sample_interval}: the energy is {energy}")
        sample(atoms, k, k * config.sample_interval,
               float(np.max(atoms.calc.get_property("forces_std", atoms))))
        if converged:
            return
