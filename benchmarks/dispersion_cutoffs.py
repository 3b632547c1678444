"""What D3's cutoffs cost and buy: time on top of a SchNet call against the error left.

    python benchmarks/dispersion_cutoffs.py [--threads 2] [--rounds 5] [--repeat 3]

For rattled fcc Cu (the cubic cell repeated ``--repeat`` times: 108 atoms), each row is
one choice of (two-body cutoff, coordination-number cutoff) in Bohr, simple-dftd3's
(60, 40) first. Columns: ms per energy + forces + stress of ``D3BJ("pbe")`` in float32
(best over rounds, rows taking turns round by round), that time over the built-in
emt-cuni-schnet's call (float32, the calculator's default), and the float64 errors
against the default cutoffs: energy (meV/atom), largest force component (meV/A),
largest stress component (meV/A^3). No target: a table to choose cutoffs by (issue 16's
"D3 adds at most 30 % to SchNet at 108 atoms" is judged in ``benchmarks/dispersion.py``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from ase.build import bulk
from ase.units import Bohr

from ase_mpnn import MPNNCalculator
from ase_mpnn.dispersion import D3BJ

CUTOFFS_BOHR = [(60.0, 40.0), (50.0, 30.0), (40.0, 25.0), (30.0, 20.0), (25.0, 15.0)]


def _timed(calc, atoms, rng) -> float:
    atoms = atoms.copy()
    atoms.positions += rng.normal(0.0, 0.005, atoms.positions.shape)
    atoms.calc = calc
    start = time.perf_counter()
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    return 1000.0 * (time.perf_counter() - start)


def _results(calc, atoms) -> tuple[float, np.ndarray, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(args.repeat)
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    n = len(atoms)

    def d3(cut, cn, dtype):
        return D3BJ("pbe", dtype=dtype, cutoff=cut * Bohr, cn_cutoff=cn * Bohr)

    timed = {"schnet": MPNNCalculator("emt-cuni-schnet")}
    timed.update({c: d3(*c, "float32") for c in CUTOFFS_BOHR})
    best = {key: np.inf for key in timed}
    for calc in timed.values():  # warm-up
        _timed(calc, atoms, rng)
    for _ in range(args.rounds):
        for key, calc in timed.items():
            best[key] = min(best[key], _timed(calc, atoms, rng))
    reference = _results(d3(*CUTOFFS_BOHR[0], "float64"), atoms)
    print(f"D3(BJ)-PBE, rattled fcc Cu, {n} atoms, {args.threads} threads; "
          f"emt-cuni-schnet float32: {best['schnet']:.1f} ms")
    print(f"{'cutoff, CN cutoff (Bohr)':>26} {'ms f32':>8} {'/ SchNet':>9} "
          f"{'dE meV/at':>10} {'dF meV/A':>9} {'dS meV/A3':>10}")
    for cut, cn in CUTOFFS_BOHR:
        energy, forces, stress = _results(d3(cut, cn, "float64"), atoms)
        d_e = 1000.0 * abs(energy - reference[0]) / n
        d_f = 1000.0 * np.abs(forces - reference[1]).max()
        d_s = 1000.0 * np.abs(stress - reference[2]).max()
        ms = best[(cut, cn)]
        print(f"{f'{cut:g}, {cn:g}':>26} {ms:8.1f} {ms / best['schnet']:9.2f} "
              f"{d_e:10.3f} {d_f:9.3f} {d_s:10.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
