"""The README's main job: relax a Cu-Ni cell, run MD, and check the model against EMT.

With a built-in EMT Cu-Ni model (``ase_mpnn.list_models()``) the demo relaxes a rattled
32-atom Cu3Ni-like cell (positions and cell, FIRE + FrechetCellFilter), runs NVE MD at
300 K, and prints the model's energy, force and stress errors against EMT itself on the
relaxed structure and the MD frames. Without one, it falls back to a freshly built SchNet
with random weights scaled to physical forces, which shows the pipeline but no physics.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.io import Trajectory
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE
from tqdm import tqdm

from ._compat import thermalize
from .calculator import MPNNCalculator
from .modelfile import save_model
from .models import SchNet
from .pretrained import list_models
from .results import attach_results
from .testing import scale_to_force_rms

DEFAULT_MODELS = ("emt-cuni-schnet", "emt-cuni-mace")  # the first one installed is used


def _time_call(calc: MPNNCalculator, atoms: Atoms, repeats: int = 5) -> float:
    """Milliseconds per energy+forces+stress call (after one warm-up call)."""
    calc.calculate(atoms, ["energy", "forces", "stress"])
    start = time.perf_counter()
    for _ in range(repeats):
        calc.calculate(atoms, ["energy", "forces", "stress"])
    return (time.perf_counter() - start) / repeats * 1e3


def _plot_md(times: np.ndarray, potential: np.ndarray, total: np.ndarray,
             reference: np.ndarray | None, path: Path) -> None:
    """Potential and total energy (eV, from the first total) against time (fs) as an image;
    ``reference``: EMT's potential energy on the same frames, drawn dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(times, potential - total[0], label="potential (model)")
    ax.plot(times, total - total[0], label="total (model)")
    if reference is not None:
        ax.plot(times, reference - reference[0] + potential[0] - total[0], "k:",
                label="potential (EMT, same frames)")
    ax.set_xlabel("time (fs)")
    ax.set_ylabel("energy - E_total(0) (eV)")
    ax.set_title("NVE molecular dynamics, 32-atom Cu-Ni cell")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _start_structure(seed: int) -> Atoms:
    """The 32-atom Cu3Ni-like fcc cell (a = 3.59 A), rattled by 0.1 A."""
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat(2)
    atoms.symbols[::4] = "Ni"
    atoms.rattle(0.1, seed=seed)
    return atoms


def _model(out: Path, name: str | None, atoms: Atoms) -> tuple[str, bool]:
    """(model name or path, whether it is a trained EMT model)."""
    available = [m for m in DEFAULT_MODELS if m in list_models()]
    if name or available:
        return name or available[0], True
    import torch

    torch.manual_seed(0)
    model = scale_to_force_rms(SchNet(species=["Ni", "Cu"], cutoff=5.0), atoms, force_rms=0.5)
    return str(save_model(model, out / "schnet-random.mpnn")), False


def _errors_vs_emt(frames: list[Atoms]) -> dict[str, float]:
    """MAE of the frames' stored model results against EMT (meV/atom, meV/A, meV/A^3)."""
    emt = EMT()
    energy, forces, stress = [], [], []
    for frame in frames:
        model = frame.calc.results
        reference = frame.copy()
        reference.calc = emt
        energy.append((model["energy"] - reference.get_potential_energy()) / len(frame))
        forces.append(np.abs(model["forces"] - reference.get_forces()).ravel())
        stress.append(np.abs(model["stress"] - reference.get_stress()))
    return {"energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(energy))),
            "forces_mae_meV_per_A": 1e3 * float(np.mean(np.concatenate(forces))),
            "stress_mae_meV_per_A3": 1e3 * float(np.mean(np.concatenate(stress)))}


def _relax(atoms: Atoms, out: Path) -> tuple[Atoms, dict]:
    """FIRE + FrechetCellFilter to 0.02 eV/A (at most 400 steps), in place, trajectory in
    ``out``; returns a copy holding the relaxed results and a summary (eV, A^3, eV/A)."""
    optimizer = FIRE(FrechetCellFilter(atoms), logfile=None, trajectory=str(out / "relax.traj"))
    converged = optimizer.run(fmax=0.02, steps=400)
    atoms.get_stress()
    relaxed = attach_results(atoms)
    return relaxed, {"converged": bool(converged), "steps": optimizer.nsteps,
                     "energy_eV": atoms.get_potential_energy(),
                     "volume_per_atom_A3": atoms.get_volume() / len(atoms),
                     "max_force_eV_per_A": float(np.abs(atoms.get_forces()).max())}


