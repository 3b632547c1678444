"""The native kernels (``ase-mpnn kernels``) against the plain torch path they replace.

    python benchmarks/kernels.py [--sizes 108 1372] [--calls 20] [--threads 2]

Two tables, both measured in one run with the two paths interleaved call by call:

* the filter sum alone (``filter_sum_fused`` against ``filter_sum``), forward + backward
  for the gradients of p, the filters and the envelope, 64 features, on the bonds of a
  rattled fcc Cu cell at 5 A;
* a whole energy+forces+stress call of SchNet (64 features, 3 interactions, random
  weights) through ``MPNNCalculator`` with a fresh neighbour list, the model's
  ``native_kernels_enabled`` switched per call.

Target: the native path at least 1.1x the torch path in every whole-call row (a guard
against regressions; the kernels are a speed-up only). Exit status 1 when it is missed,
2 when the kernels are not built (``ase-mpnn kernels --build``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from _stages import cu_cell
from ase_mpnn import MPNNCalculator, keys, native
from ase_mpnn.graph import build_graph
from ase_mpnn.models import SchNet
from ase_mpnn.nn.edge_pairs import edge_pairs
from ase_mpnn.nn.filter_sum import filter_sum, filter_sum_fused, fused_layout
from ase_mpnn.potential import Potential

MIN_CALL_SPEEDUP = 1.1
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def op_row(atoms, dtype: torch.dtype, calls: int) -> dict:
    """Median us of the fused and plain filter sum with its backward, interleaved."""
    graph = build_graph(atoms, 5.0, ["Cu", "Ni"], dtype=dtype)
    centers, neighbors = graph[keys.EDGE_INDEX]
    bond_of_edge, first_edge = edge_pairs(centers, neighbors, graph[keys.CELL_SHIFTS])
    n_atoms = len(atoms)
    layout = fused_layout(centers, neighbors, bond_of_edge, first_edge, n_atoms)
    p = torch.randn(n_atoms, 64, dtype=dtype, requires_grad=True)
    filters = torch.randn(first_edge.shape[0], 64, dtype=dtype, requires_grad=True)
    envelope = torch.rand(first_edge.shape[0], dtype=dtype, requires_grad=True)
    inputs = (p, filters, envelope)

    def fused():
        return filter_sum_fused(p, filters, envelope, layout)

    def plain():
        return filter_sum(p, filters * envelope[:, None], neighbors, bond_of_edge, centers,
                          n_atoms)

    def timed(function) -> float:
        start = time.perf_counter()
        torch.autograd.grad(function().sum(), inputs)
        return 1e6 * (time.perf_counter() - start)

    times = {"native": [], "torch": []}
    for _ in range(3):
        timed(fused), timed(plain)
    for _ in range(calls * 5):
        times["native"].append(timed(fused))
        times["torch"].append(timed(plain))
    return {name: statistics.median(values) for name, values in times.items()}


def call_row(atoms, dtype: str, calls: int) -> dict:
    """Median ms of SchNet's energy+forces+stress with and without the kernels."""
    torch.manual_seed(0)
    calc = MPNNCalculator(Potential(SchNet(["Cu", "Ni"], cutoff=5.0)), dtype=dtype, skin=0.0)
    atoms = atoms.copy()
    atoms.calc = calc
    generator = torch.Generator().manual_seed(1)

    def timed(enabled: bool) -> float:
        calc.potential.model.native_kernels_enabled = enabled
        atoms.positions += 0.005 * torch.randn(len(atoms), 3, generator=generator).numpy()
        start = time.perf_counter()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        return 1e3 * (time.perf_counter() - start)

    times = {"native": [], "torch": []}
    for _ in range(3):
        timed(True), timed(False)
    for _ in range(calls):
        times["native"].append(timed(True))
        times["torch"].append(timed(False))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[108, 1372])
    parser.add_argument("--calls", type=int, default=20, help="interleaved calls per row")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not native.available():
        print("the native kernels are not built: run `ase-mpnn kernels --build`")
        return 2
    print(f"{args.threads} threads, torch {torch.__version__}, medians of interleaved calls")
    print(f"{'atoms':>6s} {'dtype':8s} {'sum+grad torch us':>18s} {'native us':>10s} "
          f"{'x':>6s} {'call torch ms':>14s} {'native ms':>10s} {'x':>6s}")
    missed = []
    for size in args.sizes:
        atoms = cu_cell(size)
        for name, dtype in DTYPES.items():
            op = op_row(atoms, dtype, args.calls)
            call = call_row(atoms, name, args.calls)
            speedup = call["torch"] / call["native"]
            print(f"{size:6d} {name:8s} {op['torch']:18.0f} {op['native']:10.0f} "
                  f"{op['torch'] / op['native']:6.2f} {call['torch']:14.2f} "
                  f"{call['native']:10.2f} {speedup:6.2f}", flush=True)
            if speedup < MIN_CALL_SPEEDUP:
                missed.append(f"{size} atoms {name}: {speedup:.2f}x < {MIN_CALL_SPEEDUP}x")
    for line in missed:
        print("MISSED", line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
