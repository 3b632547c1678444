"""Timing worker for ``benchmarks/dispersion.py``, run inside torch-dftd's side environment.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.

    {"cmd": "setup", "repeat": K, "dtype": "float64", "seed": S}   -> {"energy": eV}
    {"cmd": "round", "min_s": T}                                     -> {"ms": ms per call}
    {"cmd": "quit"}

A call is energy + forces + stress of the rattled fcc Cu cell after fresh 0.005 A noise,
with TorchDFTD3Calculator(damping="bj", xc="pbe", cutoff=60 Bohr, cnthr=40 Bohr, abc=False):
simple-dftd3's and ase-mpnn's two-body settings.
"""

from __future__ import annotations

import json
import sys
import time
import traceback

import numpy as np
from ase.build import bulk
from ase.units import Bohr

STATE: dict = {}


def setup(repeat: int, dtype: str, seed: int) -> dict:
    import torch
    from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=seed)
    atoms.calc = TorchDFTD3Calculator(atoms=atoms, device="cpu", damping="bj", xc="pbe",
                                      cutoff=60.0 * Bohr, cnthr=40.0 * Bohr, abc=False,
                                      dtype=getattr(torch, dtype))
    STATE.update(atoms=atoms, reference=atoms.positions.copy(),
                 rng=np.random.default_rng(seed))
    return {"energy": float(atoms.get_potential_energy())}


def one_call() -> float:
    atoms = STATE["atoms"]
    atoms.positions = STATE["reference"] + STATE["rng"].normal(0, 0.005, atoms.positions.shape)
    start = time.perf_counter()
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_stress()
    return time.perf_counter() - start


def main() -> None:
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "quit":
                break
            if msg["cmd"] == "setup":
                reply = setup(msg["repeat"], msg["dtype"], msg["seed"])
            else:
                times, start = [], time.perf_counter()
                while not times or time.perf_counter() - start < msg["min_s"]:
                    times.append(one_call())
                reply = {"ms": 1e3 * float(np.mean(times))}
        except Exception as exc:  # answered, so the driver can report and go on
            traceback.print_exc(file=sys.stderr)
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
