"""One structure's checked inputs and neighbour list: the ``Structure`` record.

Making the record is where bad input is caught, before any tensor is made: elements the
model does not know, NaN or infinite coordinates, a periodic direction whose lattice
vector is degenerate, and atoms closer than ``min_distance``. Records are plain numpy;
``ase_mpnn.graph.batching.collate`` turns any number of them into one graph of tensors.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers as _ATOMIC_NUMBERS
from ase.data import chemical_symbols

from ..errors import InvalidStructureError, UnknownElementError
from .charge_spin import read_global_state
from .neighbors import NeighborList, neighbor_list

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


def is_one_structure(obj: Any) -> bool:
    """True for one Atoms or pymatgen structure (pymatgen's are sequences of sites)."""
    return isinstance(obj, Atoms) or type(obj).__module__.startswith("pymatgen")


def is_single_structure(obj: Any) -> bool:
    """True for one Atoms or pymatgen structure, False for a sequence of them."""
    return is_one_structure(obj) or not isinstance(obj, Sequence)


def species_indices(numbers: np.ndarray, species: Sequence[str]) -> np.ndarray:
    """Map atomic numbers to indices into ``species``; unknown elements raise.

    Returns:
        (n_atoms,) int64 array of indices.
    """
    lookup = np.full(len(chemical_symbols), -1, dtype=np.int64)
    for index, symbol in enumerate(species):
        lookup[_ATOMIC_NUMBERS[symbol]] = index
    numbers = np.asarray(numbers, dtype=np.int64)
    not_elements = (numbers < 1) | (numbers >= len(chemical_symbols))
    if not_elements.any():
        raise UnknownElementError(
            f"atomic number(s) {sorted(set(numbers[not_elements].tolist()))[:10]} are not "
            f"elements (1 to {len(chemical_symbols) - 1})")
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


def check_edge_lengths(positions: np.ndarray, cell: np.ndarray, edges: np.ndarray,
                       shifts: np.ndarray, min_distance: float) -> None:
    """check_min_distance for a stored list at new positions and cell (a reused skin list:
    it holds every pair within cutoff + skin, so every pair closer than the minimum)."""
    if not edges.shape[1] or min_distance <= 0:
        return
    vectors = positions[edges[1]] - positions[edges[0]] + shifts @ cell
    squared = np.einsum("ij,ij->i", vectors, vectors)
    k = int(squared.argmin())
    if squared[k] < min_distance**2:
        raise InvalidStructureError(
            f"atoms {edges[0, k]} and {edges[1, k]} are {np.sqrt(squared[k]):.4f} A apart, "
            f"closer than {min_distance} A: is the structure corrupt?"
        )


class Structure(NamedTuple):
    """One structure's checked inputs and neighbour list, as numpy arrays.

    Keep these to batch the same structures many times (training) without rebuilding
    neighbour lists; ``collate`` turns a list of them into one graph.

    Attributes:
        numbers: (n_atoms,) int64 atomic numbers.
        species: (n_atoms,) int64 index of each atom's element in the model's species.
        positions: (n_atoms, 3) float64 Cartesian positions, Angstrom.
        cell: (3, 3) float64 lattice vectors as rows, Angstrom.
        pbc: (3,) bool periodicity.
        edges: (2, n_edges) int64 centre i and neighbour j of each pair, sorted by i.
        shifts: (n_edges, 3) int64 lattice translation S of j.
        charge: total charge, e (``atoms.info["charge"]``; ``graph.charge_spin``).
        multiplicity: spin multiplicity 2S + 1 (``atoms.info["spin"]``).
    """

    numbers: np.ndarray
    species: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    edges: np.ndarray
    shifts: np.ndarray
    charge: int = 0
    multiplicity: int = 1

    @property
    def n_atoms(self) -> int:
        return len(self.species)

    @property
    def n_edges(self) -> int:
        return self.edges.shape[1]

    @property
    def periodic(self) -> bool:
        """True when periodic in all three directions (the structure has a stress)."""
        return bool(self.pbc.all())

    def copy(self) -> "Structure":
        """A record owning its arrays (those of ``make_structure`` may share an Atoms')."""
        arrays = (np.array(value, copy=True) for value in self[:7])
        return Structure(*arrays, self.charge, self.multiplicity)


def make_structure(
    atoms: Any, cutoff: float, species: Sequence[str], min_distance: float = MIN_DISTANCE
) -> Structure:
    """Check ``atoms`` (ase.Atoms or pymatgen) and build its neighbour list at ``cutoff``.

    The total charge and spin multiplicity come from ``atoms.info``
    (``graph.charge_spin.read_global_state``: charge/total_charge, spin/total_spin/
    multiplicity). Raises UnknownElementError or InvalidStructureError (its subclass
    InvalidChargeSpinError for the charge and spin) naming the problem.
    """
    atoms = to_atoms(atoms)
    positions = np.asarray(atoms.positions, dtype=np.float64).reshape(-1, 3)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    kinds = species_indices(atoms.numbers, species)
    state = read_global_state(atoms.info, atoms.numbers)
    check_geometry(positions, cell, pbc)
    nl = neighbor_list(positions, cell, pbc, cutoff)
    check_min_distance(nl, min_distance)
    return Structure(
        numbers=np.asarray(atoms.numbers, dtype=np.int64),
        species=kinds,
        positions=positions,
        cell=cell,
        pbc=pbc,
        edges=np.stack([nl.centers, nl.neighbors]),
        shifts=nl.shifts.reshape(-1, 3),
        charge=state.charge,
        multiplicity=state.multiplicity,
    )
