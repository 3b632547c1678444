"""``ase-mpnn train|eval|calibrate|make-data|check-data``: reference data, data checks,
training, error metrics and the calibration of a committee's uncertainty."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..loading import DEFAULT_DTYPE
from .options import integer, number


def _parse_value(text: str):
    """A --set value: JSON when it parses (numbers, lists, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _train(args: argparse.Namespace) -> int:
    import yaml

    from ..training import TrainConfig, train

    values = yaml.safe_load(open(args.config)) if args.config else {}
    if not isinstance(values, dict):
        raise ValueError(f"{args.config} must hold a mapping of training options")
    for item in args.set or []:
        key, _, value = item.partition("=")
        values[key.strip()] = _parse_value(value)
    for key in ("data", "epochs", "output", "dtype", "architecture", "init"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if isinstance(values.get("data"), list) and len(values["data"]) == 1:
        values["data"] = values["data"][0]  # --data takes one file or several
    if args.resume:
        values["resume"] = True
    if args.committee:
        from ..training.committee import train_committee

        summary = train_committee(TrainConfig.from_dict(values), args.committee,
                                  bootstrap=args.bootstrap)
        print(json.dumps({k: v for k, v in summary.items()
                          if k not in ("member_summaries", "test_calibration")}, indent=2))
        return 0
    if args.bootstrap:
        values["bootstrap"] = True
    summary = train(TrainConfig.from_dict(values))
    print(json.dumps({k: v for k, v in summary.items() if k != "test"}, indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ase.io import write

    from ..committee import Committee
    from ..loading import load_model
    from ..training.metrics import error_metrics, format_metrics, parity_plots
    from ..training.samples import GraphCache, read_samples

    potential = load_model(args.model, dtype=args.dtype)
    samples = read_samples(args.data, _label_keys(args), require_forces=False)
    cache = GraphCache(samples, potential.cutoff, potential.species)
    metrics = error_metrics(potential, cache, args.batch_size,
                            next(potential.parameters()).dtype, keep_predictions=True)
    pairs = metrics.pop("predictions")
    print(format_metrics(metrics, f"{args.model} on {args.data}"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = None
    if isinstance(potential, Committee):
        metrics["calibration"], rows = _committee_calibration(potential, cache, args, out)
    frames = []
    for k, (prediction, sample) in enumerate(pairs):
        atoms = sample.atoms.copy()
        atoms.info["MPNN_energy"] = prediction["energy"]
        atoms.arrays["MPNN_forces"] = prediction["forces"]
        if "stress" in prediction:
            atoms.info["MPNN_stress"] = prediction["stress"].ravel()
        if rows is not None:
            atoms.info["MPNN_energy_std"] = rows[k]["energy_std"]
            atoms.arrays["MPNN_forces_std"] = rows[k]["forces_std"]
        if sample.energy is not None:
            atoms.info["REF_energy"] = sample.energy
        if sample.forces is not None:
            atoms.arrays["REF_forces"] = sample.forces
        frames.append(atoms)
    write(out / "predictions.extxyz", frames, format="extxyz")
    parity_plots(pairs, out, title=Path(args.model).name)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"predictions, metrics.json and plots written to {out}/")
    return 0


def _committee_calibration(committee, cache, args: argparse.Namespace, out: Path
                           ) -> tuple[dict, list[dict]]:
    """A committee's calibration figures on the eval data (printed; calibration.png in
    ``out`` when there are force labels) and its per-frame predictions with stds."""
    from ..training.calibration import (
        calibration_plot,
        committee_predictions,
        format_calibration,
        pair_metrics,
        uncertainty_pairs,
    )

    rows = committee_predictions(committee, cache, args.batch_size)
    pairs = uncertainty_pairs(rows, cache.samples, committee.calibration)
    metrics = pair_metrics(pairs)
    print(format_calibration({"current": metrics}, "uncertainty (committee std)"))
    if len(pairs.forces_std):
        calibration_plot(pairs, out / "calibration.png", title=Path(args.model).name)
    return metrics, rows


def _calibrate(args: argparse.Namespace) -> int:
    import copy

    from ..committee import Committee
    from ..loading import load_model, resolve_dtype
    from ..training.calibration import (
        apply_calibration,
        calibration_plot,
        committee_pairs,
        fit_factors,
        format_calibration,
        pair_metrics,
        uncalibrated,
    )
    from ..training.samples import GraphCache, read_samples

    committee = load_model(args.committee)  # as saved: the file written keeps its dtype
    if not isinstance(committee, Committee):
        raise ValueError(f"{args.committee} is a single model, not a committee (make one "
                         "with ase_mpnn.save_committee or ase-mpnn train --committee N)")
    evaluated = copy.deepcopy(committee).to(dtype=resolve_dtype(args.dtype))
    samples = read_samples(args.data, _label_keys(args), require_forces=False)
    cache = GraphCache(samples, committee.cutoff, committee.species)
    with uncalibrated(evaluated):  # one evaluation; the stds are rescaled from it
        raw = committee_pairs(evaluated, cache, args.batch_size)
    factors = fit_factors(raw, args.method)
    if not factors:
        raise ValueError(f"no calibration factor could be fitted on {args.data}: no labelled "
                         "frame on which the members disagree")
    before = pair_metrics(raw.rescaled(committee.calibration))
    after = pair_metrics(raw.rescaled(factors))
    print(format_calibration({"before": before, "after": after},
                             f"{args.committee} on {args.data} ({len(samples)} frames)"))
    fit = {"n_frames": len(samples), "n_atoms": after["n_atoms"],
           "before": _finite(before), "after": _finite(after)}
    extra = {k: v for k, v in getattr(committee, "manifest", {}).items()
             if k in ("name", "training", "test_metrics")}
    path = apply_calibration(committee, factors, args.output, calibration_fit=fit, **extra)
    if args.plot and len(raw.forces_std):
        calibration_plot(raw.rescaled(factors), args.plot, title=Path(args.output).name)
    print(f"calibrated committee written to {path}")
    return 0


def _finite(metrics: dict) -> dict:
    """``metrics`` with NaN and inf numbers as None (strict JSON for the model manifest)."""
    import math

    return {k: _finite(v) if isinstance(v, dict) else
            None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in metrics.items()}


def _make_data(args: argparse.Namespace) -> int:
    if args.reference == "xtb":
        from ..training.xtb_data import xtb_dataset

        path = xtb_dataset(args.molecules, args.n, args.output, seed=args.seed,
                           charges=args.charges)
        each = f" at charges {args.charges}" if args.charges else ""
        print(f"wrote {args.n} GFN2-xTB-labelled geometries{each} of "
              f"{', '.join(args.molecules)} to {path}")
        return 0
    from ..training.emt_data import emt_dataset

    path = emt_dataset(args.elements, args.n, args.output, seed=args.seed)
    print(f"wrote {args.n} EMT-labelled structures of {'-'.join(args.elements)} to {path}")
    return 0


def _add_key_arguments(parser: argparse.ArgumentParser) -> None:
    """--energy-key ... --config-type-key: where the labels are in the files."""
    parser.add_argument("--energy-key", default="REF_energy", help="info key, eV")
    parser.add_argument("--forces-key", default="REF_forces", help="arrays key, eV/A")
    parser.add_argument("--stress-key", default="REF_stress", help="info key, eV/A^3")
    parser.add_argument("--virials-key", default="REF_virials", help="info key, eV")
    parser.add_argument("--config-type-key", default="config_type", help="info key")


def _label_keys(args: argparse.Namespace) -> dict[str, str]:
    return {"energy": args.energy_key, "forces": args.forces_key, "stress": args.stress_key,
            "virials": args.virials_key, "config_type": args.config_type_key}


def _check_data(args: argparse.Namespace) -> int:
    from ..training.datacheck import check_data, format_report

    report = check_data(args.files, _label_keys(args), max_force=args.max_force)
    print(format_report(report))
    return 0 if report.ok else 1


def _add_check_data(commands) -> None:
    check = commands.add_parser(
        "check-data", help="summarise training data and list label errors, outliers and "
                           "duplicates (exit status 1 on errors)")
    check.add_argument("files", nargs="+", help="extxyz, ase.db, ... (any ase.io format)")
    _add_key_arguments(check)
    check.add_argument("--max-force", type=number(above=0), default=20.0,
                       help="|F| (eV/A) above which a frame is a suspected outlier")
    check.set_defaults(func=_check_data)


def add_commands(commands) -> None:
    """Add train, eval, calibrate, make-data and check-data to the ``ase-mpnn`` sub-command
    parser."""
    train = commands.add_parser("train", help="train a potential (YAML config, flags override)")
    train.add_argument("config", nargs="?", help="YAML file of TrainConfig options")
    train.add_argument("--data", nargs="+",
                       help="extxyz/ase.db file(s) with REF_energy, REF_forces[, REF_stress]")
    train.add_argument("--architecture", help="SchNet, CGCNN, MPNN, ...")
    train.add_argument("--epochs", type=integer(1))
    train.add_argument("--dtype", choices=["float32", "float64"])
    train.add_argument("--output", help="output folder (checkpoint, best.mpnn, metrics, plots)")
    train.add_argument("--resume", action="store_true", help="continue from output/checkpoint.pt")
    train.add_argument("--init", metavar="MODEL",
                       help="fine-tune: start from this model file or built-in name (its "
                            "architecture and cutoff; new elements of the data are added, "
                            "their E0 fitted; default lr 2e-4)")
    train.add_argument("--committee", type=integer(2), metavar="N",
                       help="train N members (seeds seed..seed+N-1, one data split; each "
                            "resumable, max_minutes each) and write OUTPUT/committee.mpnn, "
                            "its uncertainty calibrated on the validation frames")
    train.add_argument("--bootstrap", action="store_true",
                       help="train on a bootstrap sample of the training frames (with "
                            "--committee: one per member)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override any option, e.g. --set lr=5e-4 --set "
                            "'hyperparameters={\"n_features\": 32}'")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="errors of a model on labelled data")
    evaluate.add_argument("model", help="model file")
    evaluate.add_argument("data", help="file with REF_ labels (extxyz, ase.db, ...)")
    evaluate.add_argument("--out", default="evaluation", help="output folder")
    evaluate.add_argument("--dtype", default=DEFAULT_DTYPE, choices=["float32", "float64"])
    evaluate.add_argument("--batch-size", type=integer(1), default=8)
    _add_key_arguments(evaluate)
    evaluate.set_defaults(func=_eval)

    calibrate = commands.add_parser(
        "calibrate", help="fit a committee's std scale factors on labelled validation data "
                          "and write the calibrated committee")
    calibrate.add_argument("committee", help="committee file")
    calibrate.add_argument("data", help="validation frames with REF_ labels, unseen in training")
    calibrate.add_argument("-o", "--output", required=True, help="committee file to write")
    calibrate.add_argument("--plot", metavar="PNG", help="also draw the calibration figure")
    calibrate.add_argument("--method", choices=["nll", "area"], default="nll",
                           help="nll: the factor of the smallest Gaussian NLL; area: of the "
                                "smallest miscalibration area (heavy-tailed errors)")
    calibrate.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                           help="precision of the evaluation (the file keeps its own)")
    calibrate.add_argument("--batch-size", type=integer(1), default=8)
    _add_key_arguments(calibrate)
    calibrate.set_defaults(func=_calibrate)

    make_data = commands.add_parser(
        "make-data", help="label structures with EMT (metals) or GFN2-xTB (molecules)")
    make_data.add_argument("--reference", choices=["emt", "xtb"], default="emt",
                           help="emt: metal alloys; xtb: molecules through tblite")
    make_data.add_argument("--elements", nargs="+", default=["Cu", "Ni"], help="EMT metals")
    make_data.add_argument("--molecules", nargs="+", default=["ethanol"],
                           help="xTB molecules: ethanol, aspirin, any ASE G2 name or a file")
    make_data.add_argument("--charges", nargs="+", type=int, metavar="Q",
                           help="xTB: label each geometry at these total charges (e.g. 0 1 -1), "
                                "lowest spin state, with info charge and spin")
    make_data.add_argument("-n", type=integer(1), default=400, help="number of structures")
    make_data.add_argument("--seed", type=integer(0), default=0)
    make_data.add_argument("-o", "--output", required=True, help="extxyz file to write")
    make_data.set_defaults(func=_make_data)
    _add_check_data(commands)
