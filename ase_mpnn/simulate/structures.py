"""Structures in, structures ready to simulate: reading files, attaching the calculator.

Structures may be ase.Atoms or pymatgen Structures. SimulationError is what a simulation
raises when it blows up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.io import read

from ..errors import ASEMPNNError, exception_reason
from ..graph import to_atoms


class SimulationError(ASEMPNNError, RuntimeError):
    """A simulation blew up (NaN energy, runaway temperature, atoms collapsing)."""


def read_structure(path: str | Path) -> Atoms:
    """The (last) structure in any file ase.io reads, with a clear error when it cannot."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give one structure file (`ase-mpnn run` takes "
                         "folders)")
    if not path.is_file():
        raise ValueError(f"structure file {path} does not exist")
    try:
        atoms = read(path)
    except Exception as exc:  # ase raises many types for unreadable files
        raise ValueError(f"cannot read a structure from {path}: "
                         f"{exception_reason(exc)}") from exc
    if len(atoms) == 0:
        raise ValueError(f"{path} holds a structure with no atoms")
    return atoms


def prepare(structure: Any, calc: Calculator) -> Atoms:
    """A copy of ``structure`` as Atoms with ``calc`` attached and its energy (eV) computed.

    Computing the energy up front makes bad elements or geometry fail here, before any
    optimizer or integrator step. Raises ValueError for a structure with no atoms.
    """
    atoms = to_atoms(structure).copy()
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    atoms.calc = calc
    atoms.get_potential_energy()
    return atoms
