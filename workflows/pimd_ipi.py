"""Path-integral MD of fcc Cu with i-PI and an ase-mpnn model: the quantum kinetic energy.

    python workflows/pimd_ipi.py [--model emt-cuni-schnet] [--beads 4] [--steps 300]
                                 [--temperature 100] [--out workflows/results/pimd_ipi]

Needs the i-PI engine (``pip install 'ase-mpnn[ipi]'``). Two NVT runs of the same cell
with i-PI's PILE-L thermostat (Ceriotti et al., J. Chem. Phys. 133, 124104 (2010)), each
served by ``ase-mpnn serve`` over a UNIX socket: a ring polymer of ``--beads`` beads
(nuclear quantum effects) and one bead (classical nuclei). Below the Debye temperature
(~343 K for Cu) zero-point motion makes the quantum kinetic energy (the centroid-virial
estimator) exceed the classical 3/2 k T per atom, and the potential energy rises with it.
Writes ``summary.json``, both runs' i-PI property tables and ``pimd_kinetic.png``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.io import write  # noqa: E402
from ase.units import Hartree, kB  # noqa: E402

from ase_mpnn.integrations.ipi import run_ipi  # noqa: E402
from ase_mpnn.integrations.ipi_input import dynamics, ipi_input  # noqa: E402

#: the columns of i-PI's property table (sim.out), in i-PI's units (Hartree, fs, K)
COLUMNS = ["step", "time_fs", "temperature_K", "potential", "kinetic_md", "kinetic_cv",
           "kinetic_td", "conserved"]


def pimd_input(socket: str, beads: int, steps: int, temperature_K: float,
               timestep_fs: float, seed: int) -> str:
    """i-PI input: NVT with PILE-L of init.extxyz with ``beads`` beads."""
    return ipi_input(socket, steps=steps, nbeads=beads, temperature_K=temperature_K,
                     motion=dynamics("nvt", timestep_fs, thermostat_tau_fs=100),
                     properties=["step", "time{femtosecond}", "temperature{kelvin}",
                                 "potential", "kinetic_md", "kinetic_cv", "kinetic_td",
                                 "conserved"], seed=seed)


def run(atoms, beads: int, args: argparse.Namespace, folder: Path) -> dict[str, np.ndarray]:
    """One i-PI run in ``folder``; its property table by column (energies in eV)."""
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "init.extxyz", atoms, format="extxyz")
    socket = f"pimd-{uuid.uuid4().hex[:10]}"
    (folder / "input.xml").write_text(pimd_input(socket, beads, args.steps, args.temperature,
                                                args.timestep, args.seed))
    outcome = run_ipi(folder / "input.xml", model=args.model, structure=folder / "init.extxyz",
                      unix=socket, cwd=folder, dtype=args.dtype, timeout_s=args.timeout)
    outcome.check()
    print(outcome.client_output.strip().splitlines()[-1])
    table = dict(zip(COLUMNS, np.loadtxt(folder / "sim.out", ndmin=2).T))
    for key in ("potential", "kinetic_md", "kinetic_cv", "kinetic_td", "conserved"):
        table[key] = table[key] * Hartree
    return table


def plot(quantum: dict, classical: dict, n_atoms: int, classical_ke: float, beads: int,
         temperature_K: float, path: Path) -> None:
    """Kinetic and potential energy per atom (meV) against time, quantum vs classical."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 5.5), sharex=True)
    per_atom = 1e3 / n_atoms
    top.plot(quantum["time_fs"], quantum["kinetic_cv"] * per_atom,
             label=f"{beads} beads, centroid-virial estimator")
    top.plot(classical["time_fs"], classical["kinetic_md"] * per_atom, alpha=0.7,
             label="classical nuclei (1 bead)")
    top.axhline(classical_ke * per_atom, color="k", ls="--", lw=1, label="3/2 k T")
    top.set_ylabel("kinetic energy (meV/atom)")
    top.legend(fontsize=8)
    top.set_title(f"fcc Cu, {n_atoms} atoms, NVT {temperature_K:g} K (i-PI + ase-mpnn)")
    reference = classical["potential"][0]
    bottom.plot(quantum["time_fs"], (quantum["potential"] - reference) * per_atom,
                label=f"{beads} beads")
    bottom.plot(classical["time_fs"], (classical["potential"] - reference) * per_atom,
                alpha=0.7, label="classical")
    bottom.set_ylabel("potential - E(t=0) (meV/atom)")
    bottom.set_xlabel("time (fs)")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="emt-cuni-schnet")
    parser.add_argument("--beads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=100.0, help="K")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--repeat", type=int, default=2, help="cubic fcc cells per axis")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds before both runs are killed")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pimd_ipi"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(args.repeat)
    with tempfile.TemporaryDirectory(prefix="pimd-ipi-") as scratch:
        runs = {}
        for name, beads in (("quantum", args.beads), ("classical", 1)):
            runs[name] = run(atoms, beads, args, Path(scratch) / name)
            (out / f"{name}_properties.txt").write_text(
                (Path(scratch) / name / "sim.out").read_text())
    quantum, classical = runs["quantum"], runs["classical"]
    n_atoms = len(atoms)
    classical_ke = 1.5 * n_atoms * kB * args.temperature  # eV
    half = len(quantum["step"]) // 2  # the second half: thermalised
    summary = {
        "model": args.model, "dtype": args.dtype, "atoms": n_atoms, "beads": args.beads,
        "temperature_K": args.temperature, "steps": args.steps, "timestep_fs": args.timestep,
        "classical_kinetic_meV_per_atom": 1e3 * classical_ke / n_atoms,
        "quantum_kinetic_cv_meV_per_atom": 1e3 * quantum["kinetic_cv"][half:].mean() / n_atoms,
        "quantum_kinetic_td_meV_per_atom": 1e3 * quantum["kinetic_td"][half:].mean() / n_atoms,
        "classical_run_kinetic_meV_per_atom":
            1e3 * classical["kinetic_md"][half:].mean() / n_atoms,
        "potential_quantum_minus_classical_meV_per_atom":
            1e3 * (quantum["potential"][half:].mean()
                   - classical["potential"][half:].mean()) / n_atoms,
        "averaged_over": "the second half of each run",
    }
    summary["kinetic_cv_over_classical"] = (summary["quantum_kinetic_cv_meV_per_atom"]
                                            / summary["classical_kinetic_meV_per_atom"])
    plot(quantum, classical, n_atoms, classical_ke, args.beads, args.temperature,
         out / "pimd_kinetic.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"results in {out}/")


if __name__ == "__main__":
    main()
