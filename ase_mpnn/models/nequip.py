"""NequIP (Batzner et al., Nat. Commun. 13, 2453, 2022): E(3)-equivariant convolutions.

Atom features are irreps tensors with n_features channels per irrep (l, parity), l <= l_max
(both parities when ``parity=True``, as in NequIP: for l_max = 1, 0e 0o 1o 1e). They start
as a learned embedding of the element (even scalars). Each interaction block computes

    x_i = Linear_2( sum_j R(r_ij) u(r_ij) [Linear_1(h)_j (x) Y(r_ij)] / avg_num_neighbors )
          + SelfConnection(h_i, z_i)
    h_i <- Gate(x_i) + h_i

convolving the neighbours' features with the spherical harmonics of the bond direction,
weighted per channel and path by a radial MLP of the bond length times a polynomial
envelope (messages and their first two derivatives vanish at the cutoff). The
self-connection is a tensor product of the features with the one-hot element, i.e. an
element-dependent linear map. The gated nonlinearity (Weiler et al. 2018) applies SiLU to
even scalars, tanh to odd scalars (an odd function keeps their parity) and scales each
l > 0 irrep by the sigmoid of its own even scalar gate, which keeps it equivariant. The
residual adds the input wherever input and output share an irrep. A linear map of the
last block's even scalars gives the energy. (NequIP divides the neighbour sum by
sqrt(avg_num_neighbors); here, as in MACE, by avg_num_neighbors itself.)

Each block carries only the irreps that can be non-zero there and can still reach the
energy (see ``pruned_layer_irreps``): the first block's input is scalars, and the last
block produces only even scalars, the readout's input. The energy is the same as with
all irreps carried; the dropped ones would only cost time.

Reflections: Y_l has parity (-1)^l and Clebsch-Gordan paths conserve parity, so features of
parity p change sign as p under inversion; the energy is built from even scalars only and
is therefore invariant under rotations and reflections, and forces are equivariant.

The embeddings and the convolution are shared with MACE
(``ase_mpnn.models.equivariant_base``, ``ase_mpnn.nn.convolution``).

Units: lengths in Angstrom; the output is an unscaled energy per atom.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn

from ..nn.convolution import EquivariantConvolution
from ..nn.equivariant import EdgeInputs, species_irreps
from ..nn.validation import check_bool, check_integer, check_positive
from .base import register_architecture
from .equivariant_base import EquivariantModel

MAX_L = 3  # largest l of the features and spherical harmonics


def allowed_irreps(l_max: int, parity: bool) -> list[o3.Irrep]:
    """The (l, p) a feature may carry, scalars first: both parities of every l <= l_max
    with ``parity`` (NequIP's default), else only the spherical harmonics' own (-1)^l."""
    irreps = []
    for l in range(l_max + 1):
        natural = (-1) ** l
        irreps += [o3.Irrep(l, p) for p in ((natural, -natural) if parity else (natural,))]
    return irreps


def pruned_layer_irreps(allowed: list[o3.Irrep], sh: list[o3.Irrep],
                        n_layers: int) -> list[list[o3.Irrep]]:
    """The irreps each block outputs: those of ``allowed`` that can be non-zero and can
    still reach the energy.

    A block's output irrep is non-zero only if some input irrep produces it, through the
    convolution (ir_in x Y_l) or the self-connection and residual (same irrep); the
    first block's input is even scalars only. It matters only if it can produce an irrep
    the next block keeps, and the last block keeps only even scalars (the readout's
    input). Dropping the others changes no energy and saves their compute; e.g. with
    l_max = 1 the pseudo-vectors 1e first reach the energy in a 4-block network, the
    pseudo-scalars 0o in a 6-block one.
    """
    def products(ir: o3.Irrep) -> set[o3.Irrep]:
        return {ir} | {out for y in sh for out in ir * y}

    scalar = o3.Irrep("0e")
    reachable, current = [], {scalar}
    for _ in range(n_layers):
        current = {out for ir in current for out in products(ir)} & set(allowed)
        reachable.append(current)
    needed = [set() for _ in range(n_layers)]
    needed[-1] = {scalar}
    for t in range(n_layers - 2, -1, -1):
        needed[t] = {ir for ir in reachable[t] if products(ir) & needed[t + 1]}
    return [[ir for ir in allowed if ir in reachable[t] and ir in needed[t]]
            for t in range(n_layers)]


class NequIPLayer(nn.Module):
    """One interaction block: convolution + self-connection -> gate -> residual.

    Args:
        irreps_in: input feature irreps.
        irreps_out: output irreps (n_features x each), scalars first.
        irreps_sh: spherical harmonics of the edges.
        n_species: elements, for the self-connection.
        radial: keyword arguments of the convolution's radial MLP.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, irreps_sh: o3.Irreps,
                 n_species: int, radial: dict):
        super().__init__()
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
        # SiLU keeps even scalars even; odd scalars need an odd activation: tanh
        acts = [nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
        gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
        self.gate = Gate(scalars, acts, gates, [torch.sigmoid] if gated.num_irreps else [],
                         gated)
        irreps_gate_in = self.gate.irreps_in
        self.linear_1 = o3.Linear(irreps_in, irreps_in)
        keep = {ir for _, ir in irreps_gate_in}
        self.conv = EquivariantConvolution(irreps_in, irreps_sh, keep, **radial)
        self.linear_2 = o3.Linear(self.conv.irreps_out, irreps_gate_in)
        self.self_connection = o3.FullyConnectedTensorProduct(
            irreps_in, species_irreps(n_species), irreps_gate_in)
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), self.gate.irreps_out
        self.register_buffer("residual_index", residual_index(self.irreps_in, self.irreps_out),
                             persistent=False)

    def forward(self, h: torch.Tensor, inputs: EdgeInputs) -> torch.Tensor:
        """h (n_atoms, irreps_in.dim) -> (n_atoms, irreps_out.dim)."""
        x = self.conv(self.linear_1(h), inputs)
        out = self.gate(self.linear_2(x) + self.self_connection(h, inputs.onehot))
        padded = torch.cat([h, h.new_zeros(h.shape[0], 1)], dim=1)
        return out + padded.index_select(1, self.residual_index)


