"""Atoms (one or many) -> the graph dictionary of tensors that models read.

Building the graph is also where bad input is caught, before any tensor is made: elements
the model does not know, NaN or infinite coordinates, a periodic direction whose lattice
vector is degenerate, and atoms closer than ``min_distance``. Several structures batch into
one graph by concatenating atoms and edges, with ``BATCH`` telling which structure each
atom belongs to; models never need to know how many structures they see.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers as _ATOMIC_NUMBERS
from ase.data import chemical_symbols

from . import keys
from .errors import InvalidStructureError, UnknownElementError
from .neighbors import NeighborList, neighbor_list

Graph = dict[str, torch.Tensor]

#: two atoms closer than this (Angstrom) are taken to be an input error
MIN_DISTANCE = 0.1


def to_atoms(structure: Any) -> Atoms:
    """Return ``structure`` as ase.Atoms; pymatgen Structure and Molecule are converted."""
    if isinstance(structure, Atoms):
        return structure
    if type(structure).__module__.startswith("pymatgen"):
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(structure)
    raise TypeError(
        f"expected ase.Atoms or a pymatgen Structure/Molecule, got {type(structure).__name__}"
    )


def _is_single_structure(obj: Any) -> bool:
    # pymatgen's Structure is itself a Sequence (of sites), so test for it by module
    return (isinstance(obj, Atoms) or type(obj).__module__.startswith("pymatgen")
            or not isinstance(obj, Sequence))


def species_indices(numbers: np.ndarray, species: Sequence[str]) -> np.ndarray:
    """Map atomic numbers to indices into ``species``; unknown elements raise.

    Returns:
        (n_atoms,) int64 array of indices.
    """
    lookup = np.full(len(chemical_symbols), -1, dtype=np.int64)
    for index, symbol in enumerate(species):
        lookup[_ATOMIC_NUMBERS[symbol]] = index
    numbers = np.asarray(numbers, dtype=np.int64)
    indices = lookup[numbers]
    if (indices < 0).any():
        unknown = sorted({chemical_symbols[z] for z in numbers[indices < 0]})
        raise UnknownElementError(
            f"element(s) {', '.join(unknown)} not covered by this model, "
            f"which knows only {', '.join(species)}"
        )
    return indices


def check_geometry(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise InvalidStructureError for non-finite coordinates or a degenerate periodic cell."""
    if not np.isfinite(positions).all():
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        raise InvalidStructureError(f"positions of atom(s) {bad[:10].tolist()} are NaN or inf")
    if not np.isfinite(cell).all():
        raise InvalidStructureError(f"the cell holds NaN or inf: {cell.tolist()}")
    periodic = cell[pbc]
    if not len(periodic):
        return
    lengths = np.linalg.norm(periodic, axis=1)
    # normalised Gram determinant: 1 for orthogonal vectors, 0 when they are dependent
    unit = periodic / np.where(lengths > 0, lengths, 1.0)[:, None]
    gram = np.linalg.det(unit @ unit.T)
    if lengths.min() < 1e-6 or gram < 1e-8:
        axes = "".join("abc"[k] for k in np.flatnonzero(pbc))
        raise InvalidStructureError(
            f"the structure is periodic along {axes} but those lattice vectors are degenerate "
            f"(zero or linearly dependent): cell = {np.round(cell, 6).tolist()}"
        )


def check_min_distance(nl: NeighborList, min_distance: float) -> None:
    """Raise InvalidStructureError if two atoms (or an atom and its image) nearly overlap."""
    if len(nl.distances) and nl.distances.min() < min_distance:
        k = int(nl.distances.argmin())
        raise InvalidStructureError(
            f"atoms {nl.centers[k]} and {nl.neighbors[k]} are {nl.distances[k]:.4f} A apart, "
            f"closer than {min_distance} A: is the structure corrupt?"
        )


def structure_arrays(
    atoms: Atoms, cutoff: float, species: Sequence[str], min_distance: float = MIN_DISTANCE
) -> dict[str, np.ndarray]:
    """One structure's checked inputs and neighbour list as numpy arrays (see ``collate``).

    Keep these to re-batch the same structures many times (training) without rebuilding
    neighbour lists.
    """
    atoms = to_atoms(atoms)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    kinds = species_indices(atoms.numbers, species)
    check_geometry(positions, cell, pbc)
    nl = neighbor_list(positions, cell, pbc, cutoff)
    check_min_distance(nl, min_distance)
    return {
        "numbers": np.asarray(atoms.numbers, dtype=np.int64),
        "species": kinds,
        "positions": positions.reshape(-1, 3),
        "cell": cell,
        "pbc": pbc,
        "edges": np.stack([nl.centers, nl.neighbors]),
        "shifts": nl.shifts.reshape(-1, 3),
    }


def build_graph(
    structures: Atoms | Sequence[Atoms],
    cutoff: float,
    species: Sequence[str],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    min_distance: float = MIN_DISTANCE,
) -> Graph:
    """Build one graph (a batch) from one structure or a list of them.

    Args:
        structures: ase.Atoms (or pymatgen Structure/Molecule), or a sequence of them.
        cutoff: neighbour cutoff radius, Angstrom.
        species: the model's element symbols; SPECIES indexes into this list.
        dtype: floating dtype of positions, cell and shifts.
        device: where the tensors live.
        min_distance: closest allowed approach of two atoms, Angstrom.

    Returns:
        A dict keyed by the constants in ase_mpnn.keys (see there for shapes).
    """
    if _is_single_structure(structures):
        structures = [structures]
    parts = [structure_arrays(s, cutoff, species, min_distance) for s in structures]
    return collate(parts, dtype=dtype, device=device)


def collate(
    parts: Sequence[dict[str, np.ndarray]],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Graph:
    """Concatenate structures (from ``structure_arrays``) into one batched graph."""
    if not len(parts):
        raise ValueError("cannot build a graph from an empty list of structures")
    counts = np.array([len(p["species"]) for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if len(parts) == 1:  # the calculator's case: no copies
        edges = parts[0]["edges"]
    else:
        edges = np.concatenate([p["edges"] + off for p, off in zip(parts, offsets)], axis=1)

    def cat(name: str) -> np.ndarray:
        return parts[0][name] if len(parts) == 1 else np.concatenate([p[name] for p in parts])

    float_kw = {"dtype": dtype, "device": device}
    int_kw = {"dtype": torch.int64, "device": device}
    return {
        keys.ATOMIC_NUMBERS: torch.as_tensor(cat("numbers"), **int_kw),
        keys.SPECIES: torch.as_tensor(cat("species"), **int_kw),
        keys.POSITIONS: torch.as_tensor(cat("positions").reshape(-1, 3), **float_kw),
        keys.CELL: torch.as_tensor(np.stack([p["cell"] for p in parts]), **float_kw),
        keys.PBC: torch.as_tensor(np.stack([p["pbc"] for p in parts]), device=device),
        keys.EDGE_INDEX: torch.as_tensor(edges, **int_kw),
        keys.CELL_SHIFTS: torch.as_tensor(cat("shifts").reshape(-1, 3), **float_kw),
        keys.BATCH: torch.repeat_interleave(torch.arange(len(parts), device=device),
                                            torch.as_tensor(counts, device=device)),
        keys.N_ATOMS: torch.as_tensor(counts, **int_kw),
    }
