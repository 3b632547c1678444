"""The ``ase-mpnn`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import ASEMPNNError


def _demo(args: argparse.Namespace) -> int:
    from .demo import print_summary, run_demo

    print_summary(run_demo(args.out, md_steps=args.md_steps, seed=args.seed))
    print(f"files written to {args.out}/ (model, relax.traj, md.traj, md_energy.png, summary.json)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .io import read_manifest

    print(json.dumps(read_manifest(args.model), indent=2, sort_keys=True))
    return 0


def _new(args: argparse.Namespace) -> int:
    import torch

    from .io import save_model
    from .models import architecture_class

    torch.manual_seed(args.seed)
    hyper = json.loads(args.hyperparameters) if args.hyperparameters else {}
    model = architecture_class(args.architecture)(args.species, args.cutoff, **hyper)
    path = save_model(model, args.output)
    print(f"wrote {path}: {args.architecture} with random weights, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ase-mpnn`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="ase-mpnn", description="Message-passing neural-network potentials for ASE."
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"ase-mpnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="relax and run MD on a small Cu cell")
    demo.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--md-steps", type=int, default=200, help="NVE steps of 1 fs")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    info = commands.add_parser("info", help="print a model file's manifest")
    info.add_argument("model", help="path of a .mpnn model file")
    info.set_defaults(func=_info)

    new = commands.add_parser("new", help="write a model file with random weights")
    new.add_argument("architecture", help="architecture name, e.g. SchNet")
    new.add_argument("--species", nargs="+", required=True, help="element symbols, e.g. Cu Ni")
    new.add_argument("--cutoff", type=float, default=5.0, help="cutoff radius in Angstrom")
    new.add_argument("--hyperparameters", help='JSON, e.g. \'{"n_features": 128}\'')
    new.add_argument("--seed", type=int, default=0)
    new.add_argument("-o", "--output", required=True, help="model file to write")
    new.set_defaults(func=_new)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ase-mpnn`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ASEMPNNError, ValueError) as exc:
        print(f"ase-mpnn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
