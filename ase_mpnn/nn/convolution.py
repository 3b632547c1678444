"""The equivariant point convolution of NequIP and MACE, and its three ways of computing it.

The convolution (Thomas et al. 2018, arXiv:1802.08219; NequIP, Batzner et al. 2022; MACE,
Batatia et al. 2022) sends along each edge

    m_ij = R(|r_ij|) u(|r_ij|) * (h_j (x) Y(r_ij))

(a "uvu" tensor product: channel u of h_j times each Y_l, one learned radial weight per
channel and path) and sums it over neighbours divided by a fixed ``avg_num_neighbors``.
The divisor is a constant hyper-parameter, never a statistic of the structure at hand, so
energies stay extensive and smooth. The envelope u(r) multiplies every radial weight, so
each message and its first two derivatives vanish at the cutoff.

The same sum is computed by one of three paths, all equal to 1e-12:

- ``EdgeTensorProduct``: e3nn's TensorProduct on every edge, then a scatter onto the
  centre atoms. Any irreps; the reference for the other two.
- ``ScalarProducts``: for scalar inputs (mul x 0e), where 0e (x) l -> l is a plain
  product and no Clebsch-Gordan coupling is needed.
- ``NeighborMatrixProducts``: on the padded (n_atoms, slots) neighbour matrix, a batched
  matrix product per atom followed by an atom-sized coupling
  (``ase_mpnn.nn.neighbor_matrix``), when all paths share one multiplicity.

``EquivariantConvolution`` builds the applicable paths once and picks one per call from
the layout of its ``EdgeInputs``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

import torch
from e3nn import o3
from torch import nn

from .chunks import map_chunks, split_edges, uniform_chunks
from .e3nn_patches import exact_constants_
from .equivariant import EdgeInputs, RadialMLP, radial_weights
from .neighbor_matrix import CouplingTables
from .paired_gather import gather_bonds, gather_neighbors
from .scatter import scatter_sum


class ConvolutionPath(Protocol):
    """One way of computing the summed messages of a convolution."""

    def neighbor_sum(self, h: torch.Tensor, inputs: EdgeInputs,
                     radial: RadialMLP) -> torch.Tensor:
        """sum_j R(r_ij) u(r_ij) [h_j (x) Y(r_ij)] for every atom i: (n_atoms, irreps_out.dim)
        of the tensor product's (unsimplified) output irreps, before the divisor."""


def _index(values: list[int]) -> torch.Tensor:
    """An int64 index table."""
    return torch.tensor(values, dtype=torch.int64)


