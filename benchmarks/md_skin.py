"""MD steps per second with and without the Verlet skin, per neighbour-list backend.

    python benchmarks/md_skin.py [--model emt-cuni-schnet] [--skins 0 0.3 0.5 1.0]

NVT Langevin (2 fs, 600 K) on rattled fcc Cu of 108 and 1372 atoms, float32; prints steps
per second and how many neighbour lists were built and reused.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.langevin import Langevin

from ase_mpnn import MPNNCalculator, neighbors
from ase_mpnn._compat import thermalize


def steps_per_second(model: str, repeat: int, skin: float, steps: int) -> tuple[float, object]:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=0)
    calc = MPNNCalculator(model, device="cpu", dtype="float32", skin=skin)
    atoms.calc = calc
    thermalize(atoms, 600, seed=0)
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=600, friction=0.02, fixcm=False,
                        rng=np.random.default_rng(0))
    dynamics.run(5)
    start = time.perf_counter()
    dynamics.run(steps)
    return steps / (time.perf_counter() - start), calc.neighbors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="emt-cuni-schnet")
    parser.add_argument("--skins", type=float, nargs="+", default=[0.0, 0.3, 0.5, 1.0])
    args = parser.parse_args()
    backends = [b for b in neighbors.BACKENDS if b != "vesin" or neighbors.vesin_available()]
    for repeat, steps in ((3, 100), (7, 30)):
        for backend in backends:
            neighbors.set_neighbor_backend(backend)
            for skin in args.skins:
                rate, nl = steps_per_second(args.model, repeat, skin, steps)
                print(f"{4 * repeat**3:6d} atoms {backend:9s} skin {skin:.1f} A: {rate:7.1f} "
                      f"steps/s  (lists built {nl.builds}, reused {nl.reuses})", flush=True)


if __name__ == "__main__":
    main()
