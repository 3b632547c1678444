"""MACE's product basis (Batatia et al., NeurIPS 2022, arXiv:2206.07697, eq. 10-11).

For each atom and channel k, symmetric products of the atomic basis A with itself, up to
``correlation`` factors, coupled to output irreps L:

    B_k,LM = sum_{nu <= correlation} sum_eta W[z, nu, eta, k]
             sum_{lm_1..lm_nu} C^{LM}_{eta, lm_1..lm_nu} A_k,lm_1 ... A_k,lm_nu

``coupling_basis`` gives the generalised Clebsch-Gordan coefficients C_eta (a basis of
the fully symmetric, O(3)-equivariant couplings); ``SymmetricContraction`` evaluates B as
one matrix product of the needed monomials A_a A_b ... with a constant coefficient matrix.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from e3nn import o3
from torch import nn

from ..nn.equivariant import natural_irreps

MAX_CORRELATION = 3  # largest number of A's multiplied (body order correlation + 1)

#: coupling coefficients below this are rounding noise of exact zeros
_ZERO = 1e-14


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


@functools.cache
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


# --- from coupling tensors to a coefficient matrix over monomials of A ------------------
def _orderings(monomial: tuple[int, ...]) -> int:
    """Number of distinct orderings of a multiset of indices (the multinomial coefficient)."""
    count = math.factorial(len(monomial))
    for repeats in Counter(monomial).values():
        count //= math.factorial(repeats)
    return count


def _monomial_coefficients(component: torch.Tensor) -> dict[tuple[int, ...], float]:
    """A symmetric tensor C (D, ..., D) as the coefficients of the monomials A_a A_b ...
    with a <= b <= ...: sum C[a, b, ...] A_a A_b ... over all indices counts each monomial
    once per ordering of its indices. Entries within 1e-14 of zero are dropped."""
    coefficients = {}
    for index in torch.nonzero(component.abs() > _ZERO).tolist():
        monomial = tuple(sorted(index))
        if tuple(index) == monomial:  # each monomial once, with its multiplicity
            coefficients[monomial] = float(component[monomial]) * _orderings(monomial)
    return coefficients


@dataclass
class CouplingColumns:
    """The columns of the product basis and their coefficients on monomials of A.

    Columns run over output l (in ``out_ls`` order), then paths (number of factors 1..
    correlation, then the index eta of ``coupling_basis``), then m = 0..2l.

    Attributes:
        rows: monomial (a <= b <= ...) of components of A -> {column: coefficient}.
        path_orders: per output l, the number of factors of each of its paths.
        n_columns: sum over l of paths(l) * (2l + 1).
    """

    rows: dict[tuple[int, ...], dict[int, float]] = field(default_factory=dict)
    path_orders: list[list[int]] = field(default_factory=list)
    n_columns: int = 0

    @classmethod
    def collect(cls, l_max: int, out_ls: Sequence[int], correlation: int) -> CouplingColumns:
        """Every coupling of 1..correlation copies of A (l <= l_max) into each l of out_ls."""
        columns = cls()
        for l_out in out_ls:
            columns.path_orders.append([])
            for order in range(1, correlation + 1):
                for path in coupling_basis(l_max, order, l_out):
                    columns.add_path(path, order)
        return columns

    def add_path(self, path: torch.Tensor, order: int) -> None:
        """Append the 2l+1 columns of one path, (2l + 1, D, ..., D) with ``order`` D axes,
        to the current output l."""
        self.path_orders[-1].append(order)
        for m, component in enumerate(path):
            for monomial, weight in _monomial_coefficients(component).items():
                self.rows.setdefault(monomial, {})[self.n_columns + m] = weight
        self.n_columns += path.shape[0]


@dataclass(frozen=True)
class MonomialLayout:
    """The products of components of A that the contraction computes, in the order of its
    feature vector: [A_a for singles | A_a A_b for pairs | A_a A_b A_c for triples].

    ``pairs`` holds every degree-2 monomial and the first two factors of every degree-3
    one, so that each triple is one computed pair times one more component.
    """

    singles: list[tuple[int, ...]]
    pairs: list[tuple[int, ...]]
    triples: list[tuple[int, ...]]

    @classmethod
    def of(cls, monomials: Iterable[tuple[int, ...]]) -> MonomialLayout:
        """The layout computing ``monomials`` (of degree 1 to 3), each sorted a <= b <= c."""
        ordered = sorted(monomials, key=lambda m: (len(m), m))
        return cls(singles=[m for m in ordered if len(m) == 1],
                   pairs=sorted({m[:2] for m in ordered if len(m) >= 2}),
                   triples=[m for m in ordered if len(m) == 3])

    @property
    def n_features(self) -> int:
        return len(self.singles) + len(self.pairs) + len(self.triples)

    def pair_position(self) -> dict[tuple[int, ...], int]:
        """Index of each pair among the pairs."""
        return {pair: k for k, pair in enumerate(self.pairs)}

    def feature_row(self) -> dict[tuple[int, ...], int]:
        """Row of each monomial in the feature vector."""
        n_singles, n_pairs = len(self.singles), len(self.pairs)
        rows = {m: k for k, m in enumerate(self.singles)}
        rows.update({m: n_singles + k for m, k in self.pair_position().items()})
        rows.update({m: n_singles + n_pairs + k for k, m in enumerate(self.triples)})
        return rows


def coefficient_matrix(columns: CouplingColumns, layout: MonomialLayout) -> torch.Tensor:
    """(layout.n_features, columns.n_columns) float64: the product basis is the feature
    vector of ``layout`` times this matrix."""
    row = layout.feature_row()
    coefficients = torch.zeros(layout.n_features, columns.n_columns, dtype=torch.float64)
    for monomial, entries in columns.rows.items():
        for column, value in entries.items():
            coefficients[row[monomial], column] = value
    return coefficients


def _index(values: list[int]) -> torch.Tensor:
    """An int64 index table (shape (0,) when empty)."""
    return torch.tensor(values, dtype=torch.int64).reshape(-1)


# --- the module ---------------------------------------------------------------------------
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
        columns = CouplingColumns.collect(l_max, self.out_ls, correlation)
        self.path_orders = columns.path_orders  # number of factors of each path, per l
        self.paths_per_l = [len(orders) for orders in self.path_orders]
        missing = [l for l, n in zip(self.out_ls, self.paths_per_l) if n == 0]
        if missing:
            raise ValueError(f"no symmetric coupling of A (l <= {l_max}) into l = {missing}")
        layout = MonomialLayout.of(columns.rows)
        coefficients = coefficient_matrix(columns, layout)
        self._exact_constants = {"coefficients": coefficients}
        self.register_buffer("coefficients", coefficients.to(torch.get_default_dtype()),
                             persistent=False)
        self._register_layout(layout)
        self.dim = (l_max + 1) ** 2
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(n_species, n, n_channels) / math.sqrt(n))
            for n in self.paths_per_l
        )
        # (offset, width) of each l block of A in e3nn's channel-major layout
        self._in_blocks = [(n_channels * l * l, 2 * l + 1) for l in range(l_max + 1)]

    def _register_layout(self, layout: MonomialLayout) -> None:
        """Index buffers of the components of A each feature multiplies."""
        pair_position = layout.pair_position()
        self.register_buffer("single_index", _index([m[0] for m in layout.singles]),
                             persistent=False)
        self.register_buffer("pair_a", _index([p[0] for p in layout.pairs]), persistent=False)
        self.register_buffer("pair_b", _index([p[1] for p in layout.pairs]), persistent=False)
        self.register_buffer("triple_pair", _index([pair_position[m[:2]] for m in layout.triples]),
                             persistent=False)
        self.register_buffer("triple_c", _index([m[2] for m in layout.triples]), persistent=False)
        self.has_pairs, self.has_triples = bool(layout.pairs), bool(layout.triples)

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

        Atoms are taken in blocks of ATOMS_PER_BLOCK, so that the (atoms x channels,
        monomials) intermediates stay cache-sized however large the cell.
        """
        if a.shape[0] <= self.ATOMS_PER_BLOCK:
            return self._contract(a, species)
        return torch.cat([self._contract(a_block, s_block) for a_block, s_block in
                          zip(a.split(self.ATOMS_PER_BLOCK), species.split(self.ATOMS_PER_BLOCK))])

    def _contract(self, a: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """One block of atoms: the coupled products times the weights of each atom's element."""
        n = a.shape[0]
        outputs = []
        for block, weights in zip(self.coupled(a), self.weights):
            w = weights.index_select(0, species)  # (n, paths, k): element-dependent
            outputs.append(torch.einsum("nkpm,npk->nkm", block, w).reshape(n, -1))
        return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
