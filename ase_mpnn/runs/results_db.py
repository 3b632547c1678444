"""Results database: one ase.db row per finished input structure, written as it finishes.

An ase.db (SQLite file by default; a ``postgresql://`` URL works the same) writes each row
in its own transaction, so a killed run keeps every row written before it died and never a
half-written one. Rows are keyed by ``input_id``: rerunning skips what is done. Only the
process that owns the database (the client) writes it; workers return results to it.

Columns (key-value pairs): input_id, task, status ("ok" or "failed"), error, converged,
steps, seconds, model, model_sha256, package, energy_per_atom (eV/atom); the structure
(relaxed or final) with its energy, forces and stress as the row's calculator results.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import ase.db
import numpy as np
from ase import Atoms
from ase.io import read

from ..errors import ASEMPNNError

#: key-value pairs every row gets (ase.db keeps them as searchable columns)
COLUMNS = ("input_id", "task", "status", "error", "converged", "steps", "seconds", "model",
           "model_sha256", "package", "energy_per_atom")


def read_inputs(paths: Sequence[str | os.PathLike]) -> list[tuple[str, Atoms]]:
    """(input_id, Atoms) for every frame of every file ase.io can read.

    The id is the frame's ``info["input_id"]`` when present, else ``"<file name>:<index>"``.
    Duplicate ids are an error (they would make "done" ambiguous).
    """
    items: list[tuple[str, Atoms]] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ASEMPNNError(f"input file {path} does not exist")
        try:
            frames = read(path, index=":")
        except Exception as exc:  # ase.io raises many types for unreadable files
            raise ASEMPNNError(f"cannot read structures from {path}: {exc}") from exc
        for k, atoms in enumerate(frames):
            items.append((str(atoms.info.get("input_id", f"{path.name}:{k}")), atoms))
    duplicates = sorted(i for i, n in Counter(i for i, _ in items).items() if n > 1)
    if duplicates:
        raise ASEMPNNError(f"input ids must be unique; repeated: {duplicates[:5]}")
    return items


class ResultsDB:
    """Append-only store of finished structures, keyed by input_id."""

    def __init__(self, url: str | os.PathLike):
        self.url = str(url)
        if "://" not in self.url:
            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
        self.db = ase.db.connect(self.url, append=True)

    def done_ids(self) -> set[str]:
        """input_ids already stored, failed ones included."""
        return {row.input_id for row in self.db.select()}

    def forget_failed(self) -> int:
        """Delete the rows of failed structures (to run them again); returns how many."""
        ids = [row.id for row in self.db.select("status=failed")]
        self.db.delete(ids)
        return len(ids)

    def write(self, input_id: str, task: str, outcome: dict[str, Any], meta: dict[str, Any]) -> int:
        """Store one finished structure; returns the row id.

        ``outcome``: ``atoms`` (with results attached, or the input on failure), ``steps``,
        ``converged``, ``seconds`` and, on failure, ``error``. ``meta``: model, model_sha256,
        package.
        """
        atoms = outcome["atoms"]
        error = outcome.get("error")
        pairs = {"input_id": str(input_id), "task": task, "status": "failed" if error else "ok",
                 "error": str(error or "")[:2000], "converged": bool(outcome.get("converged")),
                 "steps": int(outcome.get("steps", 0)),
                 "seconds": float(outcome.get("seconds", 0.0)), **meta}
        if not error and "energy" in outcome:
            pairs["energy_per_atom"] = float(outcome["energy"]) / max(len(atoms), 1)
        if error:  # keep the input geometry, never stale results
            atoms = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        return self.db.write(atoms, key_value_pairs=pairs)

    def rows(self, query: str = "") -> Iterator[Any]:
        return self.db.select(query)

    def __len__(self) -> int:
        return self.db.count()


def summary(db: ResultsDB) -> dict[str, Any]:
    """Counts, energy-per-atom and step statistics of a results database."""
    rows = list(db.rows())
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
