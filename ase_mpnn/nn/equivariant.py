"""E(3)-equivariant building blocks shared by NequIP and MACE, built on e3nn.

Node features are e3nn irreps tensors: (n_atoms, irreps.dim), each irrep block laid out
channel-major ((mul, 2l+1) flattened), in e3nn's real spherical-harmonic basis. Geometry
enters only through the edge vectors r_ij: their direction through spherical harmonics
Y(r_ij / |r_ij|) and their length through a Bessel basis times a polynomial envelope.

The convolution (Thomas et al. 2018; NequIP, Batzner et al. 2022; MACE, Batatia et al.
2022) sends along each edge

    m_ij = R(|r_ij|) u(|r_ij|) * (h_j (x) Y(r_ij))

(a "uvu" tensor product: channel u of h_j times each Y_l, one learned radial weight per
channel and path) and sums it over neighbours divided by a fixed ``avg_num_neighbors``.
The divisor is a constant hyper-parameter, never a statistic of the structure at hand, so
energies stay extensive and smooth. The envelope u(r) multiplies every radial weight, so
each message and its first two derivatives vanish at the cutoff.

e3nn stores its Clebsch-Gordan tables (Wigner 3j symbols) as buffers created in torch's
default dtype, float32; a model moved to float64 would keep float32-rounded coefficients
and be equivariant only to ~1e-7. ``ExactConstantsMixin`` rewrites them from e3nn's
float64 tables after every dtype/device move and every state-dict load.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Iterable

import numpy as np
import torch
from e3nn import o3
from torch import nn

from .chunks import map_chunks, split_edges, uniform_chunks
from .neighbor_matrix import CouplingTables, neighbor_slots, to_slots
from .radial import BesselBasis, PolynomialCutoff
from .scatter import scatter_sum

_W3J_BUFFER = re.compile(r"^_w3j_(\d+)_(\d+)_(\d+)$")


# --- hyper-parameter validation --------------------------------------------------------
def check_integer(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], or a ValueError naming ``name`` and the range.

    Integral floats (3.0) are accepted; bools, fractions and strings are not.
    """
    allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
    integral = (isinstance(value, numbers.Integral)
                or (isinstance(value, float) and value.is_integer()))
    if isinstance(value, bool) or not integral:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def check_positive(name: str, value) -> float:
    """``value`` as a finite float > 0, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


# --- irreps helpers ----------------------------------------------------------------------
def natural_irreps(l_max: int, mul: int = 1) -> o3.Irreps:
    """mul x (0e + 1o + 2e + ...) up to l_max: the parities (-1)^l of spherical harmonics."""
    return o3.Irreps([(mul, (l, (-1) ** l)) for l in range(l_max + 1)])


def species_irreps(n_species: int) -> o3.Irreps:
    """The one-hot species encoding as n_species even scalars."""
    return o3.Irreps(f"{n_species}x0e")


def scalar_dim(irreps: o3.Irreps) -> int:
    """Number of leading even scalars (0e) of ``irreps`` (the part an energy can read)."""
    dim = 0
    for mul, ir in irreps:
        if ir != o3.Irrep("0e"):
            break
        dim += mul
    return dim


# --- exact Clebsch-Gordan constants in any dtype -----------------------------------------
def exact_constants_(module: nn.Module) -> None:
    """Rewrite the constant tables of ``module`` at full precision in their current dtype.

    Two kinds: e3nn's Wigner-3j buffers (``..._w3j_l1_l2_l3``, recomputed from e3nn's
    float64 tables) and the buffers listed in a submodule's ``_exact_constants`` dict
    (name -> float64 master copy, kept off the module's tensors so casts never round it).
    """
    with torch.no_grad():
        for owner in module.modules():
            masters = getattr(owner, "_exact_constants", None)
            for name, buffer in owner._buffers.items():
                if buffer is None or not buffer.is_floating_point():
                    continue
                if masters and name in masters:
                    exact = masters[name]
                else:
                    match = _W3J_BUFFER.match(name)
                    if match is None:
                        continue
                    exact = o3.wigner_3j(*(int(g) for g in match.groups()), dtype=torch.float64)
                if exact.shape == buffer.shape:
                    buffer.copy_(exact.to(device=buffer.device, dtype=buffer.dtype))


def _exact_constants_after_load(module: nn.Module, _incompatible_keys) -> None:
    exact_constants_(module)


class ExactConstantsMixin:
    """Keeps every Clebsch-Gordan table of a module exact after ``.to()`` and loading,
    and strips e3nn's generated code of unused computations.

    Mix in before ``nn.Module`` (``class Model(ExactConstantsMixin, AtomisticModel)``) and
    call ``self._finalize_e3nn()`` at the end of ``__init__``.
    """

    def _finalize_e3nn(self) -> None:
        drop_dead_code_(self)
        self.register_load_state_dict_post_hook(_exact_constants_after_load)
        exact_constants_(self)

    def _apply(self, *args, **kwargs):
        out = super()._apply(*args, **kwargs)
        exact_constants_(self)
        return out


_EINSUMS = (torch.einsum, torch.functional.einsum)


def drop_dead_code_(module: nn.Module) -> None:
    """Remove the einsums whose results are never used from e3nn's generated code.

    e3nn's tensor-product code generator leaves, for each path, a full outer product of
    the inputs that is computed and discarded (it notes "TODO: eliminate_dead_code");
    on edges this costs about as much as the path itself. Only unused einsum nodes go:
    einsum is a pure function, so results are unchanged. (FX's generic
    ``eliminate_dead_code`` is not safe here: it would also drop e3nn's in-place
    ``copy_`` calls, whose results are unused but whose effects are not.)
    """
    for child in module.modules():
        if isinstance(child, torch.fx.GraphModule):
            dead = [node for node in child.graph.nodes
                    if node.op == "call_function" and node.target in _EINSUMS and not node.users]
            for node in dead:
                child.graph.erase_node(node)
            if dead:
                child.recompile()


# --- geometry ------------------------------------------------------------------------------
class EdgeSphericalHarmonics(nn.Module):
    """Y_lm(r_ij / |r_ij|) for l = 0..l_max, component-normalised (each |Y_l|^2 = 2l+1).

    Input (n_edges, 3) edge vectors; output (n_edges, (l_max+1)^2), irreps 0e+1o+2e+...
    """

    def __init__(self, l_max: int):
        super().__init__()
        self.irreps_out = o3.Irreps.spherical_harmonics(l_max)
        self.sh = o3.SphericalHarmonics(self.irreps_out, normalize=True, normalization="component")

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.sh(vectors)


class RadialEmbedding(nn.Module):
    """Bessel basis (n_edges, n_basis) and polynomial envelope u(r) (n_edges,) of |r_ij|.

    The Bessel functions sqrt(2/r_c) sin(k pi r / r_c) / r are orthonormal with weight
    r^2 but only ~0.2 in size where neighbours sit; they are multiplied by one constant
    that gives them unit RMS over r in [r_c/4, r_c], so the radial MLPs start with unit-
    scale inputs. Computed once per forward pass and shared by all layers' radial MLPs.
    """

    def __init__(self, cutoff: float, n_basis: int, p: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.basis = BesselBasis(n_basis, cutoff)
        self.envelope = PolynomialCutoff(cutoff, p)
        grid = torch.linspace(0.25 * cutoff, cutoff, 1001, dtype=torch.float64)
        frequencies = torch.arange(1, n_basis + 1, dtype=torch.float64) * math.pi / cutoff
        values = math.sqrt(2.0 / cutoff) * torch.sin(frequencies * grid[:, None]) / grid[:, None]
        self.normalization = float(values.pow(2).mean().rsqrt())

    def forward(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.basis(lengths) * self.normalization, self.envelope(lengths)


def _silu_second_moment() -> float:
    """E[silu(z)^2] for z ~ N(0, 1), by Gauss-Hermite quadrature (deterministic)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    silu = nodes / (1.0 + np.exp(-nodes))
    return float((weights * silu**2).sum() / np.sqrt(2.0 * np.pi))


class NormalizedSiLU(nn.Module):
    """SiLU scaled so that a unit Gaussian input gives a unit second moment (as e3nn's
    ``normalize2mom``): activations keep their scale through the layers at initialisation."""

    scale = 1.0 / math.sqrt(_silu_second_moment())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(x) * self.scale


def graph_inputs(graph: dict, sh: "EdgeSphericalHarmonics", radial: "RadialEmbedding",
                 n_species: int) -> dict[str, torch.Tensor]:
    """What every equivariant layer reads from a graph that carries edge geometry.

    Returns species (n_atoms,), one-hot species (n_atoms, n_species), and per row r:
    spherical harmonics sh (rows, irreps_sh.dim), radial basis (rows, n_basis), envelope
    (rows,), centers and neighbors (rows,); slots is 0 when the rows are the edges, or
    n_slots when they are the (n_atoms, n_slots) neighbour matrix of
    ``ase_mpnn.nn.neighbor_matrix`` (row i * n_slots + s: the s-th edge of atom i; padded
    rows lie beyond the cutoff, so their envelope, and every message they carry, is zero).
    """
    from .. import keys

    species = graph[keys.SPECIES]
    centers, neighbors = graph[keys.EDGE_INDEX]
    vectors, lengths = graph[keys.EDGE_VECTORS], graph[keys.EDGE_LENGTHS]
    n_atoms, n_slots = species.shape[0], 0
    slots = neighbor_slots(centers, n_atoms)
    if slots is not None:
        positions, n_slots = slots
        rows, far = n_atoms * n_slots, 2.0 * radial.cutoff
        vectors = to_slots(vectors, positions, rows, vectors.new_tensor([far, 0.0, 0.0]))
        lengths = to_slots(lengths, positions, rows, far)
        neighbors = to_slots(neighbors, positions, rows, 0)
        centers = torch.arange(n_atoms, device=centers.device).repeat_interleave(n_slots)
    harmonics = sh(vectors)
    basis, envelope = radial(lengths)
    onehot = nn.functional.one_hot(species, n_species).to(harmonics.dtype)
    return {"species": species, "onehot": onehot, "sh": harmonics, "basis": basis,
            "envelope": envelope, "centers": centers, "neighbors": neighbors, "slots": n_slots}


class RadialMLP(nn.Module):
    """Per-edge tensor-product weights R(r) u(r): an MLP on the Bessel basis, times u(r).

    Hidden layers use a normalised SiLU and no biases; weights are drawn N(0, 1/fan_in)
    so that outputs have roughly unit variance, the scale e3nn's path normalisation
    assumes for the tensor-product weights.
    """

    def __init__(self, n_basis: int, n_out: int, hidden: int, n_hidden_layers: int):
        super().__init__()
        sizes = [n_basis] + [hidden] * n_hidden_layers + [n_out]
        layers: list[nn.Module] = []
        for k, (n_in, n_next) in enumerate(zip(sizes[:-1], sizes[1:])):
            if k:
                layers.append(NormalizedSiLU())
            linear = nn.Linear(n_in, n_next, bias=False)
            nn.init.normal_(linear.weight, std=1.0 / math.sqrt(n_in))
            layers.append(linear)
        self.net = nn.Sequential(*layers)

    def forward(self, basis: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        """basis (n_edges, n_basis), envelope (n_edges,) or None -> (n_edges, n_out)."""
        x, scale = basis, None
        for module in self.net:
            if isinstance(module, NormalizedSiLU):  # its scale goes into the next weights
                x, scale = nn.functional.silu(x), module.scale
            else:
                weight = module.weight if scale is None else module.weight * scale
                x = nn.functional.linear(x, weight)
        return x if envelope is None else x * envelope[:, None]


class EquivariantConvolution(nn.Module):
    """Point convolution sum_j R(r_ij) u(r_ij) [h_j (x) Y(r_ij)] / avg_num_neighbors.

    Every product of an input irrep l1 with a spherical harmonic l2 into an irrep l3 that
    ``keep`` accepts becomes one "uvu" path: the u-th channel of h_j times Y_l2, coupled by
    Clebsch-Gordan coefficients, weighted per edge and channel by the radial MLP.

    Args:
        irreps_in: node-feature irreps.
        irreps_sh: spherical-harmonics irreps of the edge directions.
        keep: the output irreps (l, parity) to produce; others are dropped.
        n_basis, radial_hidden, radial_layers: radial MLP shape.
        avg_num_neighbors: constant divisor of the neighbour sum.

    ``irreps_out`` is sorted and simplified (same irreps from different paths merged).
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
        irreps_mid = o3.Irreps(irreps_mid)
        irreps_sorted, permutation, _ = irreps_mid.sort()
        instructions = [(i, j, permutation[k], mode, train)
                        for i, j, k, mode, train in instructions]
        self.tp = o3.TensorProduct(
            irreps_in, irreps_sh, irreps_sorted, instructions,
            shared_weights=False, internal_weights=False,
        )
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = irreps_sorted.simplify()
        self.radial = RadialMLP(n_basis, self.tp.weight_numel, radial_hidden, radial_layers)
        self.inv_avg_num_neighbors = 1.0 / float(avg_num_neighbors)
        self.scalar_paths = self._scalar_paths(o3.Irreps(irreps_sh))
        self.matrix = self._matrix_tables()

    def _scalar_paths(self, irreps_sh: o3.Irreps) -> dict[str, torch.Tensor | list] | None:
        """For scalar inputs (one block mul x 0e), the index tables of the product fast path.

        Then 0e (x) l -> l is a plain product: out[u, m] = c * w_u * h_u * Y_lm, where
        c = path_weight / sqrt(2l+1) (e3nn's Wigner 3j (0, l, l) is delta_mm' / sqrt(2l+1)), so
        the convolution needs no tensor-product kernel: MACE's default 32x0e features and
        every first layer take this path. Returns None for other inputs.

        The tables list, column by column of the output (paths in output order, then m):
        the Y component used, the path whose radial weight multiplies it and the constant c.
        """
        if len(self.irreps_in) != 1 or self.irreps_in[0].ir != o3.Irrep("0e"):
            return None
        sh_slices = irreps_sh.slices()
        out_irreps = self.tp.irreps_out
        sh_column, path_of_column, scale, widths = [], [], [], []
        for k, ins in sorted(enumerate(self.tp.instructions), key=lambda item: item[1].i_out):
            columns = range(sh_slices[ins.i_in2].start, sh_slices[ins.i_in2].stop)
            sh_column += list(columns)
            path_of_column += [k] * len(columns)
            scale += [float(ins.path_weight) / math.sqrt(out_irreps[ins.i_out].ir.dim)] * len(columns)
            widths.append(len(columns))
        as_index = lambda values: torch.tensor(values, dtype=torch.int64)  # noqa: E731
        self.register_buffer("_sh_column", as_index(sh_column), persistent=False)
        self.register_buffer("_path_of_column", as_index(path_of_column), persistent=False)
        self.register_buffer("_column_scale", torch.tensor(scale, dtype=torch.get_default_dtype()),
                             persistent=False)
        self._exact_constants = {"_column_scale": torch.tensor(scale, dtype=torch.float64)}
        return {"widths": widths}

    def _matrix_tables(self) -> dict[str, int | bool] | None:
        """Buffers of the neighbour-matrix path (``ase_mpnn.nn.neighbor_matrix``); None
        when the paths' multiplicities differ (then only the edge paths are used)."""
        try:
            tables = CouplingTables(self.tp, exact_constants_)
        except ValueError:
            return None
        as_index = lambda values: torch.tensor(values, dtype=torch.int64)  # noqa: E731
        self.register_buffer("_in_permutation", as_index(tables.in_permutation), persistent=False)
        self.register_buffer("_path_of_q", as_index(tables.path_of_q), persistent=False)
        self.register_buffer("_column_of_q", as_index(tables.column_of_q), persistent=False)
        self.register_buffer("_out_permutation", as_index(tables.out_permutation),
                             persistent=False)
        self.register_buffer("_coupling", tables.coupling.to(torch.get_default_dtype()),
                             persistent=False)
        self._exact_constants = {**getattr(self, "_exact_constants", {}),
                                 "_coupling": tables.coupling}
        n_q = len(tables.path_of_q)
        # scalar inputs: q = path, one input column, so a = w * h by broadcasting
        scalar = tables.path_of_q == list(range(n_q)) and set(tables.column_of_q) == {0}
        return {"mul": tables.mul, "n_q": n_q, "n_p": tables.coupling.shape[1],
                "scalar": scalar}

    def _matrix_block(self, h_permuted: torch.Tensor, sh: torch.Tensor, weights: torch.Tensor,
                      neighbors: torch.Tensor, n_slots: int) -> torch.Tensor:
        """The summed tensor product on rows of the neighbour matrix, for the rows' atoms:
        (rows // n_slots, irreps_out.dim).

        a[r, (k, m1), u] = w_r[k, u] h_j(r)[u, m1] on the rows, one bmm per atom over its
        slots against Y, then the Clebsch-Gordan coupling on the atoms (module docstring of
        ``ase_mpnn.nn.neighbor_matrix``). ``h_permuted`` is all atoms' features with
        columns in ``_in_permutation`` order.
        """
        rows = neighbors.shape[0]
        n_atoms = rows // n_slots
        mul, n_q, n_p = self.matrix["mul"], self.matrix["n_q"], self.matrix["n_p"]
        h_rows = h_permuted.index_select(0, neighbors)
        h_rows = h_rows.view(rows, -1, mul)  # (rows, sum of m1 over input irreps, mul)
        w = weights.view(rows, -1, mul)  # (rows, paths, mul)
        if self.matrix["scalar"]:
            a = w * h_rows
        else:
            a = w.index_select(1, self._path_of_q) * h_rows.index_select(1, self._column_of_q)
        # the narrow Y is the transposed operand: a (rows x Q * mul) is never copied
        y = sh.view(n_atoms, n_slots, -1).transpose(1, 2)  # (n_atoms, D, slots)
        s = torch.bmm(y, a.view(n_atoms, n_slots, n_q * mul))  # (n_atoms, D, Q * mul)
        s = s.view(n_atoms, -1, n_q, mul).permute(0, 3, 2, 1).reshape(n_atoms * mul, -1)
        out = (s @ self._coupling).view(n_atoms, mul * n_p)  # [u][(k, m3)]
        return out.index_select(1, self._out_permutation)

    def _scalar_convolution(self, h_neighbors: torch.Tensor, sh: torch.Tensor,
                            weights: torch.Tensor, centers: torch.Tensor,
                            n_atoms: int) -> torch.Tensor:
        """The summed tensor product for scalar inputs, (n_atoms, irreps_out.dim).

        One broadcast product per edge, (E, columns, mul), summed onto atoms before it is put
        into e3nn's layout [mul x (2l+1) per path]: no per-path slicing or concatenation of
        edge-sized tensors, whose backward passes (zero-filled edge-sized buffers) dominated
        the cost of training with forces.
        """
        n_edges, mul = h_neighbors.shape
        n_paths = len(self.scalar_paths["widths"])
        weighted = weights.view(n_edges, n_paths, mul) * h_neighbors[:, None, :]  # (E, paths, mul)
        y = sh.index_select(1, self._sh_column) * self._column_scale  # (E, columns)
        messages = weighted.index_select(1, self._path_of_column) * y[:, :, None]  # (E, cols, mul)
        summed = scatter_sum(messages, centers, n_atoms)  # (n_atoms, columns, mul)
        blocks = torch.split(summed, self.scalar_paths["widths"], dim=1)
        return torch.cat([b.transpose(1, 2).reshape(n_atoms, -1) for b in blocks], dim=1)

    def forward(
        self,
        h: torch.Tensor,
        sh: torch.Tensor,
        basis: torch.Tensor,
        envelope: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        slots: int = 0,
    ) -> torch.Tensor:
        """h (n_atoms, irreps_in.dim), sh (rows, irreps_sh.dim) -> (n_atoms, irreps_out.dim).

        Rows are edges (slots = 0) or the neighbour matrix's (n_atoms * slots), as
        ``graph_inputs`` gives them; both give the same sums.
        """
        if slots and self.matrix is not None:
            h_permuted = h.index_select(1, self._in_permutation)
            chunks = uniform_chunks(h.shape[0], slots)
            # the message is bilinear in weights and Y: the envelope goes on the narrower Y
            pieces = split_edges(chunks, sh * envelope[:, None], basis, neighbors)

            def block(k: int) -> torch.Tensor:
                y, b, n = pieces[k]
                return self._matrix_block(h_permuted, y, self.radial(b, None), n, slots)

            return map_chunks(block, chunks) * self.inv_avg_num_neighbors
        weights = self.radial(basis, envelope)
        h_neighbors = h.index_select(0, neighbors)
        if self.scalar_paths is not None:
            summed = self._scalar_convolution(h_neighbors, sh, weights, centers, h.shape[0])
        else:
            summed = scatter_sum(self.tp(h_neighbors, sh, weights), centers, h.shape[0])
        return summed * self.inv_avg_num_neighbors