# --- the general path: e3nn's tensor product on every edge -----------------------------------
class EdgeTensorProduct(o3.TensorProduct):
    """The convolution's tensor product h_j (x) Y_ij, with per-edge weights, and its
    neighbour sum on the edges (the general path, any irreps).

    Every product of an input irrep l1 with a spherical harmonic l2 into an irrep l3 that
    ``keep`` accepts becomes one "uvu" path: the u-th channel of h_j times Y_l2, coupled by
    Clebsch-Gordan coefficients, weighted per edge and channel (``weight_numel`` weights
    per edge). The output irreps are sorted (not simplified).
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, keep: Iterable[o3.Irrep]):
        irreps_out, instructions = _uvu_paths(o3.Irreps(irreps_in), o3.Irreps(irreps_sh), keep)
        super().__init__(irreps_in, irreps_sh, irreps_out, instructions,
                         shared_weights=False, internal_weights=False)

    def neighbor_sum(self, h: torch.Tensor, inputs: EdgeInputs,
                     radial: RadialMLP) -> torch.Tensor:
        """h (n_atoms, irreps_in.dim) -> (n_atoms, irreps_out.dim): the tensor product on
        each row of ``inputs``, summed onto its centre atom."""
        weights = radial_weights(radial, inputs)
        h_neighbors = h.index_select(0, inputs.neighbors)
        return scatter_sum(self(h_neighbors, inputs.sh, weights), inputs.centers, h.shape[0])


def _uvu_paths(irreps_in: o3.Irreps, irreps_sh: o3.Irreps,
               keep: Iterable[o3.Irrep]) -> tuple[o3.Irreps, list[tuple]]:
    """The sorted output irreps and the e3nn instructions of every "uvu" path
    irreps_in[i] (x) irreps_sh[j] -> an irrep of ``keep``; ValueError when there is none."""
    keep = {o3.Irrep(ir) for ir in keep}
    irreps_mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in keep:
                    instructions.append((i, j, len(irreps_mid), "uvu", True))
                    irreps_mid.append((mul, ir_out))
    if not instructions:
        raise ValueError(f"no tensor-product path from {irreps_in} x {irreps_sh} to {keep}")
    irreps_sorted, permutation, _ = o3.Irreps(irreps_mid).sort()
    return irreps_sorted, [(i, j, permutation[k], mode, train)
                           for i, j, k, mode, train in instructions]


# --- scalar inputs: plain products ---------------------------------------------------------
class ScalarProducts(nn.Module):
    """The neighbour sum for scalar inputs (one block mul x 0e), without a tensor product.

    Then 0e (x) l -> l is a plain product: out[u, m] = c * w_u * h_u * Y_lm, where
    c = path_weight / sqrt(2l+1) (e3nn's Wigner 3j (0, l, l) is delta_mm' / sqrt(2l+1)).
    MACE's default 32x0e features and every first layer qualify.

    Buffers list, column by column of the output (paths in output order, then m): the Y
    component used (``sh_column``), the path whose radial weight multiplies it
    (``path_of_column``) and the constant c (``column_scale``); ``widths`` is the number
    of columns (2l+1) of each path.
    """

    def __init__(self, tp: o3.TensorProduct):
        super().__init__()
        sh_slices = tp.irreps_in2.slices()
        sh_column, path_of_column, scale, self.widths = [], [], [], []
        for k, ins in sorted(enumerate(tp.instructions), key=lambda item: item[1].i_out):
            columns = range(sh_slices[ins.i_in2].start, sh_slices[ins.i_in2].stop)
            c = float(ins.path_weight) / math.sqrt(tp.irreps_out[ins.i_out].ir.dim)
            sh_column += list(columns)
            path_of_column += [k] * len(columns)
            scale += [c] * len(columns)
            self.widths.append(len(columns))
        self.register_buffer("sh_column", _index(sh_column), persistent=False)
        self.register_buffer("path_of_column", _index(path_of_column), persistent=False)
        self.register_buffer("column_scale", torch.tensor(scale, dtype=torch.get_default_dtype()),
                             persistent=False)
        self._exact_constants = {"column_scale": torch.tensor(scale, dtype=torch.float64)}

    @classmethod
    def for_tensor_product(cls, tp: o3.TensorProduct) -> ScalarProducts | None:
        """The scalar path of ``tp``, or None unless its first input is one block mul x 0e."""
        irreps_in = tp.irreps_in1
        if len(irreps_in) != 1 or irreps_in[0].ir != o3.Irrep("0e"):
            return None
        return cls(tp)

    def neighbor_sum(self, h: torch.Tensor, inputs: EdgeInputs,
                     radial: RadialMLP) -> torch.Tensor:
        """h (n_atoms, mul) -> (n_atoms, irreps_out.dim), summed over each atom's rows."""
        weights = radial_weights(radial, inputs)
        h_neighbors = h.index_select(0, inputs.neighbors)
        return self.summed(h_neighbors, inputs.sh, weights, inputs.centers, h.shape[0])

    def summed(self, h_neighbors: torch.Tensor, sh: torch.Tensor, weights: torch.Tensor,
               centers: torch.Tensor, n_atoms: int) -> torch.Tensor:
        """The summed tensor product from per-edge tensors: h_neighbors (E, mul), sh
        (E, irreps_sh.dim), weights (E, paths * mul), centers (E,) -> (n_atoms, out dim).

        One broadcast product per edge, (E, columns, mul), summed onto atoms before it is
        put into e3nn's layout [mul x (2l+1) per path]: no per-path slicing or
        concatenation of edge-sized tensors, whose backward passes would allocate
        zero-filled edge-sized buffers.
        """
        n_edges, mul = h_neighbors.shape
        n_paths = len(self.widths)
        weighted = weights.view(n_edges, n_paths, mul) * h_neighbors[:, None, :]  # (E, paths, mul)
        y = sh.index_select(1, self.sh_column) * self.column_scale  # (E, columns)
        messages = weighted.index_select(1, self.path_of_column) * y[:, :, None]  # (E, cols, mul)
        summed = scatter_sum(messages, centers, n_atoms)  # (n_atoms, columns, mul)
        blocks = torch.split(summed, self.widths, dim=1)
        return torch.cat([b.transpose(1, 2).reshape(n_atoms, -1) for b in blocks], dim=1)


