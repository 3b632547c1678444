"""Time per energy+forces+stress call of the calculator, split by stage.

    python benchmarks/run.py [--quick] [--sizes 108 1372] [--json out.json]

For rattled fcc Cu cells (a = 3.61 A, cutoff 5 A, SchNet with 64 features and 3
interactions, random weights) and float32/float64 it measures, in one process:
neighbour list, graph (tensor) preparation, model forward, forward+backward (forces and
stress), and the whole calculator call, then prints a table. Targets are ratios measured in
this same run; the script exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from ase.build import bulk

from ase_mpnn import MPNNCalculator, build_graph
from ase_mpnn.models import SchNet
from ase_mpnn.neighbors import neighbor_list

#: target: share of a 108-atom call spent outside the model's forward and backward
MAX_OVERHEAD_SHARE_108 = 0.10


def best_time(function, repeats: int, rounds: int = 5) -> float:
    """Best-of-rounds mean wall time of ``function`` in milliseconds (noise-robust)."""
    function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        times.append((time.perf_counter() - start) / repeats * 1e3)
    return min(times)


def cu_cell(n_atoms: int, seed: int = 0):
    """A rattled fcc Cu cube of n_atoms = 4 k^3 atoms."""
    k = round((n_atoms / 4) ** (1 / 3))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(k)
    atoms.rattle(0.05, seed=seed)
    return atoms


def measure(calc: MPNNCalculator, atoms, repeats: int) -> dict[str, float]:
    """Milliseconds per stage for one structure."""
    potential, rc, species = calc.potential, calc.potential.cutoff, calc.potential.species
    graph = build_graph(atoms, rc, species, dtype=calc.dtype)
    return {
        "atoms": len(atoms),
        "edges": int(graph["edge_index"].shape[1]),
        "neighbor_list": best_time(lambda: neighbor_list(atoms.positions, atoms.cell.array,
                                                         atoms.pbc, rc), repeats),
        "graph": best_time(lambda: build_graph(atoms, rc, species, dtype=calc.dtype), repeats),
        "forward": best_time(lambda: potential(graph, forces=False), repeats),
        "forward_backward": best_time(lambda: potential(graph, forces=True, stress=True), repeats),
        "calculator": best_time(lambda: calc.calculate(atoms, ["energy", "forces", "stress"]),
                                repeats),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="108 and 1372 atoms, few repeats")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/core.json"))
    args = parser.parse_args()
    sizes = args.sizes or ([108, 1372] if args.quick else [32, 108, 500, 1372, 4000])
    torch.manual_seed(0)
    model = SchNet(["Cu"], cutoff=5.0, n_features=64, n_interactions=3)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    header = (f"{'dtype':8s}{'atoms':>7s}{'edges':>9s}{'nl ms':>8s}{'graph ms':>10s}"
              f"{'fwd ms':>9s}{'fwd+bwd':>9s}{'call ms':>9s}{'nl %':>7s}{'outside %':>11s}")
    print(header)
    for dtype in ("float32", "float64"):
        calc = MPNNCalculator(model, device="cpu", dtype=dtype)
        for n in sizes:
            atoms = cu_cell(n)
            repeats = max(3, int(2000 / max(n, 1))) if not args.quick else max(2, 300 // n)
            row = {"dtype": dtype, **measure(calc, atoms, repeats)}
            row["nl_share"] = row["neighbor_list"] / row["calculator"]
            row["outside_share"] = max(0.0, 1 - row["forward_backward"] / row["calculator"])
            rows.append(row)
            print(f"{dtype:8s}{row['atoms']:7d}{row['edges']:9d}{row['neighbor_list']:8.2f}"
                  f"{row['graph']:10.2f}{row['forward']:9.2f}{row['forward_backward']:9.2f}"
                  f"{row['calculator']:9.2f}{100 * row['nl_share']:7.1f}"
                  f"{100 * row['outside_share']:11.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    misses = [r for r in rows if r["atoms"] == 108 and r["outside_share"] > MAX_OVERHEAD_SHARE_108]
    for r in misses:
        print(f"MISS: {r['dtype']} 108 atoms: {100 * r['outside_share']:.1f} % of the call is "
              f"outside the model (target < {100 * MAX_OVERHEAD_SHARE_108:.0f} %)")
    print("targets:", "all met" if not misses else f"{len(misses)} missed")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
