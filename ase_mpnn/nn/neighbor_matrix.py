"""The equivariant convolution as a per-atom matrix product over a padded neighbour matrix.

A "uvu" tensor-product convolution sums, over the neighbours j of atom i,

    out_i[u, (k, m3)] = sum_j sum_{m1, m2} C_k[m1, m2, m3] w_ij[k, u] h_j[u, m1] Y_ij[m2]

(k a path l1 x l2 -> l3, C_k its Clebsch-Gordan coefficients times e3nn's path weight).
It is bilinear in a_ij[u, (k, m1)] = w_ij[k, u] h_j[u, m1] and Y_ij, so the neighbour sum
can be taken before the coupling:

    S_i[u, (k, m1), m2] = sum_j a_ij[u, (k, m1)] Y_ij[m2]       (one batched matmul per atom)
    out_i[u, (k, m3)]  = sum_{m1, m2} S_i[u, (k, m1), m2] C_k[m1, m2, m3]   (atom-sized)

With the edges of each atom laid out as a row of a padded (n_atoms, n_slots) matrix, the
first line is ``torch.bmm``: the (edges x channels x components) products of the edge
formulation are never stored, and there is no scatter. Padded slots carry a zero radial
weight (their length is put beyond the cutoff, where the envelope is zero), so they add
nothing. The layout pays off when rows are nearly full (bulk solids, liquids); when
padding would more than double the rows, the edge formulation is used instead.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from e3nn import o3

#: use the neighbour matrix while n_atoms * max_neighbors <= MAX_PADDING * n_edges
MAX_PADDING = 2.0


def neighbor_slots(centers: torch.Tensor, n_atoms: int, max_padding: float | None = None
                   ) -> tuple[torch.Tensor, int] | None:
    """Row-major position of each edge in an (n_atoms, n_slots) neighbour matrix.

    Args:
        centers: (n_edges,) int64 centre atom of each edge, in any order.
        n_atoms: number of atoms (rows).
        max_padding: the most rows per edge allowed (default MAX_PADDING; math.inf: any).

    Returns:
        (positions (n_edges,) in [0, n_atoms * n_slots), n_slots), or None when there are
        no edges or padding would exceed ``max_padding`` times the number of edges.
    """
    n_edges = centers.shape[0]
    if n_edges == 0:
        return None
    counts = torch.bincount(centers, minlength=n_atoms)
    n_slots = int(counts.max())
    if n_atoms * n_slots > (MAX_PADDING if max_padding is None else max_padding) * n_edges:
        return None
    first = torch.cumsum(counts, 0) - counts  # index of each atom's first edge once sorted
    if bool((centers[1:] >= centers[:-1]).all()):  # neighbour lists come sorted by centre
        rank = torch.arange(n_edges, device=centers.device) - first[centers]
    else:
        order = torch.argsort(centers, stable=True)
        rank = torch.empty_like(centers)
        rank[order] = torch.arange(n_edges, device=centers.device) - first[centers[order]]
    return centers * n_slots + rank, n_slots


def to_slots(values: torch.Tensor, positions: torch.Tensor, n_rows: int,
             fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Edge values (n_edges, ...) -> (n_rows, ...) with ``fill`` in the padded rows
    (differentiable with respect to ``values``)."""
    out = values.new_empty((n_rows, *values.shape[1:]))
    out[...] = fill
    return out.index_copy(0, positions, values)