def _nve(atoms: Atoms, out: Path, md_steps: int, seed: int) -> tuple[np.ndarray, list[Atoms]]:
    """NVE MD at 300 K, 1 fs steps, every 10th frame to ``out``/md.traj.

    Returns the (step = time fs, potential eV, total eV, temperature K) rows of every step
    and the every-10th-step frames holding their results (energy, forces, stress).
    """
    thermalize(atoms, 300, seed=seed)
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    records, frames = [], []
    with Trajectory(out / "md.traj", "w", atoms) as trajectory:
        for step in tqdm(range(md_steps + 1), desc="NVE MD", unit="step"):
            if step:
                dynamics.run(1)
            epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
            records.append((float(step), epot, epot + ekin, atoms.get_temperature()))
            if step % 10 == 0:
                trajectory.write()
                atoms.get_stress()
                frames.append(attach_results(atoms))
    return np.array(records), frames


def run_demo(out: str | Path = "demo_output", model: str | None = None, md_steps: int = 200,
             seed: int = 0) -> dict:
    """Relax, run NVE MD, compare with EMT; write files under ``out`` and return a summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atoms = _start_structure(seed)
    name, trained = _model(out, model, atoms)
    calc = MPNNCalculator(name, device="cpu", dtype="float64")
    timing_cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    summary: dict = {"model": name, "trained_on_emt": trained,
                     "parameters": calc.potential.manifest["n_parameters"],
                     "ms_per_call_108_atoms": round(_time_call(calc, timing_cell), 2)}
    atoms.calc = calc
    relaxed, summary["relax"] = _relax(atoms, out)
    records, frames = _nve(atoms, out, md_steps, seed)
    times, epot, etot, temperature = records.T
    drift = float(np.abs(etot - etot[0]).max() / len(atoms))
    summary["md"] = {"steps": md_steps, "timestep_fs": 1.0, "max_energy_drift_eV_per_atom": drift,
                     "mean_temperature_K": float(temperature.mean())}
    reference = None
    if trained:
        summary["errors_vs_emt"] = _errors_vs_emt([relaxed, *frames])
        emt = EMT()
        reference = np.interp(times, times[::10], [_emt_energy(f, emt) for f in frames])
    _plot_md(times, epot, etot, reference, out / "md_energy.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _emt_energy(frame: Atoms, emt: EMT) -> float:
    """EMT's potential energy (eV) of a copy of ``frame``."""
    reference = frame.copy()
    reference.calc = emt
    return reference.get_potential_energy()


def print_summary(summary: dict) -> None:
    """Human-readable report of run_demo's summary."""
    relax, md = summary["relax"], summary["md"]
    kind = "trained on EMT" if summary["trained_on_emt"] else "random weights, no physics"
    print(f"model: {summary['model']} ({kind}), {summary['parameters']} parameters")
    print(f"energy+forces+stress, 108-atom Cu cell: {summary['ms_per_call_108_atoms']} ms per call")
    print(f"relaxation (FIRE + cell, fmax 0.02 eV/A): converged={relax['converged']} in "
          f"{relax['steps']} steps, E = {relax['energy_eV']:.4f} eV, "
          f"V = {relax['volume_per_atom_A3']:.3f} A^3/atom")
    print(f"NVE MD ({md['steps']} x {md['timestep_fs']} fs): max |E_tot - E_tot(0)| = "
          f"{md['max_energy_drift_eV_per_atom']:.2e} eV/atom, "
          f"<T> = {md['mean_temperature_K']:.0f} K")
    if "errors_vs_emt" in summary:
        e = summary["errors_vs_emt"]
        print(f"errors against EMT on the relaxed cell and MD frames: energy "
              f"{e['energy_mae_meV_per_atom']:.2f} meV/atom, "
              f"forces {e['forces_mae_meV_per_A']:.1f} meV/A, "
              f"stress {e['stress_mae_meV_per_A3']:.2f} meV/A^3 (MAE)")
