"""The ``ase-mpnn`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import ASEMPNNError


def _demo(args: argparse.Namespace) -> int:
    from .demo import print_summary, run_demo

    print_summary(run_demo(args.out, model=args.model, md_steps=args.md_steps, seed=args.seed))
    print(f"files written to {args.out}/ (relax.traj, md.traj, md_energy.png, summary.json)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .calculator import model_file_path
    from .io import read_manifest

    print(json.dumps(read_manifest(model_file_path(args.model)), indent=2, sort_keys=True))
    return 0


def _models(args: argparse.Namespace) -> int:
    from .io import read_manifest
    from .pretrained import list_models, model_path

    names = list_models()
    if not names:
        print("no built-in models in this installation")
        return 0
    print(f"{'name':28s}{'architecture':>13s}{'params':>9s}{'E MAE meV/at':>14s}"
          f"{'F MAE meV/A':>13s}{'S MAE meV/A3':>14s}")
    for name in names:
        manifest = read_manifest(model_path(name))
        test = manifest.get("test_metrics", {})

        def milli(key: str) -> str:
            return f"{1e3 * test[key]:.2f}" if key in test else "-"

        print(f"{name:28s}{manifest['architecture']:>13s}{manifest['n_parameters']:>9d}"
              f"{milli('energy_mae'):>14s}{milli('forces_mae'):>13s}{milli('stress_mae'):>14s}")
    return 0


def _new(args: argparse.Namespace) -> int:
    import torch

    from .io import save_model
    from .models import build_model

    torch.manual_seed(args.seed)
    hyper = json.loads(args.hyperparameters) if args.hyperparameters else {}
    model = build_model(args.architecture, args.species, args.cutoff, **hyper)
    path = save_model(model, args.output)
    print(f"wrote {path}: {args.architecture} with random weights, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    return 0


def _parse_value(text: str):
    """A --set value: JSON when it parses (numbers, lists, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _train(args: argparse.Namespace) -> int:
    import yaml

    from .train import TrainConfig, train

    values = yaml.safe_load(open(args.config)) if args.config else {}
    if not isinstance(values, dict):
        raise ValueError(f"{args.config} must hold a mapping of training options")
    for item in args.set or []:
        key, _, value = item.partition("=")
        values[key.strip()] = _parse_value(value)
    for key in ("data", "epochs", "output", "dtype", "architecture"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.resume:
        values["resume"] = True
    summary = train(TrainConfig.from_dict(values))
    print(json.dumps({k: v for k, v in summary.items() if k != "test"}, indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ase.io import write

    from .data import GraphCache, read_samples
    from .evaluate import evaluate, format_metrics, parity_plots
    from .io import load_model

    potential = load_model(args.model, dtype=args.dtype)
    samples = read_samples(args.data, require_forces=False)
    cache = GraphCache(samples, potential.cutoff, potential.species)
    metrics = evaluate(potential, cache, args.batch_size, potential.scale.dtype,
                       keep_predictions=True)
    pairs = metrics.pop("predictions")
    print(format_metrics(metrics, f"{args.model} on {args.data}"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for prediction, sample in pairs:
        atoms = sample.atoms.copy()
        atoms.info["MPNN_energy"] = prediction["energy"]
        atoms.arrays["MPNN_forces"] = prediction["forces"]
        if "stress" in prediction:
            atoms.info["MPNN_stress"] = prediction["stress"].ravel()
        atoms.info["REF_energy"] = sample.energy
        if sample.forces is not None:
            atoms.arrays["REF_forces"] = sample.forces
        frames.append(atoms)
    write(out / "predictions.extxyz", frames, format="extxyz")
    parity_plots(pairs, out, title=Path(args.model).name)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"predictions, metrics.json and parity plots written to {out}/")
    return 0


def _make_data(args: argparse.Namespace) -> int:
    if args.reference == "xtb":
        from .reference_molecules import xtb_dataset

        path = xtb_dataset(args.molecules, args.n, args.output, seed=args.seed)
        print(f"wrote {args.n} GFN2-xTB-labelled frames of {', '.join(args.molecules)} to {path}")
        return 0
    from .reference import emt_dataset

    path = emt_dataset(args.elements, args.n, args.output, seed=args.seed)
    print(f"wrote {args.n} EMT-labelled structures of {'-'.join(args.elements)} to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ase-mpnn`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="ase-mpnn", description="Message-passing neural-network potentials for ASE."
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"ase-mpnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="relax a Cu-Ni cell, run MD, compare with EMT")
    demo.add_argument("--model", help="model name or file (default: the best built-in EMT model)")
    demo.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--md-steps", type=int, default=200, help="NVE steps of 1 fs")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    info = commands.add_parser("info", help="print a model file's manifest")
    info.add_argument("model", help="path of a .mpnn model file or a built-in model's name")
    info.set_defaults(func=_info)

    models = commands.add_parser("models", help="list the built-in models and their test errors")
    models.set_defaults(func=_models)

    new = commands.add_parser("new", help="write a model file with random weights")
    new.add_argument("architecture", help="architecture name, e.g. SchNet")
    new.add_argument("--species", nargs="+", required=True, help="element symbols, e.g. Cu Ni")
    new.add_argument("--cutoff", type=float, default=5.0, help="cutoff radius in Angstrom")
    new.add_argument("--hyperparameters", help='JSON, e.g. \'{"n_features": 128}\'')
    new.add_argument("--seed", type=int, default=0)
    new.add_argument("-o", "--output", required=True, help="model file to write")
    new.set_defaults(func=_new)

    train = commands.add_parser("train", help="train a potential (YAML config, flags override)")
    train.add_argument("config", nargs="?", help="YAML file of TrainConfig options")
    train.add_argument("--data", help="extxyz/ase.db file with REF_energy, REF_forces[, REF_stress]")
    train.add_argument("--architecture", help="SchNet, CGCNN, MPNN, ...")
    train.add_argument("--epochs", type=int)
    train.add_argument("--dtype", choices=["float32", "float64"])
    train.add_argument("--output", help="output folder (checkpoint, best.mpnn, metrics, plots)")
    train.add_argument("--resume", action="store_true", help="continue from output/checkpoint.pt")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override any option, e.g. --set lr=5e-4 --set "
                            "'hyperparameters={\"n_features\": 32}'")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="errors of a model on labelled data")
    evaluate.add_argument("model", help="model file")
    evaluate.add_argument("data", help="file with REF_ labels (extxyz, ase.db, ...)")
    evaluate.add_argument("--out", default="evaluation", help="output folder")
    evaluate.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.set_defaults(func=_eval)

    make_data = commands.add_parser(
        "make-data", help="label structures with EMT (metals) or GFN2-xTB (molecules)")
    make_data.add_argument("--reference", choices=["emt", "xtb"], default="emt",
                           help="emt: metal alloys; xtb: molecules through tblite")
    make_data.add_argument("--elements", nargs="+", default=["Cu", "Ni"], help="EMT metals")
    make_data.add_argument("--molecules", nargs="+", default=["ethanol"],
                           help="xTB molecules: ethanol, aspirin, any ASE G2 name or a file")
    make_data.add_argument("-n", type=int, default=400, help="number of structures")
    make_data.add_argument("--seed", type=int, default=0)
    make_data.add_argument("-o", "--output", required=True, help="extxyz file to write")
    make_data.set_defaults(func=_make_data)

    from .cli_simulate import add_simulation_commands

    add_simulation_commands(commands)
    from .cli_highthroughput import add_highthroughput_commands

    add_highthroughput_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ase-mpnn`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ASEMPNNError, ValueError, ImportError) as exc:
        print(f"ase-mpnn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
