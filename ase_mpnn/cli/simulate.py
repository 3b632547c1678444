"""The ``ase-mpnn relax|md|eos|phonons|vibrations`` commands: a structure file in, results
out.

Each writes into ``--out`` (default: STRUCTURE's name + the command): the final structure,
``summary.json``, a trajectory where there is one, and a PNG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..loading import DEFAULT_DTYPE
from .options import device, integer, number


def _common(parser: argparse.ArgumentParser, dtype: str = DEFAULT_DTYPE) -> None:
    parser.add_argument("structure", help="any file ase.io reads: CIF, POSCAR, extxyz, ...")
    parser.add_argument("--model", required=True,
                        help="built-in model name (see `ase-mpnn models`) or .mpnn file")
    parser.add_argument("--dtype", default=dtype, choices=["float32", "float64"],
                        help="precision (default: %(default)s)")
    parser.add_argument("--device", default="auto", type=device, help="auto, cpu or cuda")
    parser.add_argument("--out", help="output folder (default: <structure>_<command>)")


def _setup(args: argparse.Namespace, command: str):
    from ..calculator import MPNNCalculator
    from ..simulate import read_structure

    atoms = read_structure(args.structure)
    calc = MPNNCalculator(args.model, device=args.device, dtype=args.dtype)
    missing = sorted(set(atoms.get_chemical_symbols()) - set(calc.potential.species))
    if missing:
        from ..errors import UnknownElementError

        raise UnknownElementError(
            f"{args.structure} holds {', '.join(missing)}, which model {args.model} does not "
            f"cover (it knows {calc.potential.species})")
    out = Path(args.out or f"{Path(args.structure).stem}_{command}")
    out.mkdir(parents=True, exist_ok=True)
    return atoms, calc, out


def _finish(out: Path, summary: dict) -> int:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    short = {k: v for k, v in summary.items() if k not in ("log", "volumes_A3", "energies_eV")}
    print(json.dumps(short, indent=2, default=float))
    print(f"results in {out}/")
    return 0


def _plot_series(x, series: dict, xlabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(6, 2.4 * len(series)), sharex=True,
                             squeeze=False)
    for ax, (label, values) in zip(axes[:, 0], series.items()):
        ax.plot(x, values)
        ax.set_ylabel(label)
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _relax(args: argparse.Namespace) -> int:
    from ase.io import read, write

    from ..simulate import relax

    atoms, calc, out = _setup(args, "relax")
    relaxed, summary = relax(atoms, calc, fmax=args.fmax, steps=args.steps,
                             cell=not args.fixed_cell,
                             optimizer=args.optimizer, fix_symmetry=args.fix_symmetry,
                             trajectory=out / "relax.traj", max_force_std=args.max_uncertainty,
                             on_uncertain=args.on_uncertain)
    write(out / "relaxed.extxyz", relaxed, format="extxyz")
    path = read(out / "relax.traj", ":")
    _plot_series(np.arange(len(path)), {"energy (eV)": [a.get_potential_energy() for a in path]},
                 "optimizer step", out / "relax.png")
    return _finish(out, summary)


def _md(args: argparse.Namespace) -> int:
    from ase.io import write

    from ..simulate import md

    atoms, calc, out = _setup(args, "md")
    final, summary = md(atoms, calc, ensemble=args.ensemble, temperature_K=args.temperature,
                        timestep_fs=args.timestep, steps=args.steps, thermostat=args.thermostat,
                        pressure_bar=args.pressure, seed=args.seed, log_interval=args.log_interval,
                        trajectory=out / "md.extxyz", log_file=out / "md_log.csv",
                        max_force_std=args.max_uncertainty, on_uncertain=args.on_uncertain)
    write(out / "final.extxyz", final, format="extxyz")
    log = summary["log"]
    series = {"E_pot (eV)": [r["potential_eV"] for r in log],
              "E_tot (eV)": [r["total_eV"] for r in log],
              "T (K)": [r["temperature_K"] for r in log]}
    if "max_force_std" in log[0]:  # a committee
        series["max force std (eV/A)"] = [r["max_force_std"] for r in log]
    _plot_series([r["time_fs"] for r in log], series, "time (fs)", out / "md.png")
    return _finish(out, summary)


def _eos(args: argparse.Namespace) -> int:
    from ..simulate import eos

    atoms, calc, out = _setup(args, "eos")
    summary = eos(atoms, calc, strain=args.strain, points=args.points, plot=out / "eos.png")
    return _finish(out, summary)


def _phonons(args: argparse.Namespace) -> int:
    from ..simulate import phonons

    atoms, calc, out = _setup(args, "phonons")
    summary = phonons(atoms, calc, supercell=tuple(args.supercell), mesh=tuple(args.mesh),
                      displacement=args.displacement, plot=out / "phonons.png",
                      method=args.method)
    return _finish(out, summary)


def _vibrations(args: argparse.Namespace) -> int:
    from ..simulate import vibrations

    atoms, calc, out = _setup(args, "vibrations")
    data = vibrations(atoms, calc, indices=args.indices)
    data.write(str(out / "vibrations.json"))  # ase.vibrations.VibrationsData.read() reads it
    data.write_jmol(str(out / "modes.xyz"))
    frequencies = data.get_frequencies()  # cm^-1, imaginary ones complex
    # an imaginary frequency i|f| (a saddle point, an unrelaxed structure) is written -|f|
    listed = [float(f.real) if abs(f.imag) <= abs(f.real) else -float(abs(f.imag))
              for f in frequencies]
    return _finish(out, {"frequencies_cm-1": listed,
                         "imaginary_modes": int(sum(f < 0 for f in listed)),
                         "zero_point_energy_eV": float(data.get_zero_point_energy().real),
                         "atoms_vibrating": data.get_indices().tolist()})


def _uncertainty_options(parser: argparse.ArgumentParser) -> None:
    """--max-uncertainty and --on-uncertain (a committee's force spread as a guard)."""
    from ..simulate.uncertainty import ON_UNCERTAIN

    parser.add_argument("--max-uncertainty", type=number(above=0), metavar="EV_PER_A",
                        help="stop (or flag) when an atom's force std over a committee model "
                             "exceeds this, eV/A (needs a committee file)")
    parser.add_argument("--on-uncertain", default="stop", choices=ON_UNCERTAIN,
                        help="beyond --max-uncertainty: stop with an error or flag the step "
                             "and go on (default: %(default)s)")


def add_commands(commands) -> None:
    """Add relax, md, eos, phonons and vibrations to the ``ase-mpnn`` sub-command parser."""
    from ..simulate import ENSEMBLES, OPTIMIZERS
    from ..simulate.equation_of_state import MAX_EOS_STRAIN, MIN_EOS_POINTS
    from ..simulate.molecular_dynamics import MAX_TIMESTEP_FS
    from ..simulate.phonon_spectrum import METHODS

    relax = commands.add_parser("relax", help="relax positions (and the cell) of a structure")
    _common(relax)
    relax.add_argument("--fmax", type=number(above=0), default=0.01,
                       help="force tolerance, eV/A")
    relax.add_argument("--steps", type=integer(0), default=500)
    relax.add_argument("--optimizer", default="FIRE", choices=OPTIMIZERS)
    relax.add_argument("--fixed-cell", action="store_true", help="keep the cell fixed")
    relax.add_argument("--fix-symmetry", action="store_true", help="keep the space group")
    _uncertainty_options(relax)
    relax.set_defaults(func=_relax)

    md = commands.add_parser("md", help="molecular dynamics (NVE, NVT, NPT)")
    _common(md)
    md.add_argument("--ensemble", default="nvt", choices=ENSEMBLES)
    md.add_argument("--thermostat", help="nvt: langevin, bussi, nose-hoover; npt: mtk, berendsen")
    md.add_argument("--temperature", type=number(least=0), default=300.0, help="K")
    md.add_argument("--pressure", type=number(), default=1.0, help="bar (NPT)")
    md.add_argument("--timestep", type=number(above=0, most=MAX_TIMESTEP_FS), default=1.0,
                    help="fs")
    md.add_argument("--steps", type=integer(1), default=1000)
    md.add_argument("--log-interval", type=integer(1), default=10,
                    help="steps between frames/log rows")
    md.add_argument("--seed", type=integer(0), default=0)
    _uncertainty_options(md)
    md.set_defaults(func=_md)

    eos = commands.add_parser("eos", help="equation of state: V0, E0, bulk modulus")
    _common(eos, dtype="float64")  # energy differences of ~meV over a volume scan
    eos.add_argument("--strain", type=number(above=0, most=MAX_EOS_STRAIN), default=0.06,
                     help="+- lattice strain of the scan")
    eos.add_argument("--points", type=integer(MIN_EOS_POINTS), default=11)
    eos.set_defaults(func=_eos)

    phonons = commands.add_parser("phonons", help="phonon band structure and DOS (phonopy)")
    _common(phonons, dtype="float64")  # forces of 0.01 A displacements
    phonons.add_argument("--supercell", type=integer(1), nargs=3, default=[3, 3, 3])
    phonons.add_argument("--mesh", type=integer(1), nargs=3, default=[16, 16, 16])
    phonons.add_argument("--displacement", type=number(above=0, most=0.5), default=0.01,
                         help="A (method displacement)")
    phonons.add_argument("--method", default="displacement", choices=METHODS,
                         help="force constants from displaced supercells or from one Hessian "
                              "of the supercell (default: %(default)s)")
    phonons.set_defaults(func=_phonons)

    vibrations = commands.add_parser(
        "vibrations", help="vibrational frequencies (cm^-1) and modes from one Hessian")
    _common(vibrations, dtype="float64")
    vibrations.add_argument("--indices", type=integer(0), nargs="+", metavar="I",
                            help="the atoms that vibrate (default: all); the others stay fixed")
    vibrations.set_defaults(func=_vibrations)
