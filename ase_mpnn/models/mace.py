"""MACE (Batatia et al., NeurIPS 2022, arXiv:2206.07697): higher body-order messages.

Each layer t builds, for every atom i, an equivariant *atomic basis* from one two-body
convolution over its neighbours,

    A_i = Linear( sum_j R(r_ij) u(r_ij) [W_up h_j (x) Y(r_ij)] / avg_num_neighbors ),

with channels k and components (l, m), l <= max_ell. The *product basis* then takes
symmetric products of A_i with itself, channel by channel, up to ``correlation`` factors:

    B_i,k,LM = sum_{nu <= correlation} sum_eta W[z_i, nu, eta, k]
               sum_{lm_1..lm_nu} C^{LM}_{eta, lm_1..lm_nu} A_i,k,lm_1 ... A_i,k,lm_nu

where C_eta runs over a basis of the rotation- and reflection-equivariant, fully symmetric
couplings of nu copies of A into the output irrep L (the paper's generalised Clebsch-Gordan
coefficients) and W depends on the element z_i of the centre atom. A product of nu
two-body A's is a (nu+1)-body function of the neighbourhood, obtained at the cost of one
neighbour sum: that is MACE's trick. The message m_i = Linear(B_i) updates the features,
h_i <- m_i + Linear_z(h_i) (an element-dependent self-connection, absent in the first
layer), and each layer reads out an energy from its scalars; the per-atom energy is the
sum over layers (the last readout a small MLP).

Units: lengths in Angstrom; the output is an unscaled energy per atom.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from typing import Sequence

import torch
from e3nn import o3
from torch import nn

from ..nn.equivariant import (
    EdgeSphericalHarmonics,
    EquivariantConvolution,
    ExactConstantsMixin,
    RadialEmbedding,
    check_integer,
    check_positive,
    graph_inputs,
    natural_irreps,
    scalar_dim,
    species_irreps,
)
from .base import AtomisticModel, register_architecture

MAX_ELL = 4  # largest spherical-harmonic order of the atomic basis A
MAX_CORRELATION = 3  # largest number of A's multiplied (body order correlation + 1)


# --- the symmetric coupling basis (generalised Clebsch-Gordan coefficients) -------------
def _coupling_trees(ls: Sequence[int], l_out: int) -> list[torch.Tensor]:
    """Left-coupled Clebsch-Gordan trees ((l1 (x) l2)_k1 (x) l3)_k2 ... -> l_out.

    One tensor (2 l_out + 1, 2 l1 + 1, ..., 2 l_nu + 1) per choice of the intermediate
    irreps k; together they span the equivariant maps V_l1 (x) ... (x) V_l_nu -> V_l_out.
    """
    trees = [(ls[0], torch.eye(2 * ls[0] + 1, dtype=torch.float64))]  # (k, (2k+1, ...))
    for position, l_b in enumerate(ls[1:], start=2):
        last = position == len(ls)
        grown = []
        for l_a, tensor in trees:
            targets = [l_out] if last else range(abs(l_a - l_b), l_a + l_b + 1)
            for l_c in targets:
                if abs(l_a - l_b) <= l_c <= l_a + l_b:
                    w3j = o3.wigner_3j(l_a, l_b, l_c, dtype=torch.float64)
                    grown.append((l_c, torch.einsum("abc,a...->c...b", w3j, tensor)))
        trees = grown
    return [tensor for l, tensor in trees if l == l_out]


@functools.lru_cache(maxsize=None)
def coupling_basis(l_max: int, order: int, l_out: int) -> torch.Tensor:
    """Basis of the symmetric, O(3)-equivariant maps of ``order`` copies of A into l_out.

    A has components 0e+1o+...+(l_max, (-1)^l_max), D = (l_max+1)^2 of them. For every
    multiset l1 <= ... <= l_nu with parity (-1)^(l1+...+l_nu) = (-1)^l_out, the
    Clebsch-Gordan trees coupling those factors to l_out are placed in their block of the
    full (2 l_out + 1, D, ..., D) tensor and symmetrised over the order of the factors
    (products of one A commute); a Gram-Schmidt pass keeps an orthonormal, linearly
    independent set (blocks of different multisets are orthogonal already). These are the
    paper's generalised Clebsch-Gordan coefficients. Deterministic, float64; cached: do
    not modify the result.

    Returns:
        (n_paths, 2 l_out + 1, D, ..., D) with ``order`` trailing D axes; n_paths may be 0.
    """
    dim = (l_max + 1) ** 2
    shape = (2 * l_out + 1, *([dim] * order))
    permutations = list(itertools.permutations(range(1, order + 1)))
    basis: list[torch.Tensor] = []
    for ls in itertools.combinations_with_replacement(range(l_max + 1), order):
        if (sum(ls) - l_out) % 2:
            continue
        block = (slice(None), *(slice(l * l, (l + 1) ** 2) for l in ls))
        found: list[torch.Tensor] = []
        for tree in _coupling_trees(ls, l_out):
            full = torch.zeros(shape, dtype=torch.float64)
            full[block] = tree
            vector = sum(full.permute(0, *p) for p in permutations).flatten()
            scale = torch.linalg.vector_norm(vector)
            for other in found:  # modified Gram-Schmidt
                vector = vector - (other @ vector) * other
            norm = torch.linalg.vector_norm(vector)
            if norm > 1e-8 * scale and norm > 1e-12:
                found.append(vector / norm)
        basis += found
    if not basis:
        return torch.zeros((0, *shape), dtype=torch.float64)
    return torch.stack(basis).reshape(-1, *shape)


class SymmetricContraction(nn.Module):
    """The product basis B = sum_nu W[z, nu, eta, k] C_eta A_k^(x)nu, channel by channel.

    The coupling tensors are symmetric, so each is stored once per monomial
    A_a A_b ... with a <= b <= ... (times its number of orderings); monomials that no
    coupling uses are dropped. Per call: gather the needed products of components of A,
    one matrix product with the constant coefficient matrix, then the element-dependent
    weights. This spans exactly what chaining e3nn tensor products channel-wise,
    (A (x) A) (x) A, and mixing their outputs would (tests check the span), without
    their identically-zero antisymmetric paths and linearly dependent copies; for the
    default 32x(0e..3o) A it needs 150 products of components per channel and 13 weights.

    Args:
        n_channels: channels k of A (and of the output).
        l_max: A has irreps n_channels x (0e + 1o + ... + l_max).
        out_ls: output irreps n_channels x (l, (-1)^l) for l in out_ls.
        correlation: largest number of factors nu.
        n_species: elements, for the weights W[z].
    """

    ATOMS_PER_BLOCK = 1024

    def __init__(self, n_channels: int, l_max: int, out_ls: Sequence[int], correlation: int,
                 n_species: int):
        super().__init__()
        if correlation not in range(1, MAX_CORRELATION + 1):
            raise ValueError(f"correlation must be an integer in 1..{MAX_CORRELATION}, "
                             f"got {correlation!r}")
        self.n_channels, self.l_max, self.out_ls = n_channels, l_max, list(out_ls)
        self.irreps_in = natural_irreps(l_max, n_channels)
        self.irreps_out = o3.Irreps([(n_channels, (l, (-1) ** l)) for l in self.out_ls])
        dim = (l_max + 1) ** 2
        # columns: for each output l, each path (order, eta), each m; rows: monomials of A
        monomial_rows: dict[tuple[int, ...], dict[int, float]] = {}
        self.paths_per_l: list[int] = []
        self.path_orders: list[list[int]] = []  # number of factors of each path, per l
        col = 0
        for l_out in self.out_ls:
            n_paths = 0
            self.path_orders.append([])
            for order in range(1, correlation + 1):
                basis = coupling_basis(l_max, order, l_out)
                for path in range(basis.shape[0]):
                    self.path_orders[-1].append(order)
                    for m in range(2 * l_out + 1):
                        block = basis[path, m]
                        for index in torch.nonzero(block.abs() > 1e-14).tolist():
                            monomial = tuple(sorted(index))
                            if tuple(index) != monomial:
                                continue  # counted once, with its multiplicity
                            weight = float(block[tuple(index)]) * _orderings(monomial)
                            monomial_rows.setdefault(monomial, {})[col + m] = weight
                    col += 2 * l_out + 1
                n_paths += basis.shape[0]
            self.paths_per_l.append(n_paths)
        if any(n == 0 for n in self.paths_per_l):
            missing = [l for l, n in zip(self.out_ls, self.paths_per_l) if n == 0]
            raise ValueError(f"no symmetric coupling of A (l <= {l_max}) into l = {missing}")
        # monomials in order of degree; pairs needed by degree-2 or degree-3 monomials
        monomials = sorted(monomial_rows, key=lambda m: (len(m), m))
        pairs = sorted({m[:2] for m in monomials if len(m) >= 2})
        pair_position = {p: k for k, p in enumerate(pairs)}
        singles = [m for m in monomials if len(m) == 1]
        doubles = [m for m in monomials if len(m) == 2]
        triples = [m for m in monomials if len(m) == 3]
        # feature vector: [A_a for singles | A_a A_b for pairs | A_a A_b A_c for triples]
        n_features = len(singles) + len(pairs) + len(triples)
        coefficients = torch.zeros(n_features, col, dtype=torch.float64)
        row_of = {m: k for k, m in enumerate(singles)}
        row_of.update({m: len(singles) + pair_position[m] for m in doubles})
        row_of.update({m: len(singles) + len(pairs) + k for k, m in enumerate(triples)})
        for monomial, entries in monomial_rows.items():
            for c, value in entries.items():
                coefficients[row_of[monomial], c] = value
        self._exact_constants = {"coefficients": coefficients}
        self.register_buffer("coefficients", coefficients.to(torch.get_default_dtype()),
                             persistent=False)
        as_index = lambda values: torch.tensor(values, dtype=torch.int64).reshape(-1)  # noqa: E731
        self.register_buffer("single_index", as_index([m[0] for m in singles]), persistent=False)
        self.register_buffer("pair_a", as_index([p[0] for p in pairs]), persistent=False)
        self.register_buffer("pair_b", as_index([p[1] for p in pairs]), persistent=False)
        self.register_buffer("triple_pair", as_index([pair_position[m[:2]] for m in triples]),
                             persistent=False)
        self.register_buffer("triple_c", as_index([m[2] for m in triples]), persistent=False)
        self.has_pairs, self.has_triples = bool(pairs), bool(triples)
        self.dim = dim
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(n_species, n, n_channels) / math.sqrt(n))
            for n in self.paths_per_l
        )
        # (offset, width) of each l block of A in e3nn's channel-major layout
        self._in_blocks = [(n_channels * l * l, 2 * l + 1) for l in range(l_max + 1)]

    def coupled(self, a: torch.Tensor) -> list[torch.Tensor]:
        """The product basis before the element weights: per output l, (n_atoms, k, paths, 2l+1).

        a: (n_atoms, irreps_in.dim) in e3nn layout. Path p of output l has
        ``path_orders[l][p]`` factors of A.
        """
        n, k = a.shape[0], self.n_channels
        # e3nn layout [k x 1 | k x 3 | ...] -> rows (atom, channel), columns D components
        comps = torch.cat([a[:, off:off + k * w].reshape(n, k, w) for off, w in self._in_blocks],
                          dim=2).reshape(n * k, self.dim)
        features = [comps.index_select(1, self.single_index)]
        if self.has_pairs:
            pairs = comps.index_select(1, self.pair_a) * comps.index_select(1, self.pair_b)
            features.append(pairs)
            if self.has_triples:
                features.append(pairs.index_select(1, self.triple_pair)
                                * comps.index_select(1, self.triple_c))
        coupled = torch.cat(features, dim=1) @ self.coefficients  # (n k, sum_l paths (2l+1))
        blocks, start = [], 0
        for l_out, n_paths in zip(self.out_ls, self.paths_per_l):
            width = n_paths * (2 * l_out + 1)
            blocks.append(coupled[:, start:start + width].reshape(n, k, n_paths, 2 * l_out + 1))
            start += width
        return blocks

    def forward(self, a: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """a (n_atoms, irreps_in.dim), species (n_atoms,) -> (n_atoms, irreps_out.dim).

        Atoms are taken in blocks of ATOMS_PER_BLOCK: the (atoms x channels, monomials)
        intermediates stay cache-sized, so the time per atom does not grow with the cell.
        """
        if a.shape[0] <= self.ATOMS_PER_BLOCK:
            return self._contract(a, species)
        return torch.cat([self._contract(a_block, s_block) for a_block, s_block in
                          zip(a.split(self.ATOMS_PER_BLOCK), species.split(self.ATOMS_PER_BLOCK))])

    def _contract(self, a: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        n = a.shape[0]
        outputs = []
        for block, weights in zip(self.coupled(a), self.weights):
            w = weights.index_select(0, species)  # (n, paths, k): element-dependent
            outputs.append(torch.einsum("nkpm,npk->nkm", block, w).reshape(n, -1))
        return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


def _orderings(monomial: tuple[int, ...]) -> int:
    """Number of distinct orderings of a multiset of indices (the multinomial coefficient)."""
    count = math.factorial(len(monomial))
    for repeats in Counter(monomial).values():
        count //= math.factorial(repeats)
    return count


# --- one MACE layer ----------------------------------------------------------------------
class MACELayer(nn.Module):
    """Atomic basis A -> product basis B -> message -> new features (+ self-connection)."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        irreps_sh: o3.Irreps,
        n_channels: int,
        max_ell: int,
        correlation: int,
        n_species: int,
        radial: dict,
        first: bool,
    ):
        super().__init__()
        irreps_a = natural_irreps(max_ell, n_channels)
        self.linear_up = o3.Linear(irreps_in, irreps_in)
        self.conv = EquivariantConvolution(irreps_in, irreps_sh, [ir for _, ir in irreps_a],
                                           **radial)
        self.linear_a = o3.Linear(self.conv.irreps_out, irreps_a)
        self.product = SymmetricContraction(n_channels, max_ell, [ir.l for _, ir in irreps_out],
                                            correlation, n_species)
        self.linear_out = o3.Linear(self.product.irreps_out, irreps_out)
        # MACE's first layer has no residual: its input is only the element embedding
        self.self_connection = None if first else o3.FullyConnectedTensorProduct(
            irreps_in, species_irreps(n_species), irreps_out)
        self.irreps_out = o3.Irreps(irreps_out)

    def forward(self, h, onehot, species, sh, basis, envelope, centers, neighbors, slots=0):
        """h (n_atoms, irreps_in.dim) -> (n_atoms, irreps_out.dim)."""
        a = self.linear_a(self.conv(self.linear_up(h), sh, basis, envelope, centers, neighbors,
                                    slots))
        out = self.linear_out(self.product(a, species))
        if self.self_connection is not None:
            out = out + self.self_connection(h, onehot)
        return out


