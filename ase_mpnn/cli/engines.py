"""``ase-mpnn export-lammps``: a model for other MD engines."""

from __future__ import annotations

import argparse


def _export_lammps(args: argparse.Namespace) -> int:
    from ..integrations.lammps import export_lammps

    path = export_lammps(args.model, args.output, dtype=args.dtype, device=args.device)
    print(f"wrote {path}: load it with 'pair_style mliap unified {path} 0' and "
          f"'pair_coeff * * <element of each LAMMPS type>' (needs LAMMPS with ML-IAP's "
          "Python coupling; see the README's LAMMPS section)")
    return 0


def add_commands(commands) -> None:
    """Add export-lammps to the ``ase-mpnn`` sub-command parser."""
    export = commands.add_parser(
        "export-lammps", help="write a model for LAMMPS's pair_style mliap unified")
    export.add_argument("model", help="path of a .mpnn model file or a built-in model's name")
    export.add_argument("-o", "--output", required=True,
                        help="file to write (.pt/.pth: torch.save, else pickle, as LAMMPS "
                             "reads them)")
    export.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="precision the model runs in inside LAMMPS (default: %(default)s)")
    export.add_argument("--device", default="cpu", help="cpu or cuda[:n] (default: %(default)s)")
    export.set_defaults(func=_export_lammps)
