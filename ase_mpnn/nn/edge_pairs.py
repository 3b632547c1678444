"""Edges that are one bond seen from its two ends, so that radial work is done once per bond.

A full neighbour list holds every bond twice: i -> j + S (neighbour j in the periodic image
shifted by the integer cell vector S) and j -> i - S. Their vectors are opposite,

    r_ij = x_j - x_i + S @ cell = -(x_i - x_j - S @ cell) = -r_ji,

so their lengths, and everything that depends only on the length (the Bessel basis, the
envelope, the radial MLP's tensor-product weights), are the same functions of the
positions and the cell. Computing the radial MLP once per bond and reading it from both
edges gives the same energy, and, because the two lengths are the same function, the same
forces and stress; it halves the edge-sized matrix products of the radial MLPs, which with
their double backward dominate a training step of MACE- and NequIP-style models.

An edge with no reverse in the list (a list that is not full) is a bond of its own, so the
pairing is always correct; it is only faster for full lists.

Where the native kernels are built (``ase_mpnn.native``) and the centres are sorted, a C++
kernel pairs the edges by searching each bond's reverse in its neighbour's row (a call
takes 0.09 ms at 108 Cu atoms and 2.3 ms at 1372, against 0.3-0.45 and 3.7-4.4 ms for the
sort below); it groups the edges identically and numbers the bonds by their first edge.
"""

from __future__ import annotations

import torch

from .. import keys, native
from .chunks import CHECKPOINT_EDGES
from .tracing import tracing


def edge_pairs(centers: torch.Tensor, neighbors: torch.Tensor, shifts: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The bond of every edge, and one edge of every bond.

    Args:
        centers, neighbors: (n_edges,) int64 atoms i and j of each edge i -> j + S.
        shifts: (n_edges, 3) float or int, the integer cell shifts S (zeros without
            periodicity).

    Returns:
        (bond_of_edge (n_edges,) int64 in [0, n_bonds), first_edge (n_bonds,) int64: the
        lowest edge index of each bond). Edges i -> j + S and j -> i - S get the same bond.
    """
    n_edges = centers.shape[0]
    s = shifts.round().to(torch.int64)
    if _native_pairing(centers):  # C++: one row search per bond, no sort
        return torch.ops.ase_mpnn.bond_pairs(centers, neighbors, s)
    # orient each edge canonically: from the lower atom index; for an atom's own images
    # (i == j), towards the image whose first non-zero shift component is positive
    flip = (centers > neighbors) | ((centers == neighbors) & _first_nonzero_negative(s))
    low = torch.where(flip, neighbors, centers)
    high = torch.where(flip, centers, neighbors)
    s = torch.where(flip[:, None], -s, s)
    key = _bond_keys(low, high, s)
    _, bond_of_edge = torch.unique(key, dim=0 if key.dim() == 2 else None, return_inverse=True)
    n_bonds = int(bond_of_edge.max()) + 1 if n_edges else 0
    edges = torch.arange(n_edges, device=centers.device)
    first_edge = torch.full((n_bonds,), n_edges, dtype=torch.int64, device=centers.device)
    first_edge.scatter_reduce_(0, bond_of_edge, edges, reduce="amin")
    return bond_of_edge, first_edge


def graph_bonds(graph: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The bond pairing of a graph's edges, as ``edge_pairs`` returns it, or None.

    It is read from the graph when given there (``keys.BOND_OF_EDGE`` and
    ``keys.BOND_FIRST_EDGE``: how a compiled program receives it, ``ase_mpnn.compiled``),
    else computed. None, where the models then work per edge: under a whole-program trace
    without it (the bond count depends on the data, ``ase_mpnn.nn.tracing``), for a graph
    without edges, and for graphs above ``CHECKPOINT_EDGES`` edges, whose edge work is
    checkpointed in groups where one bond-sized tensor would hold the whole graph.
    """
    if keys.BOND_OF_EDGE in graph:
        return graph[keys.BOND_OF_EDGE], graph[keys.BOND_FIRST_EDGE]
    centers, neighbors = graph[keys.EDGE_INDEX]
    if tracing() or not 0 < centers.shape[0] <= CHECKPOINT_EDGES:
        return None
    return edge_pairs(centers, neighbors, graph[keys.CELL_SHIFTS])


def _native_pairing(centers: torch.Tensor) -> bool:
    """Whether the native ``bond_pairs`` kernel takes these edges: kernels built, CPU
    tensors, centres sorted (rows of a CSR list), not under a trace."""
    if tracing() or centers.device.type != "cpu" or centers.shape[0] < 2:
        return False
    return native.available() and bool((centers[1:] >= centers[:-1]).all())


def _first_nonzero_negative(s: torch.Tensor) -> torch.Tensor:
    """(n, 3) int64 -> (n,) bool: the first non-zero component of each row is negative."""
    x, y, z = s.unbind(1)
    return (x < 0) | ((x == 0) & ((y < 0) | ((y == 0) & (z < 0))))


def _bond_keys(low: torch.Tensor, high: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """One int64 per edge, equal for the edges of one bond: (low, high, s) packed as digits
    of a mixed-radix number when it fits in 62 bits (a 1-D unique is a plain sort, ~10x
    faster than a row-wise unique), else the (n_edges, 5) rows themselves."""
    n_atoms = int(torch.maximum(low.max(), high.max())) + 1 if low.numel() else 1
    radix = 2 * int(s.abs().max()) + 1 if s.numel() else 1
    if n_atoms ** 2 * radix ** 3 >= 1 << 62:
        return torch.cat([low[:, None], high[:, None], s], dim=1)
    key = low * n_atoms + high
    for column in (s + radix // 2).unbind(1):
        key = key * radix + column
    return key
