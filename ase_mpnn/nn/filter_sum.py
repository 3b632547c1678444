"""SchNet's continuous-filter convolution with one filter per bond.

The convolution (Schuett et al., J. Chem. Phys. 148, 241722, 2018) sums over the
neighbours j of atom i

    m_i = sum_j p_j * W(r_ij) u(r_ij)        (p = in2f(h), W the filter network, u the envelope)

and its cost is the filter network: two matrix products on every edge. A full neighbour
list holds each bond twice (i -> j and j -> i, ``ase_mpnn.nn.edge_pairs``) with the same
length, so W u is computed once per bond and read by both edges: half the filter
network's matrix products in the forward pass and in both backward passes, and the same
energy, forces, stress and training gradients (the two lengths are the same function of
positions and cell). The envelope goes into the bond's filter, so an edge costs one
gathered product and its share of one scatter.

``filter_sum`` is that gather-multiply-scatter; ``MessagePassingLayer`` (``ase_mpnn.models
.mpnn``) uses it whenever its messages are filters of unchanging edge features, and the
per-edge path (``MPNN.bond_filters_enabled = False``) is the reference it is tested
against (tests/test_fused_kernels.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .scatter import scatter_sum


class BondEdges(NamedTuple):
    """Radial inputs of each bond, and the bond of each edge.

    Fields:
        edges: (n_bonds, n_basis) radial basis of each bond's length, dimensionless.
        envelope: (n_bonds,) cutoff envelope u of each bond's length, in [0, 1].
        bond_of_edge: (n_edges,) int64 bond of each edge, in [0, n_bonds).
    """

    edges: torch.Tensor
    envelope: torch.Tensor
    bond_of_edge: torch.Tensor


def filter_sum(p: torch.Tensor, filters: torch.Tensor, neighbors: torch.Tensor,
               bond_of_edge: torch.Tensor, centers: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """sum over edges e = (i, j) of p_j * filters_b(e), per centre atom i.

    Args:
        p: (n_atoms_total, width) projected features of all atoms.
        filters: (n_bonds, width) filter (times envelope) of each bond.
        neighbors, bond_of_edge, centers: (n_edges,) int64 neighbour j, bond and centre i
            of each edge; centres in [0, n_atoms).
        n_atoms: number of centre atoms (rows of the result).

    Returns:
        (n_atoms, width), the dtype of ``p``.
    """
    messages = p.index_select(0, neighbors) * filters.index_select(0, bond_of_edge)
    return scatter_sum(messages, centers, n_atoms)
