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

``filter_sum_fused`` does the same sum in one pass of the native kernels
(``ase_mpnn.native``, C++): each atom's row of the neighbour list, sorted by centre,
is summed by one thread, with nothing edge-sized stored. Its backward needs no scatter
either: in a full list every edge i -> j + S has its reverse j -> i - S in the same bond,
so the gradient of p is the same row sum applied to the incoming gradient, and the
gradient of a bond's filter is two gathered products, one per edge of the bond. Training
on forces (create_graph) differentiates that backward again through plain torch
operations.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import keys, native
from . import paired_gather
from .neighbor_matrix import neighbor_slots, padded_rows, to_slots
from .paired_gather import (
    PairedRows,
    full_list,
    gather_bonds,
    gather_neighbors,
    paired_rows,
    row_sums,
)
from .scatter import scatter_sum
from .tracing import tracing


class BondEdges(NamedTuple):
    """Radial inputs of each bond, and the bond of each edge.

    Fields:
        edges: (n_bonds, n_basis) radial basis of each bond's length, dimensionless.
        envelope: (n_bonds,) cutoff envelope u of each bond's length, in [0, 1].
        bond_of_edge: (n_edges,) int64 bond of each edge, in [0, n_bonds).
        fused: the layout of the native kernels (``fused_layout``), or None where the
            plain torch path runs.
        slots: the neighbour-matrix layout of a compiled program (``slot_layout``), or
            None.
    """

    edges: torch.Tensor
    envelope: torch.Tensor
    bond_of_edge: torch.Tensor
    fused: FusedLayout | None = None
    slots: SlotLayout | None = None


class FusedLayout(NamedTuple):
    """A full neighbour list in the row (CSR) form the native kernels read.

    Fields:
        row_ptr: (n_atoms + 1,) int64; the edges of atom i are row_ptr[i] .. row_ptr[i + 1].
        centers, neighbors, bond_of_edge: (n_edges,) int64 centre i, neighbour j and bond
            of each edge, sorted by centre.
        first_edge, second_edge: (n_bonds,) int64, the two edges of each bond.
    """

    row_ptr: torch.Tensor
    centers: torch.Tensor
    neighbors: torch.Tensor
    bond_of_edge: torch.Tensor
    first_edge: torch.Tensor
    second_edge: torch.Tensor


class SlotLayout(NamedTuple):
    """A full list as the padded (n_atoms, slots) neighbour matrix, with each row's reverse
    (``ase_mpnn.nn.paired_gather``): how compiled programs sum filters without a scatter.

    Fields:
        pairs: the reverse of every row.
        neighbors: (rows,) int64 neighbour j of each row (a padded row: its centre).
        bond_of_row: (rows,) int64 bond of each row (0 on padded rows).
        real: (rows,) float, 1 on the rows that are edges, 0 on the padded ones.
    """

    pairs: PairedRows
    neighbors: torch.Tensor
    bond_of_row: torch.Tensor
    real: torch.Tensor


def slot_layout(graph: dict[str, torch.Tensor], bond_of_edge: torch.Tensor,
                first_edge: torch.Tensor, dtype: torch.dtype) -> SlotLayout | None:
    """The ``SlotLayout`` of a graph a whole-program trace is handed in that layout
    (``keys.NEIGHBOR_SLOT``; ``ase_mpnn.compiled`` hands it in for full lists only), or,
    where ``paired_gather.PAIRED_IN_EAGER`` asks for it (tests), of a full list whose
    padding is small enough; else None. Eager runs have the native kernels instead."""
    centers, neighbors = graph[keys.EDGE_INDEX]
    n_atoms = graph[keys.SPECIES].shape[0]
    if tracing():
        if keys.NEIGHBOR_SLOT not in graph:
            return None
        slot_of_edge, n_slots = graph[keys.NEIGHBOR_SLOT], graph[keys.SLOT_COLUMNS].shape[0]
    else:
        found = (neighbor_slots(centers, n_atoms)
                 if paired_gather.PAIRED_IN_EAGER and full_list(bond_of_edge, first_edge)
                 else None)
        if found is None:
            return None
        slot_of_edge, n_slots = found
    rows = n_atoms * n_slots
    _, row_neighbors = padded_rows(neighbors, slot_of_edge, n_atoms, n_slots)
    return SlotLayout(paired_rows(bond_of_edge, first_edge, slot_of_edge, n_atoms, n_slots),
                      row_neighbors, to_slots(bond_of_edge, slot_of_edge, rows, 0),
                      to_slots(torch.ones_like(centers, dtype=dtype), slot_of_edge, rows, 0.0))


