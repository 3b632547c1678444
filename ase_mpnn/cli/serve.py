"""The ``ase-mpnn serve`` command: a model as an i-PI force-field client.

    i-pi input.xml &
    ase-mpnn serve --model emt-cuni-schnet --structure init.extxyz --unix cu

The model is loaded once; the client answers every request (MD steps, path-integral beads)
with the same calculator and its Verlet-skin neighbour list, and exits with status 0 when
i-PI ends the run (``ase_mpnn.integrations.ipi``).
"""

from __future__ import annotations

import argparse
import sys

from ..loading import DEFAULT_DTYPE
from .options import device, number


def _serve(args: argparse.Namespace) -> int:
    from ..calculator import DEFAULT_SKIN, MPNNCalculator
    from ..integrations.ipi import check_species, serve
    from ..simulate import read_structure

    host, port = args.inet or ("localhost", None)
    atoms = read_structure(args.structure)
    skin = DEFAULT_SKIN if args.skin is None else args.skin
    calculator = MPNNCalculator(args.model, device=args.device, dtype=args.dtype, skin=skin)
    check_species(atoms, calculator)
    where = f"UNIX socket /tmp/ipi_{args.unix}" if args.unix else f"{host}:{port}"
    print(f"ase-mpnn serve: {calculator.parameters['model']} ({args.dtype}, "
          f"{calculator.device}) for {atoms.get_chemical_formula()}, connecting to {where}",
          flush=True)
    try:
        summary = serve(atoms, calculator, unix=args.unix, host=host, port=port,
                        connect_timeout_s=args.connect_timeout)
    except KeyboardInterrupt:
        print("ase-mpnn serve: interrupted", file=sys.stderr)
        return 130
    print(f"ase-mpnn serve: {summary.line()}", flush=True)
    return 0


def inet(text: str) -> tuple[str, int]:
    """"HOST:PORT" -> (host, port), checked as it is parsed."""
    from ..integrations.ipi import parse_inet

    try:
        return parse_inet(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(commands) -> None:
    """Add serve to the ``ase-mpnn`` sub-command parser."""
    serve = commands.add_parser(
        "serve", help="run a model as an i-PI client (path-integral MD and more in i-PI)")
    serve.add_argument("--model", required=True,
                       help="built-in model name (see `ase-mpnn models`) or .mpnn file")
    serve.add_argument("--structure", required=True,
                       help="the structure i-PI initialises from (xyz, extxyz, any file "
                            "ase.io reads): the client takes the species and their order")
    where = serve.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="NAME",
                       help="UNIX socket name, as in i-PI's <address> (file /tmp/ipi_NAME)")
    where.add_argument("--inet", metavar="HOST:PORT", type=inet,
                       help="TCP socket of i-PI (its <address> and <port>)")
    serve.add_argument("--dtype", default=DEFAULT_DTYPE, choices=["float32", "float64"],
                       help="precision (default: %(default)s)")
    serve.add_argument("--device", default="auto", type=device, help="auto, cpu or cuda")
    serve.add_argument("--skin", type=number(least=0), default=None,
                       help="Verlet skin of the neighbour list, Angstrom (default: the "
                            "calculator's, 0.5); 0 rebuilds it on every request")
    serve.add_argument("--connect-timeout", type=number(above=0), default=60.0,
                       help="seconds to keep trying while i-PI starts (default: %(default)s)")
    serve.set_defaults(func=_serve)
