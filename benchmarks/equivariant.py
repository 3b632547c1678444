"""Time per energy+forces+stress call of NequIP and MACE through MPNNCalculator.

    python benchmarks/equivariant.py [--sizes 3 7] [--rounds 5] [--scans] [--threads N] [--json F]

Rattled (0.05 A) fcc Cu cells, a = 3.61 A, 4 k^3 atoms for each k of --sizes (3: 108 atoms,
7: 1372 atoms), cutoff 5 A, random weights, models built for ["Cu", "Ni"] at their
defaults. Each number is the best over rounds of the mean of several calls, so that a
machine shared with other work still shows what the code costs. SchNet (64 features,
3 interactions, the core benchmark's model) runs in the same process as a yardstick.
``--scans`` adds NequIP l_max 0..2 and MACE correlation 1..3 at 108 atoms, float32.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ase.build import bulk

from ase_mpnn import MPNNCalculator
from ase_mpnn.models.mace import MACE
from ase_mpnn.models.nequip import NequIP
from ase_mpnn.models.schnet import SchNet

SPECIES = ["Cu", "Ni"]


def cu_cell(k: int):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(k)
    atoms.rattle(0.05, seed=0)
    return atoms


def ms_per_call(calc: MPNNCalculator, atoms, rounds: int) -> float:
    """Best-of-rounds mean wall time of one energy+forces+stress calculation, ms."""
    repeats = max(1, 300 // len(atoms))
    calc.calculate(atoms, ["energy", "forces", "stress"])
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            calc.calculate(atoms, ["energy", "forces", "stress"])
        times.append((time.perf_counter() - start) / repeats * 1e3)
    return min(times)


def measure(cls, kwargs: dict, dtype: str, k: int, rounds: int) -> dict:
    torch.manual_seed(0)
    model = cls(SPECIES, 5.0, **kwargs)
    calc = MPNNCalculator(model, device="cpu", dtype=dtype)
    atoms = cu_cell(k)
    row = {"model": cls.architecture, "settings": kwargs, "dtype": dtype, "atoms": len(atoms),
           "parameters": sum(p.numel() for p in model.parameters()),
           "ms": ms_per_call(calc, atoms, rounds)}
    print(f"{row['model']:7s} {json.dumps(kwargs):28s} {dtype:8s} {row['atoms']:5d} atoms "
          f"{row['parameters']:7d} params {row['ms']:9.1f} ms", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scans", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = [measure(SchNet, {"n_features": 64, "n_interactions": 3}, "float32", 3, args.rounds)]
    for k in args.sizes:
        for dtype in ("float32", "float64"):
            for cls in (MACE, NequIP):
                rows.append(measure(cls, {}, dtype, k, args.rounds))
    if args.scans:
        for l_max in (0, 1, 2):
            rows.append(measure(NequIP, {"l_max": l_max}, "float32", 3, args.rounds))
        for correlation in (1, 2, 3):
            rows.append(measure(MACE, {"correlation": correlation}, "float32", 3, args.rounds))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
