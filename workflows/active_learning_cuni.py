"""Active learning of Cu-Ni liquid and adatom slabs, from the built-in EMT Cu-Ni committee.

The built-in ``emt-cuni-schnet-committee`` was trained on strained bulk, vacancies, clean
slabs and MD at 300-1200 K. This script takes it to a domain it has not seen, Cu-Ni liquid
at 1500-2500 K and fcc(100)/(111) slabs with adatoms at 600-1200 K, with ``ase-mpnn learn``
(ase_mpnn.training.active) and EMT as the reference, and measures the committee's errors on
a separate EMT test set of that domain after each round.

    python workflows/active_learning_cuni.py [--work al_cuni] [--rounds 6] [--minutes 1.5]
        [--data emt-cuni.extxyz] [--results workflows/results/active_learning_cuni]

Writes WORK/seeds/*.extxyz, WORK/domain_test.extxyz, WORK/active.yaml and the run in
WORK/run; copies report.csv, report.json and active_learning.png, with summary.json (the
threshold and how it was chosen) and table.txt, to RESULTS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml
from ase import Atoms, units
from ase.build import add_adsorbate, bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.io import read, write
from ase.md.langevin import Langevin

from ase_mpnn import MPNNCalculator
from ase_mpnn._compat import thermalize
from ase_mpnn.modelfile import atomic_write_bytes
from ase_mpnn.training.active import format_table, learn
from ase_mpnn.training.emt_data import LATTICE, emt_dataset, label

LIQUID_K = (1500.0, 2000.0, 2500.0)  # the liquid: 32 atoms at fcc density, melted
SLAB_K = (600.0, 900.0, 1200.0)  # adatom slabs
ADATOM_SITES = {"100": ("hollow", 1.8), "111": ("fcc", 2.0)}  # site, height above (A)


def alloy_cell(rng: np.random.Generator) -> Atoms:
    """32-atom cubic fcc cell, random Cu-Ni occupancy, Vegard lattice constant (A)."""
    symbols = rng.choice(["Cu", "Ni"], size=32)
    a = float(np.mean([LATTICE[s] for s in symbols]))
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(2)
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def adatom_slab(rng: np.random.Generator, facet: str, adatoms: int) -> Atoms:
    """2x2x4 fcc(100) or (111) Cu-Ni slab, 6 A vacuum, periodic in 3-D like the training
    slabs, with ``adatoms`` (1 or 2) adatoms on hollow sites."""
    build = fcc100 if facet == "100" else fcc111
    slab = build("Cu", size=(2, 2, 4), a=LATTICE["Cu"], vacuum=6.0, periodic=True)
    slab.set_chemical_symbols(list(rng.choice(["Cu", "Ni"], size=len(slab))))
    site, height = ADATOM_SITES[facet]
    for k in range(adatoms):
        add_adsorbate(slab, str(rng.choice(["Cu", "Ni"])), height, site, offset=(k, k))
    slab.info.pop("adsorbate_info", None)  # not storable in extxyz
    return slab


def write_seeds(folder: Path, seed: int) -> list[dict]:
    """The seed structures of the exploration, as ``seed_structures`` entries."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "liquid.extxyz", alloy_cell(rng))
    write(folder / "slabs.extxyz", [adatom_slab(rng, "100", 1), adatom_slab(rng, "111", 2)])
    return [{"file": str(folder / "liquid.extxyz"), "temperatures_K": list(LIQUID_K)},
            {"file": str(folder / "slabs.extxyz"), "temperatures_K": list(SLAB_K)}]


