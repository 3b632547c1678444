"""What an MD run records as it goes: log rows, a CSV log and trajectory frames.

Everything is written line by line or frame by frame, so a run that stops early (a blow-up)
keeps what it wrote. Units: fs, eV, K, GPa.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import Trajectory, write


def log_row(atoms: Atoms, time_fs: float) -> dict[str, float]:
    """Time (fs), potential, kinetic and total energy (eV), temperature (K) and, for cells
    periodic in 3-D, pressure (GPa, ideal-gas term included)."""
    epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
    row = {"time_fs": time_fs, "potential_eV": epot, "kinetic_eV": ekin, "total_eV": epot + ekin,
           "temperature_K": atoms.get_temperature()}
    if atoms.pbc.all():
        stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
        row["pressure_GPa"] = float(-np.trace(stress) / 3 / units.GPa)
    return row


def append_csv(path: str | Path | None, row: dict[str, float], header: bool) -> None:
    """Append ``row`` to the CSV file ``path`` (nothing when None); ``header`` starts it anew."""
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

    def write(self, atoms: Atoms) -> None:
        """Append ``atoms`` as the next frame."""
        if self._trajectory is not None:
            self._trajectory.write(atoms)
        elif self.path is not None:
            write(self.path, atoms, format="extxyz", append=True)

    def close(self) -> None:
        """Close the trajectory file (frames are already on disk)."""
        if self._trajectory is not None:
            self._trajectory.close()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
