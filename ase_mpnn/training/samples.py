"""Training data: labelled structures from any ASE-readable file, splits and statistics.

Labels are read from configurable keys (default ``REF_energy`` in ``atoms.info``,
``REF_forces`` in ``atoms.arrays``, ``REF_stress`` in ``atoms.info``), falling back to
results stored by a calculator (extxyz ``energy=``/``forces``, ase.db rows). Units: eV,
eV/A, eV/A^3 (ASE's sign: tensile positive).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.io import read
from ase.stress import voigt_6_to_full_3x3_stress

from ..errors import ASEMPNNError
from ..graph import collate, make_structure

DEFAULT_KEYS = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress"}


class DataError(ASEMPNNError, ValueError):
    """A data file cannot be read or a frame lacks a label or has one of the wrong shape."""


@dataclasses.dataclass
class Sample:
    """One labelled structure.

    Attributes:
        atoms: the structure.
        energy: total energy, eV.
        forces: (n_atoms, 3) eV/A, or None.
        stress: (3, 3) eV/A^3, or None.
        source: "file:frame" for error messages.
    """

    atoms: Atoms
    energy: float
    forces: np.ndarray | None
    stress: np.ndarray | None
    source: str


def _label(atoms: Atoms, key: str, kind: str):
    """The value of a label from info/arrays under ``key``, else from stored results."""
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    return results.get(kind)


def sample_from_atoms(atoms: Atoms, source: str, keys: dict[str, str] | None = None,
                      require_forces: bool = True) -> Sample:
    """Read the labels of one frame; a missing or malformed label raises DataError."""
    keys = {**DEFAULT_KEYS, **(keys or {})}
    energy = _label(atoms, keys["energy"], "energy")
    if energy is None:
        raise DataError(f"{source}: no energy (looked for '{keys['energy']}' and stored results)")
    forces = _label(atoms, keys["forces"], "forces")
    if forces is None and require_forces:
        raise DataError(f"{source}: no forces (looked for '{keys['forces']}' and stored results)")
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (len(atoms), 3):
            raise DataError(f"{source}: forces have shape {forces.shape}, "
                            f"expected ({len(atoms)}, 3)")
    stress = _label(atoms, keys["stress"], "stress")
    if stress is not None:
        stress = np.asarray(stress, dtype=np.float64)
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
        elif stress.shape == (9,):
            stress = stress.reshape(3, 3)
        if stress.shape != (3, 3):
            raise DataError(f"{source}: stress has shape {stress.shape}, expected 6, 9 or 3x3")
    clean = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    return Sample(clean, float(energy), forces, stress, source)


def read_samples(path: str | Path, keys: dict[str, str] | None = None, index: str = ":",
                 require_forces: bool = True) -> list[Sample]:
    """All labelled frames of a file ase.io can read (extxyz, ase.db, ...)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    try:
        frames = read(path, index=index)
    except Exception as exc:  # ase raises many types for unreadable files
        raise DataError(f"cannot read {path}: {exc}") from exc
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise DataError(f"{path} holds no structures")
    return [sample_from_atoms(a, f"{path}:{k}", keys, require_forces) for k, a in enumerate(frames)]


def split_samples(samples: Sequence[Sample], fractions: Sequence[float], seed: int = 0
                  ) -> list[list[Sample]]:
    """Shuffle with ``seed`` and cut into parts of the given fractions (the last takes the rest)."""
    order = np.random.default_rng(seed).permutation(len(samples))
    bounds = np.cumsum([0] + [round(f * len(samples)) for f in fractions[:-1]])
    bounds = list(bounds) + [len(samples)]
    return [[samples[i] for i in order[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]


def species_of(samples: Sequence[Sample]) -> list[str]:
    """Element symbols present, in order of atomic number."""
    numbers = sorted({int(z) for s in samples for z in s.atoms.numbers})
    from ase.data import chemical_symbols

    return [chemical_symbols[z] for z in numbers]


def fit_reference_energies(samples: Sequence[Sample], species: Sequence[str]
                           ) -> dict[str, float]:
    """E0 per element (eV) by least squares, E_total ~ sum_s n_s E0_s: what is left after
    these is the interaction energy the model learns."""
    counts = np.array([[np.count_nonzero(s.atoms.symbols == x) for x in species] for s in samples],
                      dtype=np.float64)
    energies = np.array([s.energy for s in samples])
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return dict(zip(species, solution.tolist()))


def energy_statistics(samples: Sequence[Sample], reference_energies: dict[str, float]
                      ) -> tuple[float, float]:
    """(shift, scale): mean per-atom energy left after E0 (eV) and the RMS force (eV/A).

    The scale falls back to the spread of per-atom energies when no sample has forces.
    """
    per_atom = np.array([
        (s.energy - sum(reference_energies[x] for x in s.atoms.get_chemical_symbols()))
        / max(len(s.atoms), 1) for s in samples])
    forces = [s.forces for s in samples if s.forces is not None and len(s.forces)]
    if forces:
        scale = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    else:
        scale = float(per_atom.std())
    return float(per_atom.mean()), scale if scale > 0 else 1.0


class GraphCache:
    """Neighbour lists of samples built once; batches are concatenations of them."""

    def __init__(self, samples: Sequence[Sample], cutoff: float, species: Sequence[str]):
        self.samples = list(samples)
        self.records = []
        for sample in self.samples:
            try:
                self.records.append(make_structure(sample.atoms, cutoff, species))
            except ASEMPNNError as exc:  # say which frame of which file
                raise type(exc)(f"{sample.source}: {exc}") from exc

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, indices: Sequence[int], dtype: torch.dtype, device: str | torch.device = "cpu"
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(graph, targets) for the samples at ``indices``.

        targets: "energy" (n_graphs,), "forces" (n_atoms, 3) with "forces_mask" (n_atoms,),
        "stress" (n_graphs, 3, 3) with "stress_mask" (n_graphs,).
        """
        graph = collate([self.records[i] for i in indices], dtype=dtype, device=device)
        chosen = [self.samples[i] for i in indices]
        kw = {"dtype": dtype, "device": device}
        forces = [s.forces if s.forces is not None else np.zeros((len(s.atoms), 3)) for s in chosen]
        stress = [s.stress if s.stress is not None else np.zeros((3, 3)) for s in chosen]
        targets = {
            "energy": torch.tensor([s.energy for s in chosen], **kw),
            "forces": torch.as_tensor(np.concatenate(forces).reshape(-1, 3), **kw),
            "forces_mask": torch.as_tensor(np.concatenate(
                [np.full(len(s.atoms), s.forces is not None) for s in chosen]), device=device),
            "stress": torch.as_tensor(np.stack(stress), **kw),
            "stress_mask": torch.tensor([s.stress is not None and bool(s.atoms.pbc.all())
                                         for s in chosen], device=device),
        }
        return graph, targets