def padded_rows(neighbors: torch.Tensor, slot_of_edge: torch.Tensor, n_atoms: int,
                n_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre and the neighbour of every row of the (n_atoms, n_slots) matrix.

    Args:
        neighbors: (n_edges,) int64 neighbour j of each edge.
        slot_of_edge: (n_edges,) int64 row of each edge (``neighbor_slots``).

    Returns:
        (centres (rows,), neighbours (rows,)), int64: atom i on each of its rows, and each
        edge's neighbour on its row; a padded row's neighbour is its centre (its own
        reverse, ``ase_mpnn.nn.paired_gather``).
    """
    centers = torch.arange(n_atoms, device=neighbors.device).repeat_interleave(n_slots)
    return centers, to_slots(neighbors, slot_of_edge, n_atoms * n_slots, centers)


class CouplingTables:
    """Index tables and coupling matrix of a "uvu" e3nn TensorProduct whose instructions all
    have the same multiplicity (every path maps channel u to channel u).

    Attributes (lists and float64 tensors; the convolution registers them as buffers):
        mul: channels u.
        in_permutation: (irreps_in.dim,) columns of h in [(irrep, m1)][u] order.
        path_of_q, column_of_q: (Q,) for each (path k, m1): k, and the [(irrep, m1)]
            column of h it reads.
        coupling: (Q * D, P) float64, D the spherical-harmonic dim, P = sum_k (2 l3 + 1):
            C_k times the path weight, the (k, m1, m2) -> (k, m3) block of each path.
        out_permutation: (irreps_out.dim,) columns of [u][(k, m3)] in e3nn's output order.
    """

    def __init__(self, tp: o3.TensorProduct, exact: Callable[[torch.nn.Module], None]):
        muls = {ins.path_shape[0] for ins in tp.instructions}
        if len(muls) != 1 or any(ins.connection_mode != "uvu" for ins in tp.instructions):
            raise ValueError("neighbour-matrix tables need uvu paths of one multiplicity")
        self.mul = mul = muls.pop()
        irreps_in, irreps_out = tp.irreps_in1, tp.irreps_out
        m1_offsets = _offsets([ir.dim for _, ir in irreps_in])
        in_starts = _offsets([m * ir.dim for m, ir in irreps_in])
        self.in_permutation = [start + u * ir.dim + m
                               for (_, ir), start in zip(irreps_in, in_starts)
                               for m in range(ir.dim) for u in range(mul)]
        self.path_of_q, self.column_of_q = [], []
        for k, ins in enumerate(tp.instructions):
            width = irreps_in[ins.i_in1].ir.dim
            self.path_of_q += [k] * width
            self.column_of_q += [m1_offsets[ins.i_in1] + m for m in range(width)]
        self.coupling, p_of_path = self._coupling(tp, exact)
        out_starts = _offsets([m * ir.dim for m, ir in irreps_out])
        n_p = self.coupling.shape[1]
        self.out_permutation = [0] * irreps_out.dim
        for k, ins in enumerate(tp.instructions):
            dim3 = irreps_out[ins.i_out].ir.dim
            for u in range(mul):
                for m in range(dim3):
                    e3nn_column = out_starts[ins.i_out] + u * dim3 + m
                    self.out_permutation[e3nn_column] = u * n_p + p_of_path[k] + m

    def _coupling(self, tp: o3.TensorProduct,
                  exact: Callable[[torch.nn.Module], None]) -> tuple[torch.Tensor, list[int]]:
        """Read C_k * path weight off a float64 copy of ``tp`` (exact Wigner 3j tables) by
        evaluating it on unit inputs: channel 0 of each input component m1 against each
        spherical-harmonic component m2, all radial weights one."""
        tp64 = copy.deepcopy(tp).to(torch.float64)
        exact(tp64)
        irreps_in, irreps_sh, irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        sh_dim = irreps_sh.dim
        in_starts = _offsets([m * ir.dim for m, ir in irreps_in])
        sh_starts = _offsets([ir.dim for _, ir in irreps_sh])
        out_starts = _offsets([m * ir.dim for m, ir in irreps_out])
        p_of_path = _offsets([irreps_out[ins.i_out].ir.dim for ins in tp.instructions])
        n_q, n_p = len(self.path_of_q), sum(irreps_out[ins.i_out].ir.dim for ins in tp.instructions)
        coupling = torch.zeros(n_q * sh_dim, n_p, dtype=torch.float64)
        weights = torch.ones(1, tp.weight_numel, dtype=torch.float64)
        q = 0
        for k, ins in enumerate(tp.instructions):
            dim1 = irreps_in[ins.i_in1].ir.dim
            dim2 = irreps_sh[ins.i_in2].ir.dim
            dim3 = irreps_out[ins.i_out].ir.dim
            for m1 in range(dim1):  # q = (k, m1)
                x = torch.zeros(dim2, irreps_in.dim, dtype=torch.float64)
                x[:, in_starts[ins.i_in1] + m1] = 1.0  # channel u = 0, component m1
                y = torch.zeros(dim2, sh_dim, dtype=torch.float64)
                y[torch.arange(dim2), sh_starts[ins.i_in2] + torch.arange(dim2)] = 1.0
                out = tp64(x, y, weights.expand(dim2, -1))  # (dim2, irreps_out.dim)
                block = out[:, out_starts[ins.i_out]:out_starts[ins.i_out] + dim3]  # u = 0
                rows = (q + m1) * sh_dim + sh_starts[ins.i_in2] + torch.arange(dim2)
                coupling[rows, p_of_path[k]:p_of_path[k] + dim3] = block
            q += dim1
        return coupling, p_of_path


def _offsets(sizes: list[int]) -> list[int]:
    """Start of each block of consecutive blocks of the given sizes."""
    starts, total = [], 0
    for size in sizes:
        starts.append(total)
        total += size
    return starts
