"""``ase-mpnn compile``: a model as one AOTInductor program (energy, forces, stress);
``ase-mpnn kernels``: the native kernels' state, and their one-off build."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import device


def _compile(args: argparse.Namespace) -> int:
    from ..compiled import read_compiled_manifest
    from ..compiled_check import compile_checked
    from ..loading import load

    loaded = load(args.model, args.device, args.dtype)
    path = compile_checked(loaded.potential, args.output, model_name=loaded.name,
                           model_sha256=loaded.sha256)
    manifest = read_compiled_manifest(path)
    size = Path(path).stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB, {manifest['dtype']} on {manifest['device']}, torch "
          f"{manifest['torch_version']}, compiled in {manifest['compile_seconds']} s): use it "
          f"as MPNNCalculator({str(path)!r}, dtype={manifest['dtype']!r})")
    return 0


def _kernels(args: argparse.Namespace) -> int:
    import time

    from .. import native

    if args.build:
        start = time.perf_counter()
        path = native.build(verbose=args.verbose)
        print(f"built {path} in {time.perf_counter() - start:.0f} s (reused when up to date)")
    for name, value in native.status().items():
        print(f"{name:8s} {value}")
    return 0


def add_commands(commands) -> None:
    """Add compile and kernels to the ``ase-mpnn`` sub-command parser."""
    sub = commands.add_parser(
        "compile", help="compile a model's energy, forces and stress with AOTInductor (.pt2)")
    sub.add_argument("model", help="path of a .mpnn model file or a built-in model's name")
    sub.add_argument("-o", "--output", required=True, help="the .pt2 file to write")
    sub.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                     help="precision it is compiled for (default: %(default)s)")
    sub.add_argument("--device", default="cpu", type=device,
                     help="cpu or cuda[:n] (default: %(default)s)")
    sub.set_defaults(func=_compile)

    kernels = commands.add_parser(
        "kernels", help="show (or --build) the native CPU kernels of SchNet-like models")
    kernels.add_argument("--build", action="store_true",
                         help="build them for this machine and torch (about 20 s, once)")
    kernels.add_argument("--verbose", action="store_true", help="show the compiler's commands")
    kernels.set_defaults(func=_kernels)
