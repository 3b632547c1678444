"""Uncertainty benchmark: does a committee's spread find its errors, is it calibrated after
fitting, and what does it cost?

    python benchmarks/uncertainty.py [--committee emt-cuni-schnet-committee] [--quick]
                                     [--seed 1] [--threads 2] [--json PATH] [--plot PATH]

``--committee``: a committee file, a built-in committee's name (default
``emt-cuni-schnet-committee``), or a comma-separated list of models evaluated as one
committee (``emt-cuni-schnet,emt-cuni-mace``; uncalibrated).

Held-out frames, made here and labelled with ASE's EMT (the built-in EMT models were
trained on ``emt_structures(["Cu", "Ni"], 500, seed=0)``):

- in distribution (ID): ``emt_structures(["Cu", "Ni"], n, seed=--seed)`` (seed 0 refused),
  split by frame into halves A and B;
- out of distribution (OOD): "liquid", 32-atom Cu-Ni frames of EMT Langevin MD at 2500 K
  (well above EMT's melting points); "compressed" and "expanded", rattled 32-atom Cu-Ni fcc
  cells with every lattice vector scaled by 0.90 and 1.10; "cluster", 13-20 atom Cu-Ni
  pieces of fcc (the atoms nearest a lattice site), rattled, without pbc.

Targets (exit status 1 when one is missed):

(a) Spearman rank correlation, over every held-out frame (ID and OOD), between the frame's
    force MAE (mean over its atoms of |F - F_EMT|) and its mean predicted forces_std: >= 0.6;
(b) mean over frames of the per-frame mean forces_std on OOD frames >= 2x that on ID frames;
(c) miscalibration area (Tran et al., Mach. Learn.: Sci. Technol. 1, 025006, 2020) of the
    force components on ID half B, with the factor c_F fitted on ID half A
    (``ase_mpnn.training.calibration``): <= 0.1;
(d) one energy+forces+stress call of ``MPNNCalculator`` on the committee, on a rattled
    108-atom fcc Cu cell, at most N_members x one call on its first member (4x for a
    committee of 4); the median over rounds of the ratio, the committee's and every
    member's calls interleaved in one process with ``--threads`` torch threads. The ratio
    to the sum of the members' calls is printed beside it (the fair one when the members
    differ in architecture).

Prints a table, writes ``--json`` (default benchmarks/uncertainty_results.json) and the
calibration figure of ID half B (``--plot``, default benchmarks/uncertainty_calibration.png).
Exit status 2 when the committee cannot be loaded (e.g. the built-in is not trained yet).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_COMMITTEE = "emt-cuni-schnet-committee"
ELEMENTS = ["Cu", "Ni"]

MIN_FRAME_SPEARMAN = 0.6
MIN_OOD_STD_RATIO = 2.0
MAX_MISCALIBRATION_AREA = 0.1
#: sizes: (ID frames, liquid, compressed, expanded, clusters, MD steps to melt, timing rounds)
FULL = (80, 12, 6, 6, 12, 500, 21)
QUICK = (16, 4, 2, 2, 4, 150, 5)


class CommitteeUnavailable(Exception):
    """The committee named on the command line cannot be loaded."""


# ---------------------------------------------------------------------------------------
# the committee
# ---------------------------------------------------------------------------------------

def load_committee(spec: str):
    """(Committee in float64, calculator source of the committee, of each member).

    ``spec``: a committee file or built-in name, or comma-separated model names/files.
    Raises CommitteeUnavailable with the reason."""
    from ase_mpnn import Committee, load_model
    from ase_mpnn.errors import ModelFileError

    names = [name.strip() for name in spec.split(",") if name.strip()]
    try:
        loaded = [load_model(name, dtype="float64") for name in names]
    except ModelFileError as exc:
        hint = (f" (the built-in {DEFAULT_COMMITTEE} may not be trained yet; meanwhile pass "
                "--committee emt-cuni-schnet,emt-cuni-mace)" if DEFAULT_COMMITTEE in names
                else "")
        raise CommitteeUnavailable(f"cannot load {spec!r}: {exc}{hint}") from exc
    if len(loaded) > 1:
        return Committee(loaded), names, names
    if not isinstance(loaded[0], Committee):
        raise CommitteeUnavailable(f"{spec} is a single model, not a committee; give a "
                                   "committee file or a comma-separated list of models")
    return loaded[0], names[0], list(loaded[0].members)


# ---------------------------------------------------------------------------------------
# held-out frames
# ---------------------------------------------------------------------------------------

def _alloy(rng: np.random.Generator, repeat: int = 2):
    """A cubic fcc Cu-Ni cell of 4 repeat^3 atoms, random occupancy at a random
    composition, lattice constant by Vegard's law from EMT's (emt_data.LATTICE)."""
    from ase.build import bulk

    from ase_mpnn.training.emt_data import LATTICE

    x_cu = rng.uniform(0.1, 0.9)
    atoms = bulk("Cu", "fcc", a=1.0, cubic=True).repeat(repeat)
    symbols = rng.choice(ELEMENTS, size=len(atoms), p=[x_cu, 1 - x_cu])
    a = float(np.mean([LATTICE[s] for s in symbols]))
    atoms.set_cell(atoms.cell.array * a, scale_atoms=True)
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def liquid_frames(n: int, steps: int, rng: np.random.Generator) -> list:
    """``n`` frames, 20 steps apart, of 32-atom Cu-Ni Langevin MD at 2500 K after ``steps``
    steps of 2 fs from fcc (EMT)."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin

    from ase_mpnn._compat import thermalize

    atoms = _alloy(rng)
    atoms.calc = EMT()
    thermalize(atoms, 2500, seed=int(rng.integers(1 << 31)))
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=2500, friction=0.05, fixcm=False,
                        rng=np.random.default_rng(int(rng.integers(1 << 31))))
    dynamics.run(steps)
    frames = []
    for _ in range(n):
        dynamics.run(20)
        frames.append(atoms.copy())
    return frames