def filter_sum_slots(p: torch.Tensor, filters: torch.Tensor,
                     layout: SlotLayout) -> torch.Tensor:
    """``filter_sum`` over every atom on the neighbour matrix: p (n_atoms, width), filters
    (n_bonds, width) (the envelope included) -> (n_atoms, width). Its backward passes are
    gathers and row sums (``ase_mpnn.nn.paired_gather``), never a scatter."""
    p_rows = gather_neighbors(p, layout.neighbors, layout.pairs)
    filter_rows = gather_bonds(filters, layout.bond_of_row, layout.pairs)
    return row_sums(p_rows * filter_rows * layout.real[:, None], layout.pairs.slots)


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


def fused_layout(centers: torch.Tensor, neighbors: torch.Tensor, bond_of_edge: torch.Tensor,
                 first_edge: torch.Tensor, n_atoms: int) -> FusedLayout | None:
    """The layout ``filter_sum_fused`` reads, or None where it cannot run: the kernels are
    not loaded (``native.available``), the tensors are not on the CPU, a whole-program
    trace is running, the centres are not sorted, or a bond does not have exactly two
    edges (a list that is not full).

    Args:
        centers, neighbors, bond_of_edge: (n_edges,) int64, as ``edge_pairs`` pairs them.
        first_edge: (n_bonds,) int64, the lowest edge of each bond.
        n_atoms: number of atoms (centres lie in [0, n_atoms)).
    """
    if tracing() or centers.device.type != "cpu" or not native.available():
        return None
    n_edges, n_bonds = centers.shape[0], first_edge.shape[0]
    if n_edges != 2 * n_bonds or not bool((centers[1:] >= centers[:-1]).all()):
        return None
    if n_edges and not 0 <= int(neighbors.min()) <= int(neighbors.max()) < n_atoms:
        return None  # the kernels do not check indices: the torch path raises instead
    edges = torch.arange(n_edges, device=centers.device)
    second_edge = first_edge.clone().scatter_reduce_(0, bond_of_edge, edges, reduce="amax")
    if bool((second_edge == first_edge).any()):
        return None  # with n_edges == 2 n_bonds: some bond has one edge, another three
    row_ptr = centers.new_zeros(n_atoms + 1)
    torch.cumsum(torch.bincount(centers, minlength=n_atoms), 0, out=row_ptr[1:])
    return FusedLayout(row_ptr, centers.contiguous(), neighbors.contiguous(),
                       bond_of_edge.contiguous(), first_edge.contiguous(), second_edge)


def filter_sum_fused(p: torch.Tensor, filters: torch.Tensor, envelope: torch.Tensor,
                     layout: FusedLayout) -> torch.Tensor:
    """``filter_sum`` of the enveloped filters over every atom, by the native kernels.

    Args:
        p: (n_atoms, width) projected features.
        filters: (n_bonds, width) filter of each bond, the dtype of ``p``.
        envelope: (n_bonds,) cutoff envelope u of each bond (multiplied in by the kernel).
        layout: from ``fused_layout`` on the same graph.

    Returns:
        (n_atoms, width): sum over the edges (i, j) of row i of p_j * filters_b * u_b.
    """
    return _FusedFilterSum.apply(p, filters, envelope, *layout)


class _FusedFilterSum(torch.autograd.Function):
    """m = filter_sum(p, W u) with the native kernels; see the module docstring."""

    @staticmethod
    def forward(ctx, p, filters, envelope, row_ptr, centers, neighbors, bond_of_edge,
                first_edge, second_edge):
        p, filters, envelope = p.contiguous(), filters.contiguous(), envelope.contiguous()
        ctx.save_for_backward(p, filters, envelope, row_ptr, centers, neighbors, bond_of_edge,
                              first_edge, second_edge)
        return torch.ops.ase_mpnn.csr_filter_sum(p, filters, envelope, row_ptr, neighbors,
                                                 bond_of_edge)

    @staticmethod
    def backward(ctx, grad):
        p, filters, envelope, *layout = ctx.saved_tensors
        row_ptr, centers, neighbors, bond_of_edge, first_edge, second_edge = layout
        grad = grad.contiguous()
        grad_p = grad_filters = grad_envelope = None
        if torch.is_grad_enabled():  # create_graph: a backward that is differentiable
            if ctx.needs_input_grad[0]:
                grad_p = _FusedFilterSum.apply(grad, filters, envelope, *layout)
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                products = p.index_select(0, neighbors) * grad.index_select(0, centers)
                per_bond = scatter_sum(products, bond_of_edge, first_edge.shape[0])
                grad_filters = per_bond * envelope[:, None]
                grad_envelope = (per_bond * filters).sum(1)
        else:
            if ctx.needs_input_grad[0]:  # dm_i/dp_j: the reverse edges' row sum
                grad_p = torch.ops.ase_mpnn.csr_filter_sum(grad, filters, envelope, row_ptr,
                                                           neighbors, bond_of_edge)
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                grad_filters, grad_envelope = torch.ops.ase_mpnn.bond_filter_grad(
                    p, grad, filters, envelope, centers, neighbors, first_edge, second_edge)
        return (grad_p, grad_filters, grad_envelope) + (None,) * 6