def emt_md_frames(atoms: Atoms, temperature_K: float, n_frames: int, rng: np.random.Generator,
                  equilibrate: int = 500, every: int = 50) -> list[Atoms]:
    """EMT-labelled frames of EMT Langevin MD (2 fs): every ``every`` steps after
    ``equilibrate`` steps."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    thermalize(atoms, temperature_K, seed=int(rng.integers(1 << 31)))
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=temperature_K,
                        friction=0.01 / units.fs, fixcm=False,
                        rng=np.random.default_rng(int(rng.integers(1 << 31))))
    dynamics.run(equilibrate)
    frames = []
    for _ in range(n_frames):
        dynamics.run(every)
        frames.append(label(atoms, EMT()))
        frames[-1].info["config_type"] = f"T{temperature_K:.0f}K"
    return frames


def make_test_set(path: Path, seed: int, per_run: int) -> Path:
    """The domain test set (independent seeds): liquid at LIQUID_K and (100)/(111) slabs
    with 1-2 adatoms at SLAB_K, ``per_run`` frames per MD run (EMT labels)."""
    rng = np.random.default_rng(seed)
    frames = []
    for temperature in LIQUID_K:
        frames += emt_md_frames(alloy_cell(rng), temperature, per_run, rng)
    for facet, adatoms in (("100", 2), ("111", 1)):
        for temperature in SLAB_K:
            frames += emt_md_frames(adatom_slab(rng, facet, adatoms), temperature,
                                    max(1, per_run // 2), rng)
    write(path, frames)
    return path


def choose_threshold(committee: str, data: Path, n: int = 200, percentile: float = 90.0,
                     factor: float = 1.0) -> dict:
    """The threshold (eV/A): ``factor`` x the ``percentile`` of the largest per-atom force
    std of the starting committee over ``n`` random frames of its own training data."""
    frames = read(data, ":")
    picks = np.random.default_rng(0).choice(len(frames), size=min(n, len(frames)),
                                            replace=False)
    calc = MPNNCalculator(committee, device="cpu", dtype="float32")
    stds = []
    for i in picks:
        atoms = frames[i].copy()
        atoms.calc = calc
        stds.append(float(np.max(calc.get_property("forces_std", atoms))))
    return {"threshold": round(factor * float(np.percentile(stds, percentile)), 4),
            "rule": f"{factor:g} x the {percentile:g}th percentile of the largest per-atom "
                    f"force std over {len(stds)} training frames",
            "training_frames_max_std": {"median": float(np.median(stds)),
                                        "max": float(np.max(stds))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--committee", default="emt-cuni-schnet-committee")
    parser.add_argument("--data", help="the committee's training data (default: made by "
                        "its recipe, make-data --elements Cu Ni -n 500 --seed 0)")
    parser.add_argument("--work", default="al_cuni")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"
                                                 / "active_learning_cuni"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=1.5, help="fine-tuning per member")
    parser.add_argument("--md-steps", type=int, default=400)
    parser.add_argument("--max-new", type=int, default=30, help="frames labelled per round")
    parser.add_argument("--new-frames-weight", type=float, default=3.0,
                        help="loss weight of the labelled frames (the initial data: 1)")
    parser.add_argument("--test-frames", type=int, default=7, help="per liquid MD run")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs)")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else work / "emt-cuni.extxyz"
    if not data.exists():
        emt_dataset(["Cu", "Ni"], 500, data, seed=0)
    test = work / "domain_test.extxyz"
    if not test.exists():
        make_test_set(test, seed=1000, per_run=args.test_frames)
    threshold = choose_threshold(args.committee, data)
    print(f"threshold {threshold['threshold']} eV/A: {threshold['rule']}")
    config = {"committee": args.committee, "data": str(data),
              "seed_structures": write_seeds(work / "seeds", seed=0),
              "md_steps": args.md_steps, "timestep_fs": 2.0, "sample_interval": 10,
              "threshold": threshold["threshold"], "max_new_per_round": args.max_new,
              "min_separation": 3, "reference": "emt", "rounds": args.rounds,
              "new_frames_weight": args.new_frames_weight,
              "finetune": {"epochs": 10000, "max_minutes": args.minutes, "lr": 1e-3,
                           "early_stopping_patience": 10000},
              "test_data": str(test), "output": str(work / "run"), "resume": args.resume,
              "progress": not args.no_progress}
    (work / "active.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = learn(config)
    save_results(Path(args.results), work / "run", summary, threshold)


def save_results(results: Path, run: Path, summary: dict, threshold: dict) -> None:
    """Copy the report files and write summary.json and table.txt (atomically)."""
    for name in ("report.csv", "report.json", "active_learning.png"):
        atomic_write_bytes(results / name, (run / name).read_bytes())
    rows = summary["rows"]
    first, last = rows[0]["test_forces_mae_meV_per_A"], rows[-1]["test_forces_mae_meV_per_A"]
    result = {"threshold": threshold, "stopped": summary["stopped"], "rounds": len(rows) - 1,
              "reference_calls": rows[-1]["total_reference_calls"],
              "test_forces_mae_meV_per_A": {"start": first, "end": last},
              "reduction_factor": first / last,
              "minutes": sum(row["minutes"] for row in rows)}
    atomic_write_bytes(results / "summary.json", json.dumps(result, indent=2).encode())
    table = format_table(rows)
    atomic_write_bytes(results / "table.txt", (table + "\n").encode())
    print(f"force MAE on the domain test set: {first:.1f} -> {last:.1f} meV/A "
          f"({first / last:.2f}x) with {result['reference_calls']} EMT calls")


if __name__ == "__main__":
    main()