def strained_frames(n: int, factor: float, rng: np.random.Generator) -> list:
    """``n`` rattled (0.05 A) 32-atom Cu-Ni cells with lattice vectors scaled by ``factor``."""
    frames = []
    for _ in range(n):
        atoms = _alloy(rng)
        atoms.set_cell(atoms.cell.array * factor, scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 31)))
        frames.append(atoms)
    return frames


def cluster_frames(n: int, rng: np.random.Generator) -> list:
    """``n`` non-periodic Cu-Ni clusters of 13-20 atoms: the atoms of an fcc alloy nearest
    one of its sites, rattled by 0.05 A, in a box with 8 A of vacuum."""
    from ase import Atoms

    frames = []
    for _ in range(n):
        bulk_cell = _alloy(rng, repeat=3)
        centre = bulk_cell.positions[len(bulk_cell) // 2]
        distances = bulk_cell.get_distances(len(bulk_cell) // 2, range(len(bulk_cell)),
                                            mic=True, vector=True)
        size = int(rng.integers(13, 21))
        nearest = np.argsort(np.linalg.norm(distances, axis=1), kind="stable")[:size]
        atoms = Atoms(bulk_cell.symbols[nearest], positions=centre + distances[nearest])
        atoms.center(vacuum=8.0)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 31)))
        frames.append(atoms)
    return frames


def labelled_samples(frames: Sequence, kind: str) -> list:
    """EMT-labelled Samples of ``frames`` (config_type ``kind``)."""
    from ase.calculators.emt import EMT

    from ase_mpnn.training.emt_data import label
    from ase_mpnn.training.samples import sample_from_atoms

    calc, samples = EMT(), []
    for k, atoms in enumerate(frames):
        labelled = label(atoms, calc)
        labelled.info["config_type"] = kind
        samples.append(sample_from_atoms(labelled, f"{kind}:{k}"))
    return samples


