"""Atoms -> graph: checked structure records, neighbour lists (fresh or with a Verlet skin)
and batching into the dict of tensors that models read (keys in ``ase_mpnn.keys``)."""

from .batching import Graph, build_graph, collate, unbatch
from .neighbors import NeighborList, get_neighbor_backend, neighbor_list, set_neighbor_backend
from .skin import SkinNeighborList
from .structure import (
    MIN_DISTANCE,
    Structure,
    check_geometry,
    check_min_distance,
    is_single_structure,
    make_structure,
    species_indices,
    to_atoms,
)

__all__ = [
    "MIN_DISTANCE",
    "Graph",
    "NeighborList",
    "SkinNeighborList",
    "Structure",
    "build_graph",
    "check_geometry",
    "check_min_distance",
    "collate",
    "get_neighbor_backend",
    "is_single_structure",
    "make_structure",
    "neighbor_list",
    "set_neighbor_backend",
    "species_indices",
    "to_atoms",
    "unbatch",
]