# --- the neighbour matrix: one batched matmul per atom -------------------------------------
class NeighborMatrixProducts(nn.Module):
    """The neighbour sum on the rows of the (n_atoms, slots) neighbour matrix
    (``ase_mpnn.nn.neighbor_matrix``): S_i = sum_j a_ij Y_ij^T by one bmm per atom, then
    the Clebsch-Gordan coupling on atom-sized tensors.

    Buffers are the ``CouplingTables`` of the tensor product: ``in_permutation``,
    ``path_of_q``, ``column_of_q``, ``out_permutation`` (int64) and ``coupling``
    (Q * D, P), exact in any dtype. Atoms are processed in chunks of whole rows
    (``ase_mpnn.nn.chunks``).
    """

    def __init__(self, tables: CouplingTables):
        super().__init__()
        self.register_buffer("in_permutation", _index(tables.in_permutation), persistent=False)
        self.register_buffer("path_of_q", _index(tables.path_of_q), persistent=False)
        self.register_buffer("column_of_q", _index(tables.column_of_q), persistent=False)
        self.register_buffer("out_permutation", _index(tables.out_permutation),
                             persistent=False)
        self.register_buffer("coupling", tables.coupling.to(torch.get_default_dtype()),
                             persistent=False)
        self._exact_constants = {"coupling": tables.coupling}
        self.mul, self.n_q = tables.mul, len(tables.path_of_q)
        self.n_p = tables.coupling.shape[1]
        # scalar inputs: q = path, one input column, so a = w * h by broadcasting
        self.scalar_inputs = (tables.path_of_q == list(range(self.n_q))
                              and set(tables.column_of_q) == {0})
        # for full lists (paired_sum): the radial weight columns of a[(q, u)], and the
        # columns of h it reads (scalar inputs: the mul channels, broadcast over q)
        mul, q_u = self.mul, [(q, u) for q in range(self.n_q) for u in range(self.mul)]
        self.register_buffer("weight_columns", _index(
            [tables.path_of_q[q] * mul + u for q, u in q_u]), persistent=False)
        h_columns = (tables.in_permutation[:mul] if self.scalar_inputs else
                     [tables.in_permutation[tables.column_of_q[q] * mul + u] for q, u in q_u])
        # as a one-hot matrix: h @ it is a matrix product, whose backward is one too (a
        # column gather's backward is a scatter, and a compiled program would fuse the
        # gather into every read of its result as a scalar load)
        selection = torch.zeros(len(tables.in_permutation), len(h_columns))
        selection[h_columns, torch.arange(len(h_columns))] = 1.0
        self.register_buffer("h_selection", selection.to(torch.get_default_dtype()),
                             persistent=False)

    @classmethod
    def for_tensor_product(cls, tp: o3.TensorProduct) -> NeighborMatrixProducts | None:
        """The neighbour-matrix path of ``tp``, or None when its paths' multiplicities
        differ (then only the edge paths are used)."""
        try:
            return cls(CouplingTables(tp, exact_constants_))
        except ValueError:
            return None

    def neighbor_sum(self, h: torch.Tensor, inputs: EdgeInputs,
                     radial: RadialMLP) -> torch.Tensor:
        """h (n_atoms, irreps_in.dim) -> (n_atoms, irreps_out.dim); ``inputs`` in the
        neighbour-matrix layout (``inputs.slots > 0``)."""
        slots = inputs.slots
        chunks = uniform_chunks(h.shape[0], slots)
        # the message is bilinear in weights and Y: the envelope goes on the narrower Y
        # (and zeroes the padded rows, whatever weights they read)
        y = inputs.sh * inputs.envelope[:, None]
        if inputs.pairs is not None and len(chunks) == 1:
            return self.paired_sum(h, y, inputs, radial)
        h_permuted = h.index_select(1, self.in_permutation)
        if inputs.bond_of_row is None:
            pieces = split_edges(chunks, y, inputs.basis, inputs.neighbors)

            def weights(basis: torch.Tensor) -> torch.Tensor:
                return radial(basis, None)
        else:
            pieces = split_edges(chunks, y, inputs.bond_of_row, inputs.neighbors)
            bond_weights = radial(inputs.bond_basis, None)

            def weights(bond_of_row: torch.Tensor) -> torch.Tensor:
                return bond_weights.index_select(0, bond_of_row)

        def block(k: int) -> torch.Tensor:
            y, rows, neighbors = pieces[k]
            return self.block(h_permuted, y, weights(rows), neighbors, slots)

        return map_chunks(block, chunks)

    def block(self, h_permuted: torch.Tensor, sh: torch.Tensor, weights: torch.Tensor,
              neighbors: torch.Tensor, n_slots: int) -> torch.Tensor:
        """The summed tensor product on rows of the neighbour matrix, for the rows' atoms:
        (rows // n_slots, irreps_out.dim).

        a[r, (k, m1), u] = w_r[k, u] h_j(r)[u, m1] on the rows, one bmm per atom over its
        slots against Y, then the Clebsch-Gordan coupling on the atoms (module docstring of
        ``ase_mpnn.nn.neighbor_matrix``). ``h_permuted`` is all atoms' features with
        columns in ``in_permutation`` order; sh (rows, D), weights (rows, paths * mul),
        neighbors (rows,).
        """
        rows = neighbors.shape[0]
        n_atoms = rows // n_slots
        mul = self.mul
        h_rows = h_permuted.index_select(0, neighbors)
        h_rows = h_rows.view(rows, -1, mul)  # (rows, sum of m1 over input irreps, mul)
        w = weights.view(rows, -1, mul)  # (rows, paths, mul)
        if self.scalar_inputs:
            a = w * h_rows
        else:
            a = w.index_select(1, self.path_of_q) * h_rows.index_select(1, self.column_of_q)
        return self.coupled(a, sh, n_atoms, n_slots)

    def paired_sum(self, h: torch.Tensor, y: torch.Tensor, inputs: EdgeInputs,
                   radial: RadialMLP) -> torch.Tensor:
        """``block`` on the whole matrix of a full list (``inputs.pairs``), with no
        row-sized scatter in its backward (``ase_mpnn.nn.paired_gather``) and no
        row-sized column selection: the columns of a are picked from the atoms' h and
        from the radial MLP's last weights. y: (rows, D), Y times the envelope."""
        n_atoms, n_slots = h.shape[0], inputs.slots
        rows = n_atoms * n_slots
        h_rows = gather_neighbors(h @ self.h_selection, inputs.neighbors,
                                  inputs.pairs)  # (rows, Q * mul), scalar inputs (rows, mul)
        bond_weights = radial(inputs.bond_basis, None, self.weight_columns)
        w = gather_bonds(bond_weights, inputs.bond_of_row, inputs.pairs)  # (rows, Q * mul)
        a = w.view(rows, self.n_q, self.mul) * h_rows.view(rows, -1, self.mul)
        return self.coupled(a, y, n_atoms, n_slots)

    def coupled(self, a: torch.Tensor, sh: torch.Tensor, n_atoms: int,
                n_slots: int) -> torch.Tensor:
        """a (rows, Q, mul) and sh (rows, D) of whole atoms' rows -> the summed, coupled
        tensor product (n_atoms, irreps_out.dim): S_i = sum_slots Y a by one bmm per atom,
        then the Clebsch-Gordan coupling."""
        n_q, mul = self.n_q, self.mul
        # the narrow Y is the transposed operand: a (rows x Q * mul) is never copied
        y = sh.view(n_atoms, n_slots, -1).transpose(1, 2)  # (n_atoms, D, slots)
        s = torch.bmm(y, a.view(n_atoms, n_slots, n_q * mul))  # (n_atoms, D, Q * mul)
        s = s.view(n_atoms, -1, n_q, mul).permute(0, 3, 2, 1).reshape(n_atoms * mul, -1)
        out = (s @ self.coupling).view(n_atoms, mul * self.n_p)  # [u][(k, m3)]
        return out.index_select(1, self.out_permutation)


