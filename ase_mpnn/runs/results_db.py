"""Results database: one ase.db row per finished input structure, written as it finishes.

An ase.db (SQLite file by default; a ``postgresql://`` URL works the same) writes each row
in its own transaction, so a killed run keeps every row written before it died and never a
half-written one. A row is found again by its input_id, structure_sha and run_key (see
``ase_mpnn.runs.inputs``): rerunning skips what is done. Only the
process that owns the database (the client) writes it; workers return results to it.

Columns (key-value pairs): input_id, structure_sha, run_key, task, status ("ok" or
"failed"), error, converged, steps, seconds, model, model_sha256, package, energy_per_atom
(eV/atom) and, for a committee model, max_force_std (eV/A) and energy_std_per_atom
(eV/atom); the structure (relaxed or final) with its energy, forces and stress as the row's
calculator results.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import ase.db
import numpy as np
from ase import Atoms

from ..errors import ASEMPNNError

#: key-value pairs every row gets (ase.db keeps them as searchable columns)
COLUMNS = ("input_id", "structure_sha", "run_key", "task", "status", "error", "converged",
           "steps", "seconds", "model", "model_sha256", "package", "energy_per_atom")


class ResultsDB:
    """Append-only store of finished structures, keyed by input_id."""

    def __init__(self, url: str | os.PathLike, *, writable: bool = True):
        self.url = str(url)
        if "://" not in self.url and writable:
            _check_writable(Path(self.url))
        try:
            self.db = ase.db.connect(self.url, append=True)
            self.db.count()  # opens (and for a new file creates) the database now
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise ASEMPNNError(f"cannot open the results database {self.url}: "
                               f"{type(exc).__name__}: {exc}") from exc

    def done_keys(self, run_key: str) -> set[tuple[str, str]]:
        """(input_id, structure_sha) of the rows stored under ``run_key``, failed included."""
        return {(row.input_id, row.get("structure_sha")) for row in
                self.db.select(run_key=run_key)}

    def forget_failed(self) -> int:
        """Delete the rows of failed structures (to run them again); returns how many."""
        ids = [row.id for row in self.db.select("status=failed")]
        self.db.delete(ids)
        return len(ids)

    def write(self, input_id: str, task: str, outcome: dict[str, Any], meta: dict[str, Any],
              structure_sha: str = "") -> int:
        """Store one finished structure; returns the row id.

        ``outcome``: ``atoms`` (with results attached, or the input on failure), ``steps``,
        ``converged``, ``seconds`` and, on failure, ``error``. ``meta``: run_key, model,
        model_sha256, package. ``structure_sha``: of the input structure.
        """
        atoms = outcome["atoms"]
        error = outcome.get("error")
        pairs = {"input_id": str(input_id), "structure_sha": structure_sha, "task": task,
                 "status": "failed" if error else "ok",
                 "error": str(error or "")[:2000], "converged": bool(outcome.get("converged")),
                 "steps": int(outcome.get("steps", 0)),
                 "seconds": float(outcome.get("seconds", 0.0)), **meta}
        if not error and "energy" in outcome:
            pairs["energy_per_atom"] = float(outcome["energy"]) / max(len(atoms), 1)
        if not error:
            pairs.update(_uncertainty(outcome, len(atoms)))
        if error:  # keep the input geometry, never stale results
            atoms = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        return self.db.write(atoms, key_value_pairs=pairs)

    def rows(self, query: str = "") -> Iterator[Any]:
        return self.db.select(query)

    def __len__(self) -> int:
        return self.db.count()


def _uncertainty(outcome: dict[str, Any], n_atoms: int) -> dict[str, float]:
    """A committee's spread as row keys: ``max_force_std`` (eV/A, the largest per-atom force
    std) and ``energy_std_per_atom`` (eV/atom); none for a single model."""
    pairs = {}
    if outcome.get("max_force_std") is not None:
        pairs["max_force_std"] = float(outcome["max_force_std"])
    elif outcome.get("forces_std") is not None and len(outcome["forces_std"]):
        pairs["max_force_std"] = float(np.max(outcome["forces_std"]))
    if outcome.get("energy_std") is not None:
        pairs["energy_std_per_atom"] = float(outcome["energy_std"]) / max(n_atoms, 1)
    return pairs


def _check_writable(path: Path) -> None:
    """Raise ASEMPNNError now, before any compute, when ``path`` cannot be written."""
    if path.is_dir():
        raise ASEMPNNError(f"the results database {path} is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ASEMPNNError(f"cannot create the folder of the results database {path}: "
                           f"{exc.strerror or exc}") from exc
    # SQLite writes a journal next to the file, so the folder must be writable too
    for place in ([path] if path.exists() else []) + [path.parent]:
        if not os.access(place, os.W_OK):
            raise ASEMPNNError(f"cannot write the results database {path}: {place} is not "
                               "writable")


def summary(db: ResultsDB) -> dict[str, Any]:
    """Counts, energy-per-atom and step statistics of a results database."""
    rows = list(db.rows())
    foreign = [r.id for r in rows if "input_id" not in r or "status" not in r]
    if foreign:
        raise ASEMPNNError(f"{db.url} is an ase.db but not a results database of `ase-mpnn "
                           f"run`: row(s) {foreign[:5]} have no input_id and status")
    ok = [r for r in rows if r.status == "ok"]
    energies = np.array([r.energy_per_atom for r in ok if "energy_per_atom" in r])
    steps = np.array([r.steps for r in ok])
    seconds = np.array([r.seconds for r in ok])
    return {
        "structures": len(rows), "ok": len(ok), "failed": len(rows) - len(ok),
        "converged": sum(bool(r.converged) for r in ok),
        "models": sorted({r.model for r in rows}), "tasks": sorted({r.task for r in rows}),
        "energy_per_atom": energies, "steps": steps, "seconds": seconds,
        "errors": [(r.input_id, r.error) for r in rows if r.status == "failed"],
    }