@register_architecture
class MACE(ExactConstantsMixin, AtomisticModel):
    """MACE: equivariant messages of body order correlation + 1 (Batatia et al. 2022).

    Args:
        species: element symbols the model covers, e.g. ["Cu", "Ni"].
        cutoff: neighbour cutoff radius, Angstrom.
        n_features: channels k of the features, the atomic basis and the product basis.
        hidden_l_max: the features passed between layers are n_features x (0e [+ 1o [+ 2e
            [+ 3o]]]) up to this l (0: invariant messages, MACE's "32x0e" setting).
        max_ell: largest spherical-harmonic order l of the edge directions and of A (0..4).
        correlation: largest number of A's in a product (1..3); body order correlation + 1
            per layer.
        n_layers: message-passing layers (receptive field n_layers * cutoff).
        n_basis: Bessel functions of the distance.
        p: exponent of the polynomial envelope (>= 2).
        radial_hidden, radial_layers: width and number of hidden layers of the radial MLPs.
        readout_hidden: hidden width of the last layer's readout MLP.
        avg_num_neighbors: fixed divisor of the neighbour sums.
    """

    architecture = "MACE"

    def __init__(
        self,
        species: Sequence[str],
        cutoff: float = 5.0,
        n_features: int = 32,
        hidden_l_max: int = 0,
        max_ell: int = 3,
        correlation: int = 3,
        n_layers: int = 2,
        n_basis: int = 8,
        p: int = 5,
        radial_hidden: int = 64,
        radial_layers: int = 3,
        readout_hidden: int = 16,
        avg_num_neighbors: float = 20.0,
    ):
        super().__init__(species, cutoff)
        n_features = check_integer("n_features", n_features, 1)
        max_ell = check_integer("max_ell", max_ell, 0, MAX_ELL)
        hidden_l_max = check_integer("hidden_l_max", hidden_l_max, 0, min(max_ell, 3))
        correlation = check_integer("correlation", correlation, 1, MAX_CORRELATION)
        n_layers = check_integer("n_layers", n_layers, 1)
        n_basis = check_integer("n_basis", n_basis, 1)
        p = check_integer("p", p, 2)
        radial_hidden = check_integer("radial_hidden", radial_hidden, 1)
        radial_layers = check_integer("radial_layers", radial_layers, 0)
        readout_hidden = check_integer("readout_hidden", readout_hidden, 1)
        avg_num_neighbors = check_positive("avg_num_neighbors", avg_num_neighbors)
        self.hyperparameters = dict(
            n_features=n_features, hidden_l_max=hidden_l_max, max_ell=max_ell,
            correlation=correlation, n_layers=n_layers, n_basis=n_basis, p=p,
            radial_hidden=radial_hidden, radial_layers=radial_layers,
            readout_hidden=readout_hidden, avg_num_neighbors=avg_num_neighbors,
        )
        n_species = len(self.species)
        radial = dict(n_basis=n_basis, radial_hidden=radial_hidden, radial_layers=radial_layers,
                      avg_num_neighbors=avg_num_neighbors)
        self.embedding = nn.Embedding(n_species, n_features)  # = Linear(one-hot) -> k x 0e
        self.sh = EdgeSphericalHarmonics(max_ell)
        self.radial = RadialEmbedding(self.cutoff, n_basis, p)
        hidden = natural_irreps(hidden_l_max, n_features)
        scalars = natural_irreps(0, n_features)
        self.layer_irreps: list[o3.Irreps] = []
        layers, irreps_in = [], scalars
        for t in range(n_layers):
            # only scalars leave the last layer: nothing after it could use l > 0
            irreps_out = scalars if t == n_layers - 1 else hidden
            layers.append(MACELayer(irreps_in, irreps_out, self.sh.irreps_out, n_features,
                                    max_ell, correlation, n_species, radial, first=t == 0))
            self.layer_irreps.append(irreps_out)
            irreps_in = irreps_out
        self.layers = nn.ModuleList(layers)
        self.readouts = nn.ModuleList(
            nn.Linear(scalar_dim(irreps), 1, bias=False) for irreps in self.layer_irreps[:-1]
        )
        self.readouts.append(nn.Sequential(nn.Linear(n_features, readout_hidden, bias=False),
                                           nn.SiLU(), nn.Linear(readout_hidden, 1, bias=False)))
        # plain ints: the readouts' inputs (torch.compile cannot trace e3nn's Irreps)
        self._readout_dims = [scalar_dim(irreps) for irreps in self.layer_irreps]
        self._finalize_e3nn()

    def node_features(self, graph: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Features after each layer t: (n_atoms, layer_irreps[t].dim), equivariant."""
        x = graph_inputs(graph, self.sh, self.radial, len(self.species))
        h = self.embedding(x["species"])
        features = []
        for layer in self.layers:
            h = layer(h, x["onehot"], x["species"], x["sh"], x["basis"], x["envelope"],
                      x["centers"], x["neighbors"], x["slots"])
            features.append(h)
        return features

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-atom energies (n_atoms,): the sum of every layer's scalar readout."""
        energy = None
        for readout, h, n_scalars in zip(self.readouts, self.node_features(graph),
                                         self._readout_dims):
            e = readout(h[:, :n_scalars]).squeeze(-1)
            energy = e if energy is None else energy + e
        return energy
