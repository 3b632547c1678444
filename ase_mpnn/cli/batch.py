"""``ase-mpnn run static|relax|md INPUTS --db results.db`` and ``ase-mpnn report results.db``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..loading import DEFAULT_DTYPE
from .options import device, integer, number


def _run(args: argparse.Namespace) -> int:
    from ..runs import run

    options: dict = {}
    if args.task == "relax":
        options = {"fmax": args.fmax, "steps": args.steps, "cell_filter": not args.fixed_cell}
    elif args.task == "md":
        options = {"ensemble": args.ensemble, "temperature_K": args.temperature,
                   "timestep_fs": args.timestep, "steps": args.steps}
    counts = run(args.task, args.inputs, args.db, args.model, workers=args.workers,
                 scheduler=args.scheduler, threads=args.threads_per_worker,
                 chunk_size=args.chunk_size, options=options, dtype=args.dtype,
                 device=args.device, retry_failed=args.retry_failed)
    print(f"{counts['inputs']} inputs: {counts['skipped']} already in {args.db}, "
          f"{counts['ok']} done now, {counts['failed']} failed")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..runs import ResultsDB, summary

    if "://" not in args.db and not Path(args.db).is_file():
        raise ValueError(f"no results database at {args.db}")
    stats = summary(ResultsDB(args.db, writable=False))
    print(format_report(stats, args.db))
    if stats["ok"]:
        plot = Path(args.plot or Path(args.db).with_suffix(".png"))
        report_plot(stats, plot)
        print(f"plot: {plot}")
    return 0


def format_report(stats: dict, name: str) -> str:
    """A plain-text summary table of a results database."""
    e, steps, seconds = stats["energy_per_atom"], stats["steps"], stats["seconds"]
    lines = [f"{name}: {stats['structures']} structures ({', '.join(stats['tasks'])}), "
             f"model {', '.join(stats['models'])}",
             f"  {'ok':<22}{stats['ok']:>10d}", f"  {'failed':<22}{stats['failed']:>10d}",
             f"  {'converged':<22}{stats['converged']:>10d}"]
    if len(e):
        lines += [f"  {'energy/atom min (eV)':<22}{e.min():>10.4f}",
                  f"  {'energy/atom mean (eV)':<22}{e.mean():>10.4f}",
                  f"  {'energy/atom max (eV)':<22}{e.max():>10.4f}",
                  f"  {'steps mean / max':<22}{steps.mean():>10.1f} / {steps.max()}",
                  f"  {'seconds per structure':<22}{seconds.mean():>10.3f}"]
    for input_id, error in stats["errors"][:10]:
        lines.append(f"  failed {input_id}: {error[:100]}")
    return "\n".join(lines)


def report_plot(stats: dict, path: Path) -> None:
    """Histograms of energy per atom and of relaxation steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.hist(stats["energy_per_atom"], bins=30, color="tab:blue")
    left.set_xlabel("energy per atom (eV)")
    left.set_ylabel("structures")
    right.hist(stats["steps"], bins=np.arange(stats["steps"].max() + 2) - 0.5
               if stats["steps"].max() < 30 else 30, color="tab:orange")
    right.set_xlabel("optimizer / MD steps")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_commands(commands) -> None:
    """Add ``run`` and ``report`` to the ``ase-mpnn`` sub-command parser."""
    from ..simulate import ENSEMBLES
    from ..simulate.molecular_dynamics import MAX_TIMESTEP_FS

    run = commands.add_parser("run", help="static/relax/md on many structures into a results db")
    run.add_argument("task", choices=["static", "relax", "md"])
    run.add_argument("inputs", nargs="+", help="structure files (every frame is one input)")
    run.add_argument("--db", required=True, help="results database: SQLite file or URL")
    run.add_argument("--model", required=True, help="built-in model name or .mpnn file")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=integer(0), default=2,
                       help="local Dask worker processes; 0 runs here without Dask")
    where.add_argument("--scheduler", help="address of a running Dask scheduler")
    run.add_argument("--threads-per-worker", type=integer(1), default=1, help="torch threads each")
    run.add_argument("--chunk-size", type=integer(1), default=16,
                     help="structures per Dask task")
    run.add_argument("--dtype", default=DEFAULT_DTYPE, choices=["float32", "float64"])
    run.add_argument("--device", default="auto", type=device)
    run.add_argument("--retry-failed", action="store_true", help="run failed structures again")
    run.add_argument("--fmax", type=number(above=0), default=0.05,
                     help="relax: force tolerance, eV/A")
    run.add_argument("--steps", type=integer(1), default=None,
                     help="relax: max steps; md: steps")
    run.add_argument("--fixed-cell", action="store_true", help="relax: keep the cell")
    run.add_argument("--ensemble", default="nvt", choices=ENSEMBLES, help="md ensemble")
    run.add_argument("--temperature", type=number(least=0), default=300.0, help="md: K")
    run.add_argument("--timestep", type=number(above=0, most=MAX_TIMESTEP_FS), default=1.0,
                     help="md: fs")
    run.set_defaults(func=_run_with_defaults)

    report = commands.add_parser("report", help="summary table and plot of a results db")
    report.add_argument("db")
    report.add_argument("--plot", help="PNG path (default: the db's name with .png)")
    report.set_defaults(func=_report)


def _run_with_defaults(args: argparse.Namespace) -> int:
    if args.steps is None:
        args.steps = 500 if args.task == "relax" else 100
    return _run(args)
