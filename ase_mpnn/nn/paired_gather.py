"""Gathers onto the rows of a full neighbour matrix whose backward passes are gathers too.

A layer reads each neighbour's features onto the rows of the (n_atoms, slots) neighbour
matrix (``ase_mpnn.nn.neighbor_matrix``): h_rows[r] = h[j(r)]. The backward of that
gather is a scatter, grad_h[j] = sum over the rows r with j(r) = j of g[r], and a
compiled program (AOTInductor on CPU) runs a scatter as one atomic add per element: at
108 Cu atoms the two layers' scatters took 6 of the 13 ms of a compiled NequIP call.

A full neighbour list holds every bond twice, i -> j + S and j -> i - S
(``ase_mpnn.nn.edge_pairs``). The rows whose neighbour is j are then the reverses of
the rows whose centre is j, which are row j of the matrix, so

    grad_h[j] = sum_s g[reverse(j * slots + s)]

is a gather and a sum over each row: no scatter, and no two threads writing one place.
A padded row reads its own centre and is its own reverse, so the identity holds on every
row. The bond-to-row gather of the radial weights w_r = w_b(r) is treated alike: each
bond's gradient is the sum over its two rows, g[first(b)] + g[reverse(first(b))].

Both hold only when every edge's reverse is in the list (``full_list``); other lists keep
torch's gathers. The backward passes are written in torch operations, so they have their
own (double) backward for training.

Compiled programs use them (``ase_mpnn.compiled``): 13.7 -> 10.0 ms per NequIP call at 108
Cu atoms in float32. Eager runs do not (``PAIRED_IN_EAGER``): there torch's own scatter
has no atomics, and the paired gathers measured 0-8 % slower for NequIP and MACE.
"""

from __future__ import annotations

import torch

#: use the paired gathers in eager runs too (tests compare them there; off: slower)
PAIRED_IN_EAGER = False


class PairedRows:
    """The reverse of every row of a neighbour matrix built from a full list.

    Attributes:
        reverse: (rows,) int64, the row of each row's reverse edge; a padded row is its
            own reverse.
        bond_first: (n_bonds,) int64, the row of each bond's first edge.
        slots: the matrix's columns (rows = n_atoms * slots).
    """

    def __init__(self, reverse: torch.Tensor, bond_first: torch.Tensor, slots: int):
        self.reverse, self.bond_first, self.slots = reverse, bond_first, slots


def full_list(bond_of_edge: torch.Tensor, first_edge: torch.Tensor) -> bool:
    """True when every bond holds exactly two edges (the list is full: each edge's reverse
    is in it), from the pairing of ``ase_mpnn.nn.edge_pairs``: n_edges == 2 n_bonds and
    no bond has its first edge as its last (a list with a repeated pair could otherwise
    balance a bond of three edges against one of one)."""
    n_edges = bond_of_edge.shape[0]
    if n_edges != 2 * first_edge.shape[0]:
        return False
    edges = torch.arange(n_edges, device=bond_of_edge.device)
    last_edge = first_edge.clone().scatter_reduce_(0, bond_of_edge, edges, reduce="amax")
    return not bool((last_edge == first_edge).any())


def paired_rows(bond_of_edge: torch.Tensor, first_edge: torch.Tensor,
                slot_of_edge: torch.Tensor, n_atoms: int, slots: int) -> PairedRows:
    """The ``PairedRows`` of a full list laid out as a neighbour matrix.

    Args:
        bond_of_edge: (n_edges,) int64, the bond of each edge; every bond has two edges.
        first_edge: (n_bonds,) int64, each bond's lowest edge.
        slot_of_edge: (n_edges,) int64, each edge's row in the matrix.
        n_atoms, slots: the matrix's shape.
    """
    n_edges = bond_of_edge.shape[0]
    edges = torch.arange(n_edges, device=bond_of_edge.device)
    # the two edges of a bond sum to the same number: the reverse of e is that sum minus e
    edge_sums = torch.zeros_like(first_edge).index_add_(0, bond_of_edge, edges)
    reverse_edge = edge_sums.index_select(0, bond_of_edge) - edges
    rows = torch.arange(n_atoms * slots, device=bond_of_edge.device)
    reverse = rows.index_copy(0, slot_of_edge, slot_of_edge.index_select(0, reverse_edge))
    return PairedRows(reverse, slot_of_edge.index_select(0, first_edge), slots)


class _GatherNeighbors(torch.autograd.Function):
    """values.index_select(0, neighbors) with the backward of the module docstring."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, neighbors: torch.Tensor, reverse: torch.Tensor,
                slots: int) -> torch.Tensor:
        ctx.save_for_backward(reverse)
        ctx.slots = slots
        return values.index_select(0, neighbors)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (reverse,) = ctx.saved_tensors
        return row_sums(grad.index_select(0, reverse), ctx.slots), None, None, None


class _GatherBonds(torch.autograd.Function):
    """bond_values.index_select(0, bond_of_row), the backward summing each bond's two rows."""

    @staticmethod
    def forward(ctx, bond_values: torch.Tensor, bond_of_row: torch.Tensor,
                bond_first: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(bond_first, reverse)
        return bond_values.index_select(0, bond_of_row)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        bond_first, reverse = ctx.saved_tensors
        second = reverse.index_select(0, bond_first)
        summed = grad.index_select(0, bond_first) + grad.index_select(0, second)
        return summed, None, None, None


def row_sums(values: torch.Tensor, slots: int) -> torch.Tensor:
    """values (n_atoms * slots, ...) -> (n_atoms, ...): the sum over each atom's row.

    Done as a batched matrix product by the rows (1, ..., 1) and (0, ..., 0): AOTInductor
    runs a sum, or a product with a single row, as a loop vectorised over the slots in
    which every load is a scalar gather (10x slower when the values are gathered)."""
    n_atoms = values.shape[0] // slots
    rows = values.reshape(n_atoms, slots, -1)
    ones_zeros = values.new_tensor([1.0, 0.0])[None, :, None].expand(n_atoms, 2, slots)
    return torch.bmm(ones_zeros, rows)[:, 0].view(n_atoms, *values.shape[1:])


def gather_neighbors(values: torch.Tensor, neighbors: torch.Tensor,
                     pairs: PairedRows) -> torch.Tensor:
    """values (n_atoms, ...) -> (rows, ...), row r holding values[neighbors[r]] (padded
    rows: their own centre's); the backward is a gather (module docstring)."""
    return _GatherNeighbors.apply(values, neighbors, pairs.reverse, pairs.slots)


def gather_bonds(bond_values: torch.Tensor, bond_of_row: torch.Tensor,
                 pairs: PairedRows) -> torch.Tensor:
    """bond_values (n_bonds, ...) -> (rows, ...), each row its bond's values.

    The backward sums each bond's two rows and drops the padded rows, which read bond 0:
    their messages are zero (the envelope vanishes there), so their gradient is zero.
    """
    return _GatherBonds.apply(bond_values, bond_of_row, pairs.bond_first, pairs.reverse)
