"""The registered fields of the graph dictionary passed between the pipeline's stages.

Every stage (graph -> model -> potential -> calculator) reads and writes a plain
``dict[str, torch.Tensor]`` whose keys are the constants below. Each field is registered
with its level, which says how it batches: ``node`` fields have one row per atom and are
concatenated, ``edge`` fields one row (or column, for EDGE_INDEX) per edge, ``graph``
fields one row per structure. ``n_atoms`` and ``n_edges`` count over the whole batch and
``n_graphs`` is the number of structures batched together. Batching and un-batching
(``ase_mpnn.graph.batching``) read the levels from here, so they are written once.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Level = Literal["node", "edge", "bond", "slot", "graph", "batch"]


class Field(NamedTuple):
    """One registered entry of the graph dict: its key, level, shape and units."""

    key: str
    level: Level
    shape: str
    units: str


FIELDS: dict[str, Field] = {}


def register(key: str, level: Level, shape: str, units: str = "") -> str:
    """Register a field (a later stage or a plug-in may add its own); returns the key."""
    FIELDS[key] = Field(key, level, shape, units)
    return key


def level(key: str) -> Level | None:
    """The level of a registered key, None for keys nobody registered."""
    field = FIELDS.get(key)
    return None if field is None else field.level


# --- inputs, written by ase_mpnn.graph -----------------------------------------------
ATOMIC_NUMBERS = register("atomic_numbers", "node", "(n_atoms,) int64")
SPECIES = register("species", "node", "(n_atoms,) int64", "index into the model's species")
POSITIONS = register("positions", "node", "(n_atoms, 3) float", "Angstrom")
CELL = register("cell", "graph", "(n_graphs, 3, 3) float", "Angstrom, rows are lattice vectors")
PBC = register("pbc", "graph", "(n_graphs, 3) bool")
EDGE_INDEX = register("edge_index", "edge", "(2, n_edges) int64",
                      "row 0 = centre atom i, row 1 = neighbour j")
CELL_SHIFTS = register("cell_shifts", "edge", "(n_edges, 3) float",
                       "integer lattice translations S of j")
BATCH = register("batch", "node", "(n_atoms,) int64", "index of the structure of each atom")
N_ATOMS = register("n_atoms", "graph", "(n_graphs,) int64", "atoms per structure")
# the global electronic state, read from atoms.info (ase_mpnn.graph.charge_spin); a batch
# carries each only when some structure differs from the default (charge 0, singlet)
TOTAL_CHARGE = register("total_charge", "graph", "(n_graphs,) float", "e, integer-valued")
SPIN_MULTIPLICITY = register("spin_multiplicity", "graph", "(n_graphs,) float",
                             "2S + 1, integer-valued >= 1")
# only when the list was built beyond the model's cutoff (Verlet skin); the potential then
# drops the pairs beyond the cutoff
LIST_CUTOFF = register("list_cutoff", "batch", "() float", "Angstrom")

# the bond pairing of a full list (ase_mpnn.nn.edge_pairs: an edge i -> j + S and its
# reverse j -> i - S are one bond). Models compute it themselves; a compiled program
# (ase_mpnn.compiled) cannot (its size depends on the data), so it is handed these.
# Never batched: they are added to a finished batch right before the call.
BOND_OF_EDGE = register("bond_of_edge", "edge", "(n_edges,) int64", "bond of each edge")
BOND_FIRST_EDGE = register("bond_first_edge", "bond", "(n_bonds,) int64",
                           "lowest edge index of each bond")

# the neighbour-matrix layout of the edges (ase_mpnn.nn.neighbor_matrix), handed to a
# compiled program in the same way: the row-major position i * n_slots + s of each edge,
# and a tensor whose length is n_slots (its values are not read: a program takes sizes
# from the shapes of its inputs)
NEIGHBOR_SLOT = register("neighbor_slot", "edge", "(n_edges,) int64",
                         "position of each edge in the (n_atoms, n_slots) neighbour matrix")
SLOT_COLUMNS = register("slot_columns", "slot", "(n_slots,) int64",
                        "length: columns of the neighbour matrix")

# --- geometry, written by ase_mpnn.potential before the model runs -------------------
EDGE_VECTORS = register("edge_vectors", "edge", "(n_edges, 3) float",
                        "Angstrom, r_ij = x_j - x_i + S @ cell")
EDGE_LENGTHS = register("edge_lengths", "edge", "(n_edges,) float", "Angstrom, |r_ij|")

# --- outputs, written by ase_mpnn.potential -------------------------------------------
ATOMIC_ENERGIES = register("energies", "node", "(n_atoms,) float", "eV, per-atom energy E_i")
ENERGY = register("energy", "graph", "(n_graphs,) float", "eV")
FORCES = register("forces", "node", "(n_atoms, 3) float", "eV/Angstrom")
STRESS = register("stress", "graph", "(n_graphs, 3, 3) float",
                  "eV/Angstrom^3, (1/V) dE/d(strain)")
ATOMIC_STRESSES = register("stresses", "node", "(n_atoms, 3, 3) float",
                           "eV/Angstrom^3, sums to STRESS")

# --- committee outputs, written by ase_mpnn.committee (member axis last, so that they
# batch and un-batch like the fields above); std: over members, times the calibration
COMMITTEE_ENERGY = register("energy_comm", "graph", "(n_graphs, n_members) float", "eV")
COMMITTEE_ATOMIC_ENERGIES = register("energies_comm", "node", "(n_atoms, n_members) float",
                                     "eV")
COMMITTEE_FORCES = register("forces_comm", "node", "(n_atoms, 3, n_members) float",
                            "eV/Angstrom")
COMMITTEE_STRESS = register("stress_comm", "graph", "(n_graphs, 3, 3, n_members) float",
                            "eV/Angstrom^3")
ENERGY_STD = register("energy_std", "graph", "(n_graphs,) float", "eV")
ATOMIC_ENERGIES_STD = register("energies_std", "node", "(n_atoms,) float", "eV")
FORCES_STD = register("forces_std", "node", "(n_atoms,) float",
                      "eV/Angstrom, norm of the per-component std")
STRESS_STD = register("stress_std", "graph", "(n_graphs, 3, 3) float", "eV/Angstrom^3")

CENTER, NEIGHBOR = 0, 1  # rows of EDGE_INDEX