def held_out_sets(sizes: tuple, seed: int) -> dict[str, list]:
    """{"id_a", "id_b", "liquid", "compressed", "expanded", "cluster": Samples}."""
    from ase_mpnn.training.emt_data import emt_structures

    n_id, n_liquid, n_compressed, n_expanded, n_cluster, steps, _ = sizes
    rng = np.random.default_rng(seed + 1000)
    in_distribution = emt_structures(ELEMENTS, n_id, seed=seed)
    order = np.random.default_rng(seed).permutation(n_id)  # the kinds in both halves
    return {
        "id_a": labelled_samples([in_distribution[i] for i in order[: n_id // 2]], "id"),
        "id_b": labelled_samples([in_distribution[i] for i in order[n_id // 2:]], "id"),
        "liquid": labelled_samples(liquid_frames(n_liquid, steps, rng), "liquid"),
        "compressed": labelled_samples(strained_frames(n_compressed, 0.9, rng), "compressed"),
        "expanded": labelled_samples(strained_frames(n_expanded, 1.1, rng), "expanded"),
        "cluster": labelled_samples(cluster_frames(n_cluster, rng), "cluster"),
    }


# ---------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------

def measure(committee, sets: dict[str, list]) -> dict[str, Any]:
    """Uncalibrated pairs per set, the kinds' rows, targets (a)-(c) and the fitted factors."""
    from ase_mpnn.training.calibration import (
        committee_pairs,
        fit_factors,
        pair_metrics,
        spearman,
        uncalibrated,
    )

    with uncalibrated(committee):
        pairs = {name: committee_pairs(committee, samples) for name, samples in sets.items()}
    factors = fit_factors(pairs["id_a"])
    shipped = pair_metrics(pairs["id_b"].rescaled(committee.calibration))
    after = pair_metrics(pairs["id_b"].rescaled(factors))
    mae = {name: p.frame_force_mae for name, p in pairs.items()}
    std = {name: p.frame_forces_std for name, p in pairs.items()}
    ood = [name for name in sets if not name.startswith("id")]
    id_std = np.concatenate([std["id_a"], std["id_b"]])
    ood_std = np.concatenate([std[name] for name in ood])
    return {
        "kinds": [_kind_row(name, mae[name], std[name]) for name in sets],
        "frame_spearman_all": spearman(np.concatenate(list(mae.values())),
                                       np.concatenate(list(std.values()))),
        "frame_spearman_id": spearman(np.concatenate([mae["id_a"], mae["id_b"]]), id_std),
        "atom_spearman_id_b": after["forces_spearman_atom"],
        "ood_std_ratio": float(ood_std.mean() / id_std.mean()),
        "fitted_factors": factors,
        "shipped_factors": dict(committee.calibration),
        "id_b_shipped": shipped,
        "id_b_calibrated": after,
        "id_a_calibrated": pair_metrics(pairs["id_a"].rescaled(factors)),
        "miscalibration_area": after["forces_miscalibration_area"],
    }, pairs["id_b"].rescaled(factors)


def _kind_row(name: str, mae: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    """Frames, mean frame force MAE and mean frame forces_std (uncalibrated) of one set."""
    return {"set": name, "frames": int(len(mae)), "force_mae": float(mae.mean()),
            "forces_std": float(std.mean())}


def time_ratio(committee_source, member_sources: Sequence, rounds: int, threads: int,
               seed: int) -> dict[str, Any]:
    """Median over ``rounds`` of (committee call) / (first-member call), and of (committee
    call) / (sum of the members' calls): energy, forces and stress of a rattled 108-atom fcc
    Cu cell, float32, best of 3 calls each per round, the order rotating between rounds."""
    import torch
    from ase.build import bulk
    from ase.calculators.calculator import all_changes

    from ase_mpnn import MPNNCalculator

    torch.set_num_threads(threads)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=seed)
    calcs = [MPNNCalculator(source, device="cpu")
             for source in (committee_source, *member_sources)]

    def call(calc) -> float:
        start = time.perf_counter()
        calc.calculate(atoms, ["energy", "forces", "stress"], all_changes)
        return time.perf_counter() - start

    for calc in calcs:  # warm-up
        call(calc), call(calc)
    times = np.zeros((rounds, len(calcs)))
    for r in range(rounds):
        for k in np.roll(np.arange(len(calcs)), r):
            times[r, k] = min(call(calcs[k]) for _ in range(3))
    return {"ratio": float(np.median(times[:, 0] / times[:, 1])),
            "ratio_to_sum": float(np.median(times[:, 0] / times[:, 1:].sum(axis=1))),
            "committee_ms": 1e3 * float(np.median(times[:, 0])),
            "members_ms": (1e3 * np.median(times[:, 1:], axis=0)).tolist(),
            "rounds": rounds, "threads": threads, "atoms": len(atoms)}


# ---------------------------------------------------------------------------------------
# judging and reporting
# ---------------------------------------------------------------------------------------

def check_targets(result: dict[str, Any]) -> list[str]:
    """One line per missed target; a NaN misses."""
    missed = []
    n = result["members"]
    checks = [
        ("frame_spearman_all", ">=", MIN_FRAME_SPEARMAN,
         "(a) per-frame Spearman, force MAE vs mean forces_std, all held-out frames"),
        ("ood_std_ratio", ">=", MIN_OOD_STD_RATIO,
         "(b) mean forces_std, out of / in distribution"),
        ("miscalibration_area", "<=", MAX_MISCALIBRATION_AREA,
         "(c) miscalibration area after calibration, ID half B"),
    ]
    for key, sense, limit, text in checks:
        value = result[key]
        ok = value >= limit if sense == ">=" else value <= limit
        if not ok:  # False for NaN too
            missed.append(f"{text}: {value:.3f} (target {sense} {limit:g})")
    ratio = result["timing"]["ratio"]
    if not ratio <= n:
        missed.append(f"(d) committee-of-{n} call / first-member call: {ratio:.2f} "
                      f"(target <= {n})")
    return missed


def print_report(result: dict[str, Any]) -> None:
    """The per-set table and the four targets' figures."""
    print(f"\n{'set':12s}{'frames':>7s}{'force MAE':>11s}{'mean std':>10s}   (meV/A, "
          "uncalibrated std)")
    for row in result["kinds"]:
        print(f"{row['set']:12s}{row['frames']:7d}{1e3 * row['force_mae']:11.1f}"
              f"{1e3 * row['forces_std']:10.1f}")
    timing = result["timing"]
    n = result["members"]
    print(f"\n{'target':60s}{'value':>9s}{'limit':>9s}")
    rows = [("(a) Spearman frame force MAE vs mean std, all frames", "frame_spearman_all",
             f">= {MIN_FRAME_SPEARMAN}"),
            ("    (same, ID frames only; not judged)", "frame_spearman_id", ""),
            ("(b) mean forces_std OOD / ID", "ood_std_ratio", f">= {MIN_OOD_STD_RATIO}"),
            ("(c) miscalibration area, ID half B, c_F fitted on half A",
             "miscalibration_area", f"<= {MAX_MISCALIBRATION_AREA}")]
    for text, key, limit in rows:
        print(f"{text:60s}{result[key]:9.3f}{limit:>9s}")
    print(f"{'    (same with the file factors; not judged)':60s}"
          f"{result['id_b_shipped']['forces_miscalibration_area']:9.3f}")
    print(f"{'    (same on half A, where c_F was fitted; not judged)':60s}"
          f"{result['id_a_calibrated']['forces_miscalibration_area']:9.3f}")
    members_ms = " + ".join(f"{t:.1f}" for t in timing["members_ms"])
    print(f"{'(d) committee call / first-member call, 108 atoms':60s}"
          f"{timing['ratio']:9.2f}{f'<= {n}':>9s}   ({timing['committee_ms']:.1f} ms; "
          f"members {members_ms} ms)")
    print(f"{'    committee call / sum of the members; not judged':60s}"
          f"{timing['ratio_to_sum']:9.2f}")
    print(f"fitted c_F {result['fitted_factors'].get('forces', float('nan')):.3f} "
          f"(file: {result['shipped_factors']['forces']:.3f}); NLL per component ID half B "
          f"{result['id_b_calibrated']['forces_nll']:.3f} eV/A")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--committee", default=DEFAULT_COMMITTEE,
                        help="committee file or built-in name, or comma-separated models "
                             "(default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help=f"fewer frames and rounds (ID {QUICK[0]}, OOD "
                             f"{sum(QUICK[1:5])}, {QUICK[6]} timing rounds)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the held-out frames (not 0: the built-ins' training "
                             "data)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for timing")
    parser.add_argument("--json", type=Path, default=HERE / "uncertainty_results.json")
    parser.add_argument("--plot", type=Path, default=HERE / "uncertainty_calibration.png")
    args = parser.parse_args(argv)
    if args.seed == 0:
        parser.error("--seed 0 draws the built-in models' training structures; use another")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        committee, source, members = load_committee(args.committee)
    except CommitteeUnavailable as exc:
        print(f"uncertainty benchmark: {exc}", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    print(f"{platform.node()}, {os.cpu_count()} cores; {committee.architecture} "
          f"({args.committee}); seed {args.seed}{', quick' if args.quick else ''}", flush=True)
    started = time.perf_counter()
    sets = held_out_sets(sizes, args.seed)
    result, calibrated_b = measure(committee, sets)
    result["members"] = len(committee.members)
    result["timing"] = time_ratio(source, members, sizes[6], args.threads, args.seed)
    print_report(result)
    missed = check_targets(result)
    for line in missed:
        print(f"MISSED {line}")
    print("targets:", "all met" if not missed else f"{len(missed)} missed")
    from ase_mpnn.training.calibration import calibration_plot

    calibration_plot(calibrated_b, args.plot,
                     title=f"{args.committee}: ID half B, c_F fitted on half A")
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"node": platform.node(), "cores": os.cpu_count()},
              "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "seconds": time.perf_counter() - started, **result, "missed": missed}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2, default=float))
    print(f"wrote {args.json} and {args.plot}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
