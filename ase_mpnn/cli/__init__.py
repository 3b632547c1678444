"""The ``ase-mpnn`` command line: one module per family of sub-commands."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .._version import __version__
from ..errors import ASEMPNNError
from . import batch, compiled, engines, learn, models, serve, simulate, training
from .options import OneLineParser, integer


def _demo(args: argparse.Namespace) -> int:
    from ..demo import print_summary, run_demo

    print_summary(run_demo(args.out, model=args.model, md_steps=args.md_steps, seed=args.seed))
    print(f"files written to {args.out}/ (relax.traj, md.traj, md_energy.png, summary.json)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ase-mpnn`` and its sub-commands."""
    parser = OneLineParser(
        prog="ase-mpnn", description="Message-passing neural-network potentials for ASE."
    )
    parser.add_argument("--version", action="version", version=f"ase-mpnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="relax a Cu-Ni cell, run MD, compare with EMT")
    demo.add_argument("--model", help="model name or file (default: the best built-in EMT model)")
    demo.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--md-steps", type=integer(1), default=200, help="NVE steps of 1 fs")
    demo.add_argument("--seed", type=integer(0), default=0)
    demo.set_defaults(func=_demo)

    for family in (models, training, learn, simulate, batch, serve, engines, compiled):
        family.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ase-mpnn`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ASEMPNNError, ValueError, ImportError, OSError) as exc:
        print(f"ase-mpnn {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        if os.environ.get("ASE_MPNN_DEBUG"):
            raise
        print(f"ase-mpnn {args.command}: internal error: {type(exc).__name__}: "
              f"{_one_line(exc)} (set ASE_MPNN_DEBUG=1 for the traceback, and please report "
              "it)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (OSError's strerror and file name included)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
