"""The report of an active-learning run: one row per round (``report.csv``,
``report.json``) and a plot (``active_learning.png``).

Row r describes committee r (r = 0: the starting committee; r > 0: after r fine-tunings):
its errors on the fixed test set, and what its exploration in round r found and sent to
the reference (the frames that trained committee r + 1).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from ...calculator import MPNNCalculator
from ...modelfile import atomic_write_bytes
from ..samples import read_samples
from .files import write_json, write_text

#: the report's columns: energies meV/atom, forces and their std meV/A or eV/A, time min
COLUMNS = ("round", "new_frames", "reference_calls", "failures", "total_reference_calls",
           "total_new_frames", "explored_frames", "blowups", "max_std_eV_per_A",
           "fraction_above_threshold", "test_energy_mae_meV_per_atom",
           "test_forces_mae_meV_per_A", "test_mean_forces_std_meV_per_A", "minutes")
REPORT_CSV, REPORT_JSON, REPORT_PNG = "report.csv", "report.json", "active_learning.png"


def test_errors(committee: str | Path, paths: Sequence[str], keys: dict[str, str],
                dtype: str = "float32", progress: bool = True) -> dict[str, float]:
    """The committee mean's energy MAE (meV/atom) and force MAE (meV/A) on the labelled
    frames of ``paths``, and its mean predicted per-atom force std there (meV/A); {} with no
    test files."""
    if not paths:
        return {}
    calc = MPNNCalculator(str(committee), device="cpu", dtype=dtype)
    energy, forces, stds = [], [], []
    for sample in tqdm(read_samples(list(paths), keys, require_forces=False), unit="frame",
                       desc="test set", disable=not progress):
        atoms = sample.atoms.copy()
        atoms.calc = calc
        if sample.energy is not None:
            energy.append(abs(atoms.get_potential_energy() - sample.energy) / len(atoms))
        if sample.forces is not None:
            forces.append(np.abs(atoms.get_forces() - sample.forces).ravel())
        stds.append(calc.get_property("forces_std", atoms))
    result = {"test_mean_forces_std_meV_per_A": 1000 * float(np.mean(np.concatenate(stds)))}
    if energy:
        result["test_energy_mae_meV_per_atom"] = 1000 * float(np.mean(energy))
    if forces:
        result["test_forces_mae_meV_per_A"] = 1000 * float(np.mean(np.concatenate(forces)))
    return result


def write_report(output: Path, rows: Sequence[dict[str, Any]], extra: dict[str, Any],
                 threshold: float) -> None:
    """report.csv, report.json (``extra`` plus the rows) and the PNG, each atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _rounded(row.get(k)) for k in COLUMNS})
    write_text(output / REPORT_CSV, buffer.getvalue())
    write_json(output / REPORT_JSON, {**extra, "rows": list(rows)})
    plot(rows, output / REPORT_PNG, threshold)


def _rounded(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else ("" if value is None else value)


def plot(rows: Sequence[dict[str, Any]], path: Path, threshold: float) -> None:
    """Test force MAE (left) and the largest explored and mean test force std (right)
    against the round, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [row["round"] for row in rows]

    def column(name: str, scale: float = 1.0) -> list[float]:
        return [np.nan if row.get(name) is None else scale * row[name] for row in rows]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(rounds, column("test_forces_mae_meV_per_A"), "o-")
    left.set_ylabel("test force MAE (meV/A)")
    right.semilogy(rounds, column("max_std_eV_per_A", 1000), "o-",
                   label="largest std, explored frames")
    right.semilogy(rounds, column("test_mean_forces_std_meV_per_A"), "s-",
                   label="mean std, test frames")
    right.axhline(1000 * threshold, color="grey", ls="--", label="threshold")
    right.set_ylabel("per-atom force std (meV/A)")
    right.legend()
    for ax in (left, right):
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
