"""Structures per second for screening: one-by-one ASE calls vs batched vs Dask.

    python benchmarks/throughput.py [--quick] [--n 500] [--model emt-cuni-schnet] [--json out]
                                    [--dtype float64] [--static-only] [--no-dask]

For ``--n`` small Cu-Ni cells (2-16 atoms; fcc, bcc, simple cubic and hcp lattices,
random occupancy, strained and rattled) and the built-in model, it measures in one run:

* static energy+forces+stress: the ASE calculator called structure by structure, then
  ``ase_mpnn.batch.evaluate`` (many structures per graph), then
  ``ase-mpnn run static`` on a Dask LocalCluster of 2 single-threaded workers into a
  results database (cluster start-up and database writes included);
* relaxation (FIRE + FrechetCellFilter, fmax 0.05 eV/A): ASE one-by-one, then
  ``ase_mpnn.batch.relax_batch``, then ``ase-mpnn run relax`` on the same cluster.

Targets (ratios in this run): batched static >= 5x and batched relaxation >= 3x the
structures per second of the one-by-one loop; the script exits 1 when one is missed.
``--static-only`` measures the static rows only (what ``benchmarks/run.py`` asks, in
float64: one-by-one and batched, interleaved, best of ``--rounds``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.io import write
from ase.optimize import FIRE

from ase_mpnn import DEFAULT_DTYPE, MPNNCalculator
from ase_mpnn.batch import evaluate, relax_batch
from ase_mpnn.runs import run

TARGETS = {"static": 5.0, "relax": 3.0}
LATTICES = [("fcc", 3.6, 1), ("bcc", 2.87, 1), ("hcp", 2.55, 2)]


def screening_set(n: int, seed: int = 0) -> list:
    """``n`` cells of 2-16 atoms: a random lattice repeated, Cu/Ni, 2 % strain, rattled."""
    rng = np.random.default_rng(seed)
    cells = []
    while len(cells) < n:
        kind, a, per_cell = LATTICES[rng.integers(len(LATTICES))]
        repeat = rng.integers(1, 3, size=3)
        if not 2 <= per_cell * repeat.prod() <= 16:
            continue
        atoms = bulk("Cu", kind, a=a).repeat(tuple(int(r) for r in repeat))
        atoms.symbols[rng.random(len(atoms)) < rng.random()] = "Ni"
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))),
                       scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 31)))
        cells.append(atoms)
    return cells


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def static_one_by_one(structures, calc) -> list[float]:
    energies = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        atoms.get_forces()
        atoms.get_stress()
    return energies


def relax_one_by_one(structures, calc, fmax: float) -> list[float]:
    energies = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        try:
            FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=fmax, steps=500)
            energies.append(atoms.get_potential_energy())
        except ValueError:  # e.g. atoms driven together: the batched run records it too
            energies.append(np.nan)
    return energies


def dask_run(task: str, structures, model: str, dtype: str, options: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.extxyz"
        write(inputs, structures)
        start = time.perf_counter()
        counts = run(task, [inputs], Path(tmp) / "results.db", model, workers=2, threads=1,
                     chunk_size=64, options=options, dtype=dtype, progress=False)
        seconds = time.perf_counter() - start
    print(f"  dask {task}: {counts}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="number of cells")
    parser.add_argument("--quick", action="store_true", help="100 cells")
    parser.add_argument("--model", default="emt-cuni-schnet")
    parser.add_argument("--dtype", default=DEFAULT_DTYPE, choices=["float32", "float64"])
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask rows")
    parser.add_argument("--static-only", action="store_true",
                        help="only static evaluation, one-by-one against batched")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds of the static rows (best of)")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()
    n = 100 if args.quick else args.n
    structures = screening_set(n)
    calc = MPNNCalculator(args.model, device="cpu", dtype=args.dtype)
    rows: dict[str, dict[str, float]] = {"static": {}, "relax": {}}

    loop_times, batch_times = [], []
    for _ in range(max(1, args.rounds)):  # interleaved: a busy machine slows both alike
        single, seconds = timed(lambda: static_one_by_one(structures, calc))
        loop_times.append(seconds)
        batched, seconds = timed(lambda: evaluate(structures, calc.potential))
        batch_times.append(seconds)
    rows["static"]["one-by-one"], rows["static"]["batched"] = min(loop_times), min(batch_times)
    gap = max(abs(a - b["energy"]) for a, b in zip(single, batched))
    relax_gap = None  # eV; measured only with the relaxations
    if args.static_only:
        del rows["relax"]
    else:
        single_relax, rows["relax"]["one-by-one"] = timed(
            lambda: relax_one_by_one(structures, calc, args.fmax))
        batch_relax, rows["relax"]["batched"] = timed(
            lambda: relax_batch(structures, calc.potential, fmax=args.fmax, steps=500))
        relax_gap = float(np.nanmax([abs(a - b.get("energy", np.nan))
                                     for a, b in zip(single_relax, batch_relax)]))
    if not (args.no_dask or args.static_only):
        rows["static"]["dask 2 workers"] = dask_run("static", structures, args.model,
                                                    args.dtype, {})
        rows["relax"]["dask 2 workers"] = dask_run("relax", structures, args.model, args.dtype,
                                                   {"fmax": args.fmax})

    print(f"{n} cells of 2-16 atoms, model {args.model}, {args.dtype}, "
          f"torch threads {torch.get_num_threads()} (Dask: 2 workers x 1 thread)")
    print(f"{'task':8s}{'method':>18s}{'seconds':>10s}{'structures/s':>14s}{'speed-up':>10s}")
    missed = []
    for task, methods in rows.items():
        base = methods["one-by-one"]
        for method, seconds in methods.items():
            print(f"{task:8s}{method:>18s}{seconds:>10.2f}{n / seconds:>14.1f}"
                  f"{base / seconds:>9.1f}x")
        if base / methods["batched"] < TARGETS[task]:
            missed.append(f"batched {task} {base / methods['batched']:.1f}x < {TARGETS[task]}x")
    relaxed = "" if relax_gap is None else f", relaxed {relax_gap:.1e} eV"
    print(f"largest energy difference batched vs one-by-one: static {gap:.1e} eV{relaxed}")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": n, "dtype": args.dtype, "seconds": rows,
                                               "static_gap_eV": gap,
                                               "relax_gap_eV": relax_gap}, indent=2))
    for miss in missed:
        print(f"TARGET MISSED: {miss}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
