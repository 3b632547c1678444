"""Worker of benchmarks/run.py: one architecture at one dtype, in its own process.

    python benchmarks/_stages.py ARCH DTYPE --sizes 32 108 ... [--md 108 1372] [--threads 2]

Prints one JSON object per line: a stage row per cell size (ascending, so the process's
peak resident memory after each size is that size's peak), then an MD row per MD size.
Its own process keeps peak-memory readings and thread settings separate per model.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.md.langevin import Langevin

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peer_worker import CUTOFF_A, SPECIES, build_ours  # noqa: E402
from ase_mpnn import MPNNCalculator, keys, list_models, native  # noqa: E402
from ase_mpnn._compat import thermalize  # noqa: E402
from ase_mpnn.graph import collate, neighbors  # noqa: E402
from ase_mpnn.graph.neighbors import neighbor_list  # noqa: E402
from ase_mpnn.models.presets import build_preset  # noqa: E402
from ase_mpnn.results import to_ase_results  # noqa: E402

#: architectures at the peers' settings (schnet, mace, nequip: see _peer_worker.build_ours)
ARCHITECTURES = ("schnet", "cgcnn", "mpnn", "nequip", "mace")


def calculator(architecture: str, dtype: str, skin: float,
               compile: bool = False) -> MPNNCalculator:  # noqa: A002
    """ase-mpnn's calculator for a random-weight model of ``architecture``, or for a
    built-in model by name; ``compile`` runs the model through torch.compile."""
    if compile:
        eager = calculator(architecture, dtype, skin)
        return MPNNCalculator(eager.potential, device="cpu", dtype=dtype, skin=skin,
                              compile=True)
    if architecture in list_models():
        return MPNNCalculator(architecture, device="cpu", dtype=dtype, skin=skin)
    if architecture in ("schnet", "mace", "nequip"):
        return build_ours(architecture, dtype, {"skin": skin})[0]
    if architecture not in ("cgcnn", "mpnn"):
        raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")
    model = build_preset(architecture, list(SPECIES), CUTOFF_A, seed=0)
    return MPNNCalculator(model, device="cpu", dtype=dtype, skin=skin)


def cu_cell(n_atoms: int, seed: int = 0):
    """A rattled fcc Cu cube (a = 3.61 A, 0.05 A rattle) of n_atoms = 4 k^3 atoms."""
    k = round((n_atoms / 4) ** (1 / 3))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(k)
    atoms.rattle(0.05, seed=seed)
    return atoms


def best_ms(function: Callable[[], Any], budget_s: float, rounds: int = 3) -> float:
    """Best over ``rounds`` of the mean time of ``function`` in ms, each round about
    budget_s / rounds long (at least one call): robust to a noisy shared machine."""
    start = time.perf_counter()
    function()
    once = time.perf_counter() - start
    repeats = max(1, int(budget_s / rounds / max(once, 1e-6)))
    if once > budget_s:  # a large cell: fewer rounds of one call each
        rounds = 2
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        times.append((time.perf_counter() - start) / repeats * 1e3)
    return min(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def backend_usable(backend: str) -> bool:
    """Whether this process can build lists with ``backend`` (vesin installed, native
    kernels built)."""
    if backend == "native":
        return native.available()
    return backend != "vesin" or neighbors.vesin_available()


def backend_ms(backend: str, atoms, cutoff: float, budget_s: float) -> float:
    """ms of one neighbour list with ``backend`` (the default is restored after)."""
    default = neighbors.get_neighbor_backend()
    neighbors.set_neighbor_backend(backend)
    try:
        return best_ms(lambda: neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc,
                                             cutoff), budget_s / 2)
    finally:
        neighbors.set_neighbor_backend(default)


def timed_calls(calc: MPNNCalculator, atoms, budget_s: float,
                move: bool = False) -> tuple[float, float]:
    """(ms of the fastest calculator call, the share of that call spent outside the
    potential's forward and backward), the potential timed by hooks inside the same calls:
    a share from separately timed calls would mostly measure the machine's noise."""
    inside: list[float] = []
    start: list[float] = []
    pre = calc.potential.register_forward_pre_hook(
        lambda *_: start.append(time.perf_counter()))
    post = calc.potential.register_forward_hook(
        lambda *_: inside.append(time.perf_counter() - start[-1]))
    calls = []
    positions, rng = atoms.positions.copy(), np.random.default_rng(0)
    try:
        deadline = time.perf_counter() + budget_s
        while len(calls) < 3 or (time.perf_counter() < deadline and len(calls) < 1000):
            if move:  # an MD-sized step: ASE sees new positions, a skin list stays valid
                atoms.positions = positions + rng.normal(scale=1e-3, size=positions.shape)
            begin = time.perf_counter()
            calc.calculate(atoms, ["energy", "forces", "stress"])
            calls.append(time.perf_counter() - begin)
    finally:
        pre.remove()
        post.remove()
        atoms.positions = positions
    best = int(np.argmin(calls[1:])) + 1  # the first call may warm caches
    return 1e3 * calls[best], max(0.0, 1.0 - inside[best] / calls[best])


def stage_row(calc: MPNNCalculator, atoms, budget_s: float) -> dict[str, Any]:
    """ms per stage of one energy+forces+stress call with a fresh neighbour list."""
    potential, cutoff = calc.potential, calc.potential.cutoff
    record = calc.neighbors.structure(atoms)  # skin 0: exactly the pairs within the cutoff
    graph = collate([record], dtype=calc.dtype, device=calc.device)

    def forward():
        with torch.no_grad():
            return potential(graph, forces=False)

    def forward_backward():
        return potential(graph, forces=True, stress=True)

    out = forward_backward()
    ms = {
        **{f"neighbor_list_{backend}": backend_ms(backend, atoms, cutoff, budget_s)
           for backend in neighbors.BACKENDS if backend_usable(backend)},
        "graph": best_ms(lambda: collate([record], dtype=calc.dtype, device=calc.device),
                         budget_s),
        "forward": best_ms(forward, budget_s),
        "forward_backward": best_ms(forward_backward, budget_s),
        "to_numpy": best_ms(lambda: to_ase_results(out, [len(atoms)], [True]), budget_s),
    }
    ms["neighbor_list"] = ms[f"neighbor_list_{neighbors.get_neighbor_backend()}"]
    ms["call"], ms["outside_share"] = timed_calls(calc, atoms, 2 * budget_s)
    # the same with the default Verlet skin, atoms moving as in MD: the list is reused
    skinned = MPNNCalculator(calc.potential, device="cpu", dtype=calc.parameters["dtype"],
                             skin=0.5)
    ms["call_skin"], ms["outside_share_skin"] = timed_calls(skinned, atoms, budget_s, move=True)
    ms["backward"] = max(0.0, ms["forward_backward"] - ms["forward"])
    gflop = matmul_gflop(forward_backward)
    return {"kind": "stages", "atoms": len(atoms), "edges": record.n_edges, **ms,
            "us_per_atom": 1e3 * ms["call"] / len(atoms), "gflop": gflop,
            "gflops_per_s": gflop / (1e-3 * ms["forward_backward"]),
            "energy_per_atom": float(out[keys.ENERGY].detach().sum()) / len(atoms),
            "peak_rss_mb": peak_rss_mb()}


def matmul_gflop(function: Callable[[], Any]) -> float:
    """GFLOP of the matrix products (mm, addmm, bmm, ...) one call of ``function`` runs,
    its autograd passes included, counted by torch's FlopCounterMode: the work a CPU's
    matmul peak bounds (elementwise operations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            function()
    except Exception:  # noqa: BLE001 - e.g. a compiled model the mode cannot see into
        return float("nan")
    return counter.get_total_flops() / 1e9


def scale_row(calc: MPNNCalculator, n_atoms: int) -> dict[str, Any]:
    """One energy+forces+stress call on a large cell after a warm-up call: seconds, time
    per atom and the process's peak resident memory."""
    atoms = cu_cell(n_atoms)
    calc.calculate(atoms, ["energy", "forces", "stress"])
    start = time.perf_counter()
    calc.calculate(atoms, ["energy", "forces", "stress"])
    seconds = time.perf_counter() - start
    edges = len(neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc,
                              calc.potential.cutoff).centers)
    return {"kind": "scale", "atoms": n_atoms, "edges": edges, "seconds": seconds,
            "us_per_atom": 1e6 * seconds / n_atoms, "peak_rss_mb": peak_rss_mb(),
            "energy_per_atom": calc.results["energy"] / n_atoms,
            "max_force": float(np.abs(calc.results["forces"]).max())}


