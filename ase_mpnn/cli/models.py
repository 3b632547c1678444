"""``ase-mpnn info|models|new``: model files and the built-in models."""

from __future__ import annotations

import argparse
import json

from .options import integer, json_object, number


def _info(args: argparse.Namespace) -> int:
    from ..loading import model_file_path
    from ..modelfile import read_manifest

    print(json.dumps(read_manifest(model_file_path(args.model)), indent=2, sort_keys=True))
    return 0


def _models(args: argparse.Namespace) -> int:
    from ..modelfile import read_manifest
    from ..pretrained import list_models, model_path

    names = list_models()
    if not names:
        print("no built-in models in this installation")
        return 0
    print(f"{'name':28s}{'architecture':>24s}{'params':>9s}{'E MAE meV/at':>14s}"
          f"{'F MAE meV/A':>13s}{'S MAE meV/A3':>14s}  {'elements':12s}{'inputs'}")
    for name in names:
        manifest = read_manifest(model_path(name))
        test = manifest.get("test_metrics", {})

        def milli(key: str, test: dict = test) -> str:
            return f"{1e3 * test[key]:.2f}" if key in test else "-"

        print(f"{name:28s}{manifest['architecture']:>24s}{manifest['n_parameters']:>9d}"
              f"{milli('energy_mae'):>14s}{milli('forces_mae'):>13s}{milli('stress_mae'):>14s}"
              f"  {' '.join(manifest['species']):12s}{_inputs(manifest)}")
    return 0


def _inputs(manifest: dict) -> str:
    """What the model reads besides the structure: its global inputs (total charge, spin)
    and the D3 term it adds back, e.g. "charge, spin" or "+D3(pbe)"; "-" for none."""
    found = list(manifest.get("hyperparameters", {}).get("global_inputs", []))
    dispersion = manifest.get("dispersion")
    if isinstance(dispersion, dict) and dispersion.get("subtracted"):
        found.append(f"+D3({dispersion.get('functional')})")
    return ", ".join(found) or "-"


def _new(args: argparse.Namespace) -> int:
    import torch

    from ..modelfile import save_model
    from ..models import build_model

    torch.manual_seed(args.seed)
    hyper = args.hyperparameters or {}
    model = build_model(args.architecture, args.species, args.cutoff, **hyper)
    path = save_model(model, args.output)
    print(f"wrote {path}: {args.architecture} with random weights, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    return 0


def add_commands(commands) -> None:
    """Add info, models and new to the ``ase-mpnn`` sub-command parser."""
    info = commands.add_parser("info", help="print a model file's manifest")
    info.add_argument("model", help="path of a .mpnn model file or a built-in model's name")
    info.set_defaults(func=_info)

    models = commands.add_parser("models", help="list the built-in models and their test errors")
    models.set_defaults(func=_models)

    new = commands.add_parser("new", help="write a model file with random weights")
    new.add_argument("architecture", help="architecture name, e.g. SchNet")
    new.add_argument("--species", nargs="+", required=True, help="element symbols, e.g. Cu Ni")
    new.add_argument("--cutoff", type=number(above=0, most=100), default=5.0,
                     help="cutoff radius in Angstrom")
    new.add_argument("--hyperparameters", type=json_object,
                     help='JSON, e.g. \'{"n_features": 128}\'')
    new.add_argument("--seed", type=integer(0), default=0)
    new.add_argument("-o", "--output", required=True, help="model file to write")
    new.set_defaults(func=_new)