# --- the convolution ------------------------------------------------------------------------
class EquivariantConvolution(nn.Module):
    """Point convolution sum_j R(r_ij) u(r_ij) [h_j (x) Y(r_ij)] / avg_num_neighbors.

    Args:
        irreps_in: node-feature irreps.
        irreps_sh: spherical-harmonics irreps of the edge directions.
        keep: the output irreps (l, parity) to produce; others are dropped.
        n_basis, radial_hidden, radial_layers: radial MLP shape.
        avg_num_neighbors: constant divisor of the neighbour sum.

    ``irreps_out`` is sorted and simplified (same irreps from different paths merged).
    Submodules: ``tp`` (the tensor product, also the general edge path), ``radial`` (the
    per-edge weights), and, where they apply, ``scalar_path`` (scalar inputs on edges)
    and ``matrix_path`` (the neighbour-matrix layout), which hold no parameters.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        keep: Iterable[o3.Irrep],
        n_basis: int,
        radial_hidden: int,
        radial_layers: int,
        avg_num_neighbors: float,
    ):
        super().__init__()
        self.tp = EdgeTensorProduct(irreps_in, irreps_sh, keep)
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = self.tp.irreps_out.simplify()
        self.radial = RadialMLP(n_basis, self.tp.weight_numel, radial_hidden, radial_layers)
        self.inv_avg_num_neighbors = 1.0 / float(avg_num_neighbors)
        self.scalar_path = ScalarProducts.for_tensor_product(self.tp)
        self.matrix_path = NeighborMatrixProducts.for_tensor_product(self.tp)

    def path(self, inputs: EdgeInputs) -> ConvolutionPath:
        """The neighbour-matrix path for rows in that layout, else the scalar path for
        scalar inputs, else e3nn's tensor product on the edges."""
        if inputs.slots and self.matrix_path is not None:
            return self.matrix_path
        return self.tp if self.scalar_path is None else self.scalar_path

    def forward(self, h: torch.Tensor, inputs: EdgeInputs) -> torch.Tensor:
        """h (n_atoms, irreps_in.dim) -> (n_atoms, irreps_out.dim).

        Rows of ``inputs`` are edges (slots = 0) or the neighbour matrix's
        (n_atoms * slots); both give the same sums.
        """
        summed = self.path(inputs).neighbor_sum(h, inputs, self.radial)
        return summed * self.inv_avg_num_neighbors
