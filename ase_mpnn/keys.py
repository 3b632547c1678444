"""Names of the entries of the graph dictionary passed between the pipeline's stages.

Every stage (graph -> model -> potential -> calculator) reads and writes a plain
``dict[str, torch.Tensor]`` whose keys are the constants below. The comment on each key
gives its shape and units; ``n_atoms`` and ``n_edges`` count over the whole batch and
``n_graphs`` is the number of structures batched together.
"""

from __future__ import annotations

# --- inputs, written by ase_mpnn.graph -----------------------------------------------
ATOMIC_NUMBERS = "atomic_numbers"  # (n_atoms,) int64
SPECIES = "species"  # (n_atoms,) int64, index into the model's species list
POSITIONS = "positions"  # (n_atoms, 3) float, Angstrom
CELL = "cell"  # (n_graphs, 3, 3) float, Angstrom, rows are lattice vectors
PBC = "pbc"  # (n_graphs, 3) bool
EDGE_INDEX = "edge_index"  # (2, n_edges) int64: row 0 = centre atom i, row 1 = neighbour j
CELL_SHIFTS = "cell_shifts"  # (n_edges, 3) float, integer lattice translations S of j
BATCH = "batch"  # (n_atoms,) int64, index of the structure each atom belongs to
N_ATOMS = "n_atoms"  # (n_graphs,) int64, atoms per structure
LIST_CUTOFF = "list_cutoff"  # () float, Angstrom: only when the list was built beyond the
# model's cutoff (Verlet skin); the potential then drops the pairs beyond the cutoff

# --- geometry, written by ase_mpnn.potential before the model runs -------------------
EDGE_VECTORS = "edge_vectors"  # (n_edges, 3) float, r_ij = x_j - x_i + S @ cell, Angstrom
EDGE_LENGTHS = "edge_lengths"  # (n_edges,) float, |r_ij|, Angstrom

# --- outputs, written by ase_mpnn.potential -------------------------------------------
ATOMIC_ENERGIES = "energies"  # (n_atoms,) float, eV
ENERGY = "energy"  # (n_graphs,) float, eV
FORCES = "forces"  # (n_atoms, 3) float, eV/Angstrom
STRESS = "stress"  # (n_graphs, 3, 3) float, eV/Angstrom^3, (1/V) dE/d(strain)
ATOMIC_STRESSES = "stresses"  # (n_atoms, 3, 3) float, eV/Angstrom^3, sums to STRESS

CENTER, NEIGHBOR = 0, 1  # rows of EDGE_INDEX
