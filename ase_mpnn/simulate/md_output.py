"""What an MD run records as it goes: log rows, a CSV log and trajectory frames.

Everything is written line by line or frame by frame, so a run that stops early (a blow-up,
an uncertain step) keeps what it wrote. Units: fs, eV, K, GPa, eV/A (force std).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.io import Trajectory, write


def log_row(atoms: Atoms, time_fs: float,
            extra: dict[str, float] | None = None) -> dict[str, float]:
    """Time (fs), potential, kinetic and total energy (eV), temperature (K), for cells
    periodic in 3-D pressure (GPa, ideal-gas term included), then the ``extra`` columns
    (e.g. a committee's max_force_std eV/A, uncertain_atom, uncertain)."""
    epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
    row = {"time_fs": time_fs, "potential_eV": epot, "kinetic_eV": ekin, "total_eV": epot + ekin,
           "temperature_K": atoms.get_temperature()}
    if atoms.pbc.all():
        stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
        row["pressure_GPa"] = float(-np.trace(stress) / 3 / units.GPa)
    row.update(extra or {})
    return row


def append_csv(path: str | Path | None, row: dict[str, float], header: bool) -> None:
    """Append ``row`` to the CSV file ``path`` (nothing when None); ``header`` starts it anew.
    Booleans are written as 1 and 0."""
    if path is None:
        return
    with open(path, "w" if header else "a") as handle:
        if header:
            handle.write(",".join(row) + "\n")
        handle.write(",".join(f"{value:.10g}" for value in row.values()) + "\n")


class FrameWriter:
    """Writes frames to ``path`` as they come: an ASE Trajectory for .traj, extxyz otherwise.

    With ``path=None`` it writes nothing. An existing extxyz file is replaced. Use as a
    context manager, or call ``close`` when done.
    """

    def __init__(self, path: str | Path | None, atoms: Atoms) -> None:
        self.path = None if path is None else Path(path)
        self._trajectory: Trajectory | None = None
        if self.path is not None and self.path.suffix == ".traj":
            self._trajectory = Trajectory(self.path, "w", atoms)
        elif self.path is not None:
            self.path.unlink(missing_ok=True)

    def write(self, atoms: Atoms, info: dict[str, Any] | None = None,
              per_atom: dict[str, np.ndarray] | None = None) -> None:
        """Append ``atoms`` as the next frame, with its calculator's results, ``info``
        (scalars, into the frame's atoms.info) and ``per_atom`` arrays ((n_atoms, ...) each:
        atoms.arrays in extxyz; atoms.info in a .traj, as ASE's Trajectory keeps no extra
        per-atom arrays but does keep info, numpy arrays included)."""
        if self.path is None:
            return
        frame = _frame(atoms, info or {}, per_atom or {}, self._trajectory is not None)
        if self._trajectory is not None:
            self._trajectory.write(frame)
        else:
            write(self.path, frame, format="extxyz", append=True)

    def close(self) -> None:
        """Close the trajectory file (frames are already on disk)."""
        if self._trajectory is not None:
            self._trajectory.close()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _frame(atoms: Atoms, info: dict[str, Any], per_atom: dict[str, np.ndarray],
           per_atom_in_info: bool) -> Atoms:
    """``atoms`` itself when there is nothing to add, else a copy holding ``info`` and
    ``per_atom`` and sharing the calculator (whose results are this geometry's, so the
    writers read them, and its provenance, without a new evaluation)."""
    if not info and not per_atom:
        return atoms
    frame = atoms.copy()
    frame.calc = atoms.calc
    frame.info.update(info)
    for name, values in per_atom.items():
        if per_atom_in_info:
            frame.info[name] = np.asarray(values)
        else:
            frame.set_array(name, np.asarray(values))
    return frame


class MDRecord:
    """The log rows of a run (kept, and appended to ``log_file`` as CSV) and its frames
    (to ``frames``), one call per recorded step."""

    def __init__(self, frames: FrameWriter, log_file: str | Path | None) -> None:
        self.frames, self.log_file = frames, log_file
        self.rows: list[dict[str, float]] = []

    def add(self, atoms: Atoms, time_fs: float, fields: dict[str, Any],
            per_atom: dict[str, np.ndarray]) -> None:
        """Record ``atoms`` at ``time_fs`` (fs): a log row with the ``fields`` columns, and a
        frame with ``fields`` in its info and the ``per_atom`` arrays."""
        self.rows.append(log_row(atoms, time_fs, fields))
        self.frames.write(atoms, fields, per_atom)
        append_csv(self.log_file, self.rows[-1], header=len(self.rows) == 1)
