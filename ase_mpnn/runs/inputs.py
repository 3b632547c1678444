"""The inputs of ``ase-mpnn run``: structure files (or folders of them) -> identified frames.

Every frame gets an ``input_id`` (its ``info["input_id"]`` when set, else ``"<path as
given>:<frame index>"``, so ``s1/POSCAR`` and ``s2/POSCAR`` differ) and a
``structure_sha`` of its content (elements, positions, cell, periodicity). A rerun skips
a frame only when the database holds a row with the same id, the same content and the
same run key (task, its options, model weights, dtype): new structures under an old name,
another task or another model are always computed.

A file that cannot be read does not stop the run: it becomes an ``UnreadableInput``,
stored as a failed row with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
from ase import Atoms
from ase.io import read

from ..errors import ASEMPNNError, exception_reason

#: file names a folder given as input is searched for (besides POSCAR/CONTCAR-like names)
STRUCTURE_SUFFIXES = (".cif", ".xyz", ".extxyz", ".vasp", ".poscar", ".traj", ".xsf", ".pdb",
                      ".json", ".db", ".res", ".gen", ".cell", ".in", ".mol", ".sdf")
_VASP_NAMES = ("POSCAR", "CONTCAR")


class InputFrame(NamedTuple):
    """One structure to run: its id, content hash and Atoms."""

    input_id: str
    structure_sha: str
    atoms: Atoms


class UnreadableInput(NamedTuple):
    """A file that ase.io could not read, with the reason."""

    input_id: str
    error: str


def structure_sha(atoms: Atoms) -> str:
    """sha256 (first 16 hex digits) of elements, positions, cell and periodicity, float64."""
    digest = hashlib.sha256()
    for array in (np.asarray(atoms.numbers, np.int64), np.asarray(atoms.positions, np.float64),
                  np.asarray(atoms.cell.array, np.float64), np.asarray(atoms.pbc, bool)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def run_key(task: str, options: dict[str, Any], model_sha256: str, dtype: str) -> str:
    """sha256 (first 16 hex digits) of what makes two results of one structure comparable."""
    text = json.dumps({"task": task, "options": options, "model": model_sha256, "dtype": dtype},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _looks_like_structure(path: Path) -> bool:
    return (path.suffix.lower() in STRUCTURE_SUFFIXES
            or path.name.upper().startswith(_VASP_NAMES)) and not path.name.startswith(".")


def expand_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder becomes its structure files (recursively, sorted).

    Raises ASEMPNNError for a path that does not exist or a folder with no structure file.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _looks_like_structure(p))
            if not found:
                raise ASEMPNNError(f"folder {path} holds no structure files "
                                   f"({', '.join(STRUCTURE_SUFFIXES)}, POSCAR, CONTCAR)")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ASEMPNNError(f"input file {path} does not exist")
    return files


def read_inputs(paths: Sequence[str | os.PathLike]) -> tuple[list[InputFrame],
                                                              list[UnreadableInput]]:
    """The frames of every file (folders expanded), and the files that could not be read.

    Duplicate ids are an error (they would make "done" ambiguous).
    """
    frames: list[InputFrame] = []
    unreadable: list[UnreadableInput] = []
    for path in expand_paths(paths):
        name = os.path.normpath(path)
        try:
            read_frames = read(path, index=":")
            if not read_frames:
                raise ValueError("the file holds no structure")
        except Exception as exc:  # noqa: BLE001 - ase.io raises many types
            unreadable.append(UnreadableInput(
                name, f"cannot read structures from {path}: {exception_reason(exc)}"))
            continue
        for k, atoms in enumerate(read_frames):
            input_id = str(atoms.info.get("input_id", f"{name}:{k}"))
            frames.append(InputFrame(input_id, structure_sha(atoms), atoms))
    ids = [f.input_id for f in frames] + [u.input_id for u in unreadable]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ASEMPNNError(f"input ids must be unique; repeated: {duplicates[:5]}")
    return frames, unreadable
