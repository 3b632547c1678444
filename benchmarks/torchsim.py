"""MD steps per second of many small systems: torch-sim batched vs ASE one by one.

    python benchmarks/torchsim.py [--systems 64] [--atoms 32] [--steps 20] [--rounds 3]
                                  [--threads 2] [--dtype float32] [--model emt-cuni-schnet]
                                  [--device cpu] [--json out.json]

``--systems`` Cu-Ni cells of ``--atoms`` atoms (fcc a = 3.6 A, 2 x 2 x 2 cubic cells for
32 atoms, random half Ni, rattled) run NVT Langevin at 600 K with a 2 fs step, the same
model and dtype on both sides:

* ASE: one ``MPNNCalculator`` per system (each keeps its own Verlet-skin list, as a user
  running them one after another would) and ``ase.md.langevin.Langevin``, system after
  system, ``--steps`` steps each;
* torch-sim: all systems in one state, ``ts.integrate(..., integrator=ts.nvt_langevin)``
  with ``ase_mpnn.integrations.torchsim.MPNNModel`` (one batched graph, the lists kept
  across steps), ``--steps`` steps; each call's initial force evaluation is counted.

Rounds alternate between the two (the machine may be shared: only ratios within one run
mean anything). The figure is MD steps per second summed over systems; the median over
rounds is compared. It also prints where a torch-sim step spends its time (graph and
neighbour lists, model forward + backward, the rest: torch-sim's integrator) and the
ratio a batched model call alone gains over one call per system, the ceiling for the
whole step. Target: torch-sim >= 5x the ASE loop; the script exits 1 when missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.md.langevin import Langevin

from ase_mpnn import MPNNCalculator
from ase_mpnn._compat import thermalize

try:
    import torch_sim as ts

    from ase_mpnn.integrations.torchsim import MPNNModel
except ImportError:
    sys.exit("benchmarks/torchsim.py needs torch-sim: pip install 'ase-mpnn[torchsim]'")

TARGET = 5.0
TEMPERATURE_K, TIMESTEP_FS, FRICTION_PER_FS = 600.0, 2.0, 0.02


def cells(n_systems: int, n_atoms: int, seed: int = 0) -> list:
    """``n_systems`` fcc Cu-Ni cells of ``n_atoms`` atoms (a multiple of 4 that makes a
    box of cubic cells), half Ni at random, rattled by 0.05 A, momenta at 600 K."""
    repeat = _box(n_atoms // 4)
    rng = np.random.default_rng(seed)
    systems = []
    for k in range(n_systems):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
        atoms.symbols[rng.random(len(atoms)) < 0.5] = "Ni"
        atoms.rattle(0.05, seed=seed + k)
        thermalize(atoms, TEMPERATURE_K, seed=seed + k)
        systems.append(atoms)
    return systems


def _box(n_cells: int) -> tuple[int, int, int]:
    """The most cube-like (a, b, c) with a b c = n_cells."""
    best = (n_cells, 1, 1)
    for a in range(1, n_cells + 1):
        for b in range(1, n_cells // a + 1):
            if n_cells % (a * b) == 0:
                shape = tuple(sorted((a, b, n_cells // (a * b))))
                if max(shape) - min(shape) < max(best) - min(best):
                    best = shape
    return best


class AseLoop:
    """The one-by-one reference: a calculator and a Langevin integrator per system."""

    def __init__(self, systems: list, model: str, dtype: str, device: str):
        self.systems = [atoms.copy() for atoms in systems]
        self.dynamics = []
        for k, atoms in enumerate(self.systems):
            atoms.set_momenta(systems[k].get_momenta())
            atoms.calc = MPNNCalculator(model, device=device, dtype=dtype)
            self.dynamics.append(Langevin(
                atoms, timestep=TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE_K,
                friction=FRICTION_PER_FS / units.fs, fixcm=False,  # as torch-sim's
                rng=np.random.default_rng(k), logfile=None))

    def run(self, steps: int) -> None:
        for dynamics in self.dynamics:
            dynamics.run(steps)


class TorchSimRun:
    """All systems in one torch-sim state, advanced by ts.integrate; the state carries on."""

    def __init__(self, systems: list, model: str, dtype: str, device: str):
        torch_dtype = getattr(torch, dtype)
        self.model = MPNNModel(model, device=device, dtype=torch_dtype)
        self.state = ts.io.atoms_to_state(systems, self.model.device, torch_dtype)
        self.seed = 0

    def run(self, steps: int) -> None:
        self.seed += 1
        self.state = ts.integrate(
            system=self.state, model=self.model, integrator=ts.nvt_langevin, n_steps=steps,
            temperature=TEMPERATURE_K, timestep=TIMESTEP_FS / 1000.0, seed=self.seed,
            gamma=torch.tensor(FRICTION_PER_FS / units.fs, dtype=self.state.dtype,
                               device=self.state.device))


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def profile_torch_sim(run: TorchSimRun, steps: int) -> dict[str, float]:
    """Seconds of one ``run(steps)`` spent building graphs (skin checks, neighbour lists),
    in the potential (model forward + backward) and elsewhere (torch-sim)."""
    spent = {"graph": 0.0, "potential": 0.0}
    neighbors, potential = run.model.neighbors, run.model.potential
    graph, evaluate = neighbors.graph, potential.forward

    def timed_graph(*args, **kwargs):
        start = time.perf_counter()
        try:
            return graph(*args, **kwargs)
        finally:
            spent["graph"] += time.perf_counter() - start

    def timed_potential(*args, **kwargs):
        start = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            spent["potential"] += time.perf_counter() - start

    neighbors.graph, potential.forward = timed_graph, timed_potential
    try:
        total = timed(run.run, steps)
    finally:
        del neighbors.graph, potential.forward
    return {**spent, "torch-sim": total - spent["graph"] - spent["potential"], "total": total}


def model_call_ratio(systems: list, run: TorchSimRun, dtype: str, device: str,
                     model: str, repeats: int = 3) -> float:
    """Time of one calculator call per system over one batched model call, same graphs."""
    calculators = [MPNNCalculator(model, device=device, dtype=dtype) for _ in systems]
    state = ts.io.atoms_to_state(systems, run.model.device, getattr(torch, dtype))
    one_by_one, batched = [], []
    for _ in range(repeats):
        one_by_one.append(timed(lambda: [c.get_forces(a) for c, a in zip(calculators,
                                                                         systems)]))
        for calc in calculators:
            calc.reset()
        batched.append(timed(run.model, state))
    return statistics.median(one_by_one) / statistics.median(batched)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", type=int, default=64)
    parser.add_argument("--atoms", type=int, default=32, help="per system, a multiple of 4")
    parser.add_argument("--steps", type=int, default=20, help="MD steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--model", default="emt-cuni-schnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    systems = cells(args.systems, args.atoms)
    ase_loop = AseLoop(systems, args.model, args.dtype, args.device)
    batched = TorchSimRun(systems, args.model, args.dtype, args.device)
    ase_loop.run(1)  # warm-up: model loading, first lists
    batched.run(1)
    rates = {"ase": [], "torch-sim": []}
    work = args.systems * args.steps
    for round_ in range(args.rounds):
        rates["ase"].append(work / timed(ase_loop.run, args.steps))
        rates["torch-sim"].append(work / timed(batched.run, args.steps))
        print(f"round {round_ + 1}: ASE {rates['ase'][-1]:.1f} steps/s, torch-sim "
              f"{rates['torch-sim'][-1]:.1f} steps/s", flush=True)
    median = {name: statistics.median(values) for name, values in rates.items()}
    ratio = median["torch-sim"] / median["ase"]
    profile = profile_torch_sim(batched, args.steps)
    ceiling = model_call_ratio(systems, batched, args.dtype, args.device, args.model)
    print(f"\n{args.systems} systems x {args.atoms} atoms, NVT Langevin {TIMESTEP_FS:g} fs, "
          f"{args.model} {args.dtype} on {args.device}, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds of {args.steps} steps\n")
    print("| engine | MD steps/s summed over systems | ratio |")
    print("| --- | --- | --- |")
    print(f"| ASE one by one (Langevin, MPNNCalculator) | {median['ase']:.1f} | 1.00 |")
    print(f"| torch-sim batched (nvt_langevin, MPNNModel) | {median['torch-sim']:.1f} | "
          f"{ratio:.2f} (target >= {TARGET:g}) |")
    shares = ", ".join(f"{name} {100 * seconds / profile['total']:.0f} %"
                       for name, seconds in profile.items() if name != "total")
    print(f"\ntorch-sim step time: {shares}; one batched model call is {ceiling:.2f}x "
          "faster than one calculator call per system (the ceiling batching can reach)")
    print(f"neighbour lists: {batched.model.neighbors.builds} built, "
          f"{batched.model.neighbors.reuses} reused (per system)")
    if args.json:
        args.json.write_text(json.dumps({"rates": rates, "median": median, "ratio": ratio,
                                         "profile": profile, "model_call_ratio": ceiling,
                                         "settings": vars(args) | {"json": str(args.json)}},
                                        indent=2))
    if ratio < TARGET:
        print(f"MISSED: torch-sim {ratio:.2f}x the ASE loop, target {TARGET:g}x")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