def growth_row(calc: MPNNCalculator, small: int, large: int, rounds: int) -> dict[str, Any]:
    """Time per atom at ``large`` atoms over that at ``small``, from calls alternating
    between the two cells (best of ``rounds`` each): a ratio the machine's drifting load
    cannot fake, unlike one from rows measured minutes apart."""
    cells = {n: cu_cell(n) for n in (small, large)}
    best = {n: float("inf") for n in cells}
    for atoms in cells.values():  # warm-up
        calc.calculate(atoms, ["energy", "forces", "stress"])
    for _ in range(rounds):
        for n, atoms in cells.items():
            repeats = max(1, round(cells[large].get_global_number_of_atoms() / n) // 2)
            start = time.perf_counter()
            for _ in range(repeats):
                calc.calculate(atoms, ["energy", "forces", "stress"])
            best[n] = min(best[n], (time.perf_counter() - start) / repeats / n)
    return {"kind": "growth", "small": small, "large": large,
            "us_per_atom_small": 1e6 * best[small], "us_per_atom_large": 1e6 * best[large],
            "per_atom_growth": best[large] / best[small]}


def md_row(architecture: str, dtype: str, n_atoms: int, budget_s: float) -> dict[str, Any]:
    """Langevin NVT (2 fs, 600 K) steps per second with the default Verlet skin, and the
    share of each step spent building or checking neighbour lists."""
    atoms = cu_cell(n_atoms)
    calc = calculator(architecture, dtype, skin=0.5)
    atoms.calc = calc
    thermalize(atoms, 600, seed=0)
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=600, friction=0.02, fixcm=False,
                        rng=np.random.default_rng(0))
    dynamics.run(3)
    neighbor_seconds = [0.0]
    make_structure = calc.neighbors.structure

    def timed_structure(atoms):
        start = time.perf_counter()
        result = make_structure(atoms)
        neighbor_seconds[0] += time.perf_counter() - start
        return result

    calc.neighbors.structure = timed_structure
    builds0 = calc.neighbors.builds
    steps, start = 0, time.perf_counter()
    while steps < 5 or (time.perf_counter() - start < budget_s and steps < 500):
        dynamics.run(1)
        steps += 1
    elapsed = time.perf_counter() - start
    return {"kind": "md", "atoms": n_atoms, "steps": steps, "steps_per_s": steps / elapsed,
            "neighbor_share": neighbor_seconds[0] / elapsed,
            "list_builds": calc.neighbors.builds - builds0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("architecture", help=f"one of {ARCHITECTURES} or a built-in model")
    parser.add_argument("dtype", choices=("float32", "float64"))
    parser.add_argument("--sizes", type=int, nargs="*", default=[])
    parser.add_argument("--md", type=int, nargs="*", default=[])
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--growth", type=int, nargs=2, default=None, metavar=("SMALL", "LARGE"),
                        help="time per atom LARGE / SMALL from alternating calls")
    parser.add_argument("--compile", action="store_true", help="MPNNCalculator(compile=True)")
    parser.add_argument("--scale", type=int, default=0, help="one call on this many atoms")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    calc = calculator(args.architecture, args.dtype, skin=0.0, compile=args.compile)
    label = args.architecture + ("+c" if args.compile else "")
    for n in sorted(args.sizes):
        row = stage_row(calc, cu_cell(n), args.budget)
        print(json.dumps({"architecture": label, "dtype": args.dtype, **row}), flush=True)
    if args.growth:
        row = growth_row(calc, *args.growth, rounds=3)
        print(json.dumps({"architecture": label, "dtype": args.dtype, **row}), flush=True)
    if args.scale:
        row = scale_row(calc, args.scale)
        print(json.dumps({"architecture": args.architecture, "dtype": args.dtype, **row}),
              flush=True)
    for n in args.md:
        row = md_row(args.architecture, args.dtype, n, 3 * args.budget)
        print(json.dumps({"architecture": args.architecture, "dtype": args.dtype, **row}),
              flush=True)


if __name__ == "__main__":
    main()
