"""Files of an active-learning run: atomic writes, and appends a kill can only cut short.

Whole files (states, exploration frames, reports) go through a temporary file and a rename
(``ase_mpnn.modelfile.atomic_write_bytes``): a reader sees the old file or the new one.
Files that grow one record at a time (labelled frames, failures) are appended and synced
record by record; a kill during a write leaves at most one broken record at the end, which
the readers here drop (``read_frames_repaired`` also rewrites the file without it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.io import iread, write

from ...modelfile import atomic_write_bytes

#: decimals of positions and cell (A) a frame's hash is taken at: finer than any physical
#: difference, coarser than the extxyz round trip (8 decimals)
HASH_DECIMALS = 6


def frame_hash(atoms: Atoms) -> str:
    """SHA-256 (hex, 16 characters) of numbers, positions, cell (A, rounded to
    HASH_DECIMALS) and pbc: the key a reference result is stored under."""
    digest = hashlib.sha256()
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for values in (atoms.positions, atoms.cell.array):  # + 0.0 turns -0.0 into 0.0
        digest.update((np.round(np.asarray(values, float), HASH_DECIMALS) + 0.0).tobytes())
    digest.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    return digest.hexdigest()[:16]


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` as indented JSON, atomically."""
    return write_text(path, json.dumps(value, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def extxyz_text(frames: Sequence[Atoms]) -> str:
    """``frames`` as extended XYZ text."""
    buffer = io.StringIO()
    write(buffer, list(frames), format="extxyz")
    return buffer.getvalue()


def write_frames(path: str | Path, frames: Sequence[Atoms]) -> Path:
    """Write ``frames`` to an extxyz file atomically (an empty file for no frames)."""
    return write_text(path, extxyz_text(frames) if frames else "")


def _append(path: Path, text: str) -> None:
    """Append ``text`` and sync it to disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def append_frame(path: str | Path, atoms: Atoms) -> None:
    """Append one frame to an extxyz file, synced (a kill cuts at most this frame)."""
    _append(Path(path), extxyz_text([atoms]))


def read_frames_repaired(path: str | Path) -> list[Atoms]:
    """Every whole frame of an appended extxyz file; a broken last frame (a write cut
    short) is dropped and the file rewritten atomically without it."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    frames: list[Atoms] = []
    try:
        for atoms in iread(path, index=":", format="extxyz"):
            frames.append(atoms)
    except Exception:  # noqa: BLE001 - whatever the reader makes of a cut-off frame
        print(f"{path}: a frame cut short by an interrupted write is dropped "
              f"({len(frames)} whole frames kept)")
        write_frames(path, frames)
    return frames


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON record as a line, synced."""
    _append(Path(path), json.dumps(record, default=_json_default) + "\n")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The JSON records of a JSON-lines file (none when missing); a line cut short by an
    interrupted write is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