def residual_index(irreps_in: o3.Irreps, irreps_out: o3.Irreps) -> torch.Tensor:
    """(irreps_out.dim,) int64: output column c adds input column index[c] in the residual,
    or column irreps_in.dim (a zero column appended to the input) where the input has no
    block of the same multiplicity and irrep."""
    index, offsets = [], {}
    start = 0
    for mul, ir in irreps_in:
        offsets[(mul, ir)] = start
        start += mul * ir.dim
    for mul, ir in irreps_out:
        first = offsets.get((mul, ir))
        index += (list(range(first, first + mul * ir.dim)) if first is not None
                  else [irreps_in.dim] * (mul * ir.dim))
    return torch.tensor(index, dtype=torch.int64)


@register_architecture
class NequIP(EquivariantModel):
    """NequIP: gated E(3)-equivariant interaction blocks (Batzner et al. 2022).

    Args:
        species: element symbols the model covers, e.g. ["Cu", "Ni"].
        cutoff: neighbour cutoff radius, Angstrom.
        n_features: channels per irrep of the hidden features.
        l_max: largest l of the features and of the edge spherical harmonics (0..3).
        parity: allow both parities of each l (NequIP's default) or only (-1)^l; with
            l_max >= 1 the pseudo-tensors reach the energy from 4 blocks on.
        n_layers: interaction blocks (receptive field n_layers * cutoff).
        n_basis: Bessel functions of the distance.
        p: exponent of the polynomial envelope (>= 2).
        radial_hidden: width of the hidden layers of the radial MLPs.
        radial_layers: number of hidden layers of the radial MLPs.
        avg_num_neighbors: fixed divisor of the neighbour sums.
        global_inputs: "charge" and/or "spin": total charge and multiplicity from
            atoms.info, embedded as even scalars added to the element embedding.
    """

    architecture = "NequIP"

    def __init__(
        self,
        species: Sequence[str],
        cutoff: float = 5.0,
        n_features: int = 32,
        l_max: int = 1,
        parity: bool = True,
        n_layers: int = 3,
        n_basis: int = 8,
        p: int = 6,
        radial_hidden: int = 64,
        radial_layers: int = 2,
        avg_num_neighbors: float = 20.0,
        global_inputs: Sequence[str] | None = None,
    ):
        super().__init__(species, cutoff)
        n_features = check_integer("n_features", n_features, 1)
        l_max = check_integer("l_max", l_max, 0, MAX_L)
        parity = check_bool("parity", parity)
        n_layers = check_integer("n_layers", n_layers, 1)
        n_basis = check_integer("n_basis", n_basis, 1)
        p = check_integer("p", p, 2)
        radial_hidden = check_integer("radial_hidden", radial_hidden, 1)
        radial_layers = check_integer("radial_layers", radial_layers, 0)
        avg_num_neighbors = check_positive("avg_num_neighbors", avg_num_neighbors)
        self.hyperparameters = dict(
            n_features=n_features, l_max=l_max, parity=parity, n_layers=n_layers,
            n_basis=n_basis, p=p, radial_hidden=radial_hidden, radial_layers=radial_layers,
            avg_num_neighbors=avg_num_neighbors,
        )
        self._build_embeddings(n_features, l_max, n_basis, p, global_inputs)  # features: F x 0e
        radial = dict(n_basis=n_basis, radial_hidden=radial_hidden, radial_layers=radial_layers,
                      avg_num_neighbors=avg_num_neighbors)
        self.layers = nn.ModuleList(self._build_blocks(n_features, allowed_irreps(l_max, parity),
                                                       n_layers, radial))
        self.layer_irreps = [layer.irreps_out for layer in self.layers]
        self.readout = o3.Linear(self.layer_irreps[-1], "0e")  # even scalars
        self._finalize_e3nn()

    def _build_blocks(self, n_features: int, allowed: list[o3.Irrep], n_layers: int,
                      radial: dict) -> list[NequIPLayer]:
        """The interaction blocks, each carrying n_features channels of the irreps that
        ``pruned_layer_irreps`` keeps there; the first reads the F x 0e embedding."""
        sh = [ir for _, ir in self.sh.irreps_out]
        blocks, irreps_in = [], o3.Irreps(f"{n_features}x0e")
        for irs in pruned_layer_irreps(allowed, sh, n_layers):
            irreps_out = o3.Irreps([(n_features, ir) for ir in irs])
            blocks.append(NequIPLayer(irreps_in, irreps_out, self.sh.irreps_out,
                                      len(self.species), radial))
            irreps_in = blocks[-1].irreps_out
        return blocks

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-atom energies (n_atoms,), before the potential's scale and shift."""
        return self.readout(self.node_features(graph)[-1]).squeeze(-1)
