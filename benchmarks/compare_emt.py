"""A built-in EMT model against EMT itself: lattice constant, bulk modulus, phonons, NVE.

    python benchmarks/compare_emt.py [--model emt-cuni-schnet] [--nve-steps 1000]

Prints a table (model, EMT, relative difference, tolerance) for fcc Cu and exits 1 when a
check misses its tolerance: lattice constant 0.5 %, bulk modulus 10 %, phonon frequencies
at X 10 %, NVE drift of 108 atoms at 300 K (1 fs, float64) below 1e-4 eV/atom, and a
Cu(111) slab relaxing with its bottom layers fixed.
"""

from __future__ import annotations

import argparse
import sys

from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from ase_mpnn import MPNNCalculator
from ase_mpnn.simulate import eos, md, phonons, relax


def properties(calc) -> dict[str, float]:
    """Lattice constant (A), bulk modulus (GPa), frequencies at X (THz) of fcc Cu."""
    crystal, _ = relax(bulk("Cu", "fcc", a=3.6), calc, fmax=1e-5, steps=1000)
    a = crystal.cell.lengths()[0] * 2**0.5
    result = eos(bulk("Cu", "fcc", a=a, cubic=True), calc, strain=0.02, points=9)
    x = phonons(crystal, calc, supercell=(4, 4, 4), mesh=(4, 4, 4))["frequencies_THz_at"]["X"]
    return {"lattice constant (A)": a, "bulk modulus (GPa)": result["B0_GPa"],
            "X transverse (THz)": x[0], "X longitudinal (THz)": x[2]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="emt-cuni-schnet")
    parser.add_argument("--nve-steps", type=int, default=1000)
    args = parser.parse_args()
    calc = MPNNCalculator(args.model, dtype="float64")
    ours, reference = properties(calc), properties(EMT())
    tolerances = {"lattice constant (A)": 0.005, "bulk modulus (GPa)": 0.10,
                  "X transverse (THz)": 0.10, "X longitudinal (THz)": 0.10}
    misses = 0
    print(f"{'fcc Cu':24s}{args.model:>16s}{'EMT':>10s}{'rel. diff':>11s}{'tolerance':>11s}")
    for name, tolerance in tolerances.items():
        diff = ours[name] / reference[name] - 1
        misses += abs(diff) > tolerance
        print(f"{name:24s}{ours[name]:16.4f}{reference[name]:10.4f}{100 * diff:10.2f}%"
              f"{100 * tolerance:10.1f}%{'' if abs(diff) <= tolerance else '  MISS'}")
    cell = bulk("Cu", "fcc", a=ours["lattice constant (A)"], cubic=True).repeat(3)
    _, run = md(cell, calc, ensemble="nve", temperature_K=300, steps=args.nve_steps,
                log_interval=10, progress=False)
    drift = run["energy_drift_eV_per_atom"]
    misses += drift >= 1e-4
    print(f"NVE drift, 108 atoms, {args.nve_steps} x 1 fs: {drift:.2e} eV/atom (limit 1e-4)")
    slab = fcc111("Cu", size=(3, 3, 4), a=ours["lattice constant (A)"], vacuum=8.0)
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag >= 3]))
    _, summary = relax(slab, calc, fmax=0.01, cell=False)
    misses += not summary["converged"]
    print(f"Cu(111) slab, bottom two layers fixed: converged={summary['converged']} "
          f"in {summary['steps']} steps, max |F| {summary['max_force_eV_per_A']:.4f} eV/A")
    print("all checks met" if not misses else f"{misses} check(s) missed")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
