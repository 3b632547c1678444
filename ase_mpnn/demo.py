"""The README's main job: a relaxation and a short MD run of a small Cu cell.

For now the model is a freshly built SchNet with random weights whose energy scale is set
so that forces have a physical size; the run shows the whole pipeline working (graph,
model, autograd forces and stress, ASE optimiser and integrator) and checks what must hold
for any potential: the relaxation converges and NVE MD conserves energy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.io import Trajectory
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE
from tqdm import tqdm

from ._compat import thermalize
from .calculator import MPNNCalculator
from .io import save_model
from .models import SchNet
from .testing import scale_to_force_rms


def _time_call(calc: MPNNCalculator, atoms, repeats: int = 5) -> float:
    """Milliseconds per energy+forces+stress call (after one warm-up call)."""
    calc.calculate(atoms, ["energy", "forces", "stress"])
    start = time.perf_counter()
    for _ in range(repeats):
        calc.calculate(atoms, ["energy", "forces", "stress"])
    return (time.perf_counter() - start) / repeats * 1e3


def _plot_md(times: np.ndarray, potential: np.ndarray, total: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(times, potential - total[0], label="potential")
    ax.plot(times, total - total[0], label="total")
    ax.set_xlabel("time (fs)")
    ax.set_ylabel("energy - E_total(0) (eV)")
    ax.set_title("NVE molecular dynamics, 32-atom Cu cell")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(out: str | Path = "demo_output", md_steps: int = 200, seed: int = 0) -> dict:
    """Build a model, relax a rattled Cu cell, run NVE MD; write files under ``out``.

    Returns a JSON-safe summary (also written to ``out/summary.json``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.manual_seed(seed)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=seed)
    model = scale_to_force_rms(SchNet(species=["Cu"], cutoff=5.0), atoms, force_rms=0.5)
    model_path = save_model(model, out / "cu-schnet-random.mpnn")
    calc = MPNNCalculator(model_path, device="cpu", dtype="float64")
    summary: dict = {"model": str(model_path),
                     "parameters": sum(p.numel() for p in model.parameters())}
    big = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    summary["ms_per_call_108_atoms"] = round(_time_call(calc, big), 2)

    atoms.calc = calc
    optimizer = FIRE(atoms, logfile=None, trajectory=str(out / "relax.traj"))
    converged = optimizer.run(fmax=0.05, steps=300)
    summary["relax"] = {"converged": bool(converged), "steps": optimizer.nsteps,
                        "energy_eV": atoms.get_potential_energy(),
                        "max_force_eV_per_A": float(np.abs(atoms.get_forces()).max())}

    thermalize(atoms, 300, seed=seed)
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    records = []
    with Trajectory(out / "md.traj", "w", atoms) as trajectory:
        for step in tqdm(range(md_steps + 1), desc="NVE MD", unit="step"):
            if step:
                dynamics.run(1)
            epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
            records.append((step * 1.0, epot, epot + ekin, atoms.get_temperature()))
            if step % 10 == 0:
                trajectory.write()
    times, epot, etot, temperature = map(np.array, zip(*records))
    drift = float(np.abs(etot - etot[0]).max() / len(atoms))
    summary["md"] = {"steps": md_steps, "timestep_fs": 1.0,
                     "max_energy_drift_eV_per_atom": drift,
                     "mean_temperature_K": float(temperature.mean())}
    _plot_md(times, epot, etot, out / "md_energy.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict) -> None:
    """Human-readable report of run_demo's summary."""
    relax, md = summary["relax"], summary["md"]
    print(f"model: SchNet (random weights), {summary['parameters']} parameters -> {summary['model']}")
    print(f"energy+forces+stress, 108-atom Cu cell: {summary['ms_per_call_108_atoms']} ms per call")
    print(f"relaxation (FIRE, fmax 0.05 eV/A): converged={relax['converged']} in {relax['steps']} "
          f"steps, E = {relax['energy_eV']:.4f} eV, max |F| = {relax['max_force_eV_per_A']:.4f} eV/A")
    print(f"NVE MD ({md['steps']} x {md['timestep_fs']} fs): max |E_tot - E_tot(0)| = "
          f"{md['max_energy_drift_eV_per_atom']:.2e} eV/atom, <T> = {md['mean_temperature_K']:.0f} K")
