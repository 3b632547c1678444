"""Hessians by autograd against finite differences of forces, and phonons both ways.

    python benchmarks/hessian.py [--quick] [--threads 2] [--rounds 2] [--json out.json]

1. The Hessian (3N x 3N, float64) of a rattled 108-atom fcc Cu cell (cubic cell 3x3x3,
   cutoff 5 A) from ``MPNNCalculator.get_hessian`` (one gradient with create_graph, then
   one backward pass per row) against 6N force calls of central finite differences
   (d = 1e-4 A, the calculator's default Verlet skin reusing the list), for the SchNet and
   MACE benchmark presets (random weights, the peers' settings). The two methods
   alternate ``--rounds`` times in one process and the best time of each is kept, so the
   ratio compares like with like on a shared machine; their largest difference is printed
   too. Target: the Hessian at least 5x faster (the script exits 1 on a miss).
2. Phonons of fcc Cu in a 3x3x3 supercell of the primitive cell (27 atoms), with the
   built-in emt-cuni-schnet in float64: ``phonons(method="hessian")`` (the 3 Hessian rows
   of the unit cell's atom, phonopy's compact force constants) against phonopy's
   displacements (0.01 A), wall time of the force constants and their largest difference.
   Reported, not judged.

``--quick`` uses a 32-atom cell and one round (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

from ase_mpnn import MPNNCalculator, Potential
from ase_mpnn.models.presets import build_preset
from ase_mpnn.simulate.phonon_spectrum import force_constants
from ase_mpnn.testing import numerical_hessian

TARGET_RATIO = 5.0
MODELS = ("schnet", "mace")
FD_STEP = 1e-4  # A


def copper_cell(repeat: int, seed: int = 0):
    """Cubic fcc Cu (a = 3.61 A) repeated ``repeat`` times per axis, rattled by 0.05 A."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=seed)
    return atoms


def timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def hessian_row(name: str, repeat: int, rounds: int) -> dict:
    """Best-of-rounds seconds of get_hessian and of 6N finite-difference force calls."""
    potential = Potential(build_preset(name, ["Cu"], 5.0))
    calc = MPNNCalculator(potential, device="cpu", dtype="float64")
    atoms = copper_cell(repeat)
    calc.get_hessian(atoms)  # warm-up: first-call allocations
    best = {"hessian": float("inf"), "finite_differences": float("inf")}
    for _ in range(rounds):  # interleaved: each round times both methods
        seconds, hessian = timed(lambda: calc.get_hessian(atoms))
        best["hessian"] = min(best["hessian"], seconds)
        seconds, numerical = timed(lambda: numerical_hessian(calc, atoms, FD_STEP))
        best["finite_differences"] = min(best["finite_differences"], seconds)
    return {"model": name, "atoms": len(atoms), "hessian_s": best["hessian"],
            "fd_s": best["finite_differences"], "fd_calls": 6 * len(atoms),
            "ratio": best["finite_differences"] / best["hessian"],
            "max_difference_eV_A2": float(np.abs(hessian - numerical).max()),
            "asymmetry_eV_A2": float(np.abs(hessian - hessian.T).max())}


def phonon_row(rounds: int) -> dict:
    """Force constants of fcc Cu 3x3x3 (primitive cell) by Hessian and by displacements."""
    calc = MPNNCalculator("emt-cuni-schnet", device="cpu", dtype="float64")
    unit = bulk("Cu", "fcc", a=3.61)
    best = {"hessian": float("inf"), "displacement": float("inf")}
    results = {}
    force_constants(unit, calc, (3, 3, 3), method="hessian")  # warm-up
    for _ in range(rounds):
        for method in best:
            seconds, phonon = timed(
                lambda m=method: force_constants(unit, calc, (3, 3, 3), 0.01, m))
            best[method] = min(best[method], seconds)
            results[method] = phonon
    compact = results["hessian"].force_constants
    full = results["displacement"].force_constants[results["hessian"].primitive.p2s_map]
    return {"supercell_atoms": len(results["displacement"].supercell),
            "displaced_supercells": len(results["displacement"].supercells_with_displacements),
            "hessian_s": best["hessian"], "displacement_s": best["displacement"],
            "ratio": best["displacement"] / best["hessian"],
            "max_fc_difference_eV_A2": float(np.abs(compact - full).max()),
            "max_fc_eV_A2": float(np.abs(compact).max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 atoms, one round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeat, rounds = (2, 1) if args.quick else (3, args.rounds)
    print(f"Hessian vs 6N central-difference force calls (d = {FD_STEP} A), float64, "
          f"{args.threads} threads, best of {rounds} interleaved rounds")
    print(f"{'model':8s}{'atoms':>6s}{'Hessian s':>11s}{'FD s':>9s}{'FD calls':>9s}"
          f"{'ratio':>7s}{'max|H-FD|':>11s}{'target':>8s}")
    rows, missed = [], []
    for name in args.models:
        row = hessian_row(name, repeat, rounds)
        verdict = "PASS" if row["ratio"] >= TARGET_RATIO else "MISS"
        if verdict == "MISS":
            missed.append(f"{name}: {row['ratio']:.2f}x < {TARGET_RATIO}x")
        print(f"{name:8s}{row['atoms']:>6d}{row['hessian_s']:>11.2f}{row['fd_s']:>9.2f}"
              f"{row['fd_calls']:>9d}{row['ratio']:>6.2f}x{row['max_difference_eV_A2']:>11.1e}"
              f"{verdict:>8s}", flush=True)
        rows.append(row)
    phonon = phonon_row(rounds)
    print(f"\nphonons, fcc Cu 3x3x3 primitive supercell ({phonon['supercell_atoms']} atoms, "
          f"emt-cuni-schnet, float64): force constants by Hessian {phonon['hessian_s']:.3f} s, "
          f"by {phonon['displaced_supercells']} displaced supercell(s) "
          f"{phonon['displacement_s']:.3f} s (displacement / Hessian = {phonon['ratio']:.2f}x); "
          f"max |dPhi| {phonon['max_fc_difference_eV_A2']:.1e} of max |Phi| "
          f"{phonon['max_fc_eV_A2']:.2f} eV/A^2")
    if args.json:
        Path(args.json).write_text(json.dumps({"hessian": rows, "phonons": phonon}, indent=2))
    for line in missed:
        print(f"MISS {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
