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
layer unless ``first_self_connection``, as in mace-torch's residual first block), and
each layer reads out an energy from its scalars; the per-atom energy is the sum over
layers (the last readout a small MLP). The product basis is
``ase_mpnn.models.mace_product``; the embeddings and the convolution are shared with
NequIP (``ase_mpnn.models.equivariant_base``, ``ase_mpnn.nn.convolution``).

Units: lengths in Angstrom; the output is an unscaled energy per atom.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from e3nn import o3
from torch import nn

from ..nn.convolution import EquivariantConvolution
from ..nn.equivariant import EdgeInputs, natural_irreps, scalar_dim, species_irreps
from ..nn.validation import check_integer, check_positive
from .base import register_architecture
from .equivariant_base import EquivariantModel
from .mace_product import MAX_CORRELATION, SymmetricContraction, coupling_basis

__all__ = ["MACE", "MACELayer", "MAX_CORRELATION", "MAX_ELL", "SymmetricContraction",
           "coupling_basis"]

MAX_ELL = 4  # largest spherical-harmonic order of the atomic basis A


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
        self_connection: bool,
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
        # h <- m + Linear_z(h); in a first layer h is the element embedding, so the term is
        # a learned vector per element (an element-dependent offset of the readout input)
        self.self_connection = o3.FullyConnectedTensorProduct(
            irreps_in, species_irreps(n_species), irreps_out) if self_connection else None
        self.irreps_out = o3.Irreps(irreps_out)

    def forward(self, h: torch.Tensor, inputs: EdgeInputs) -> torch.Tensor:
        """h (n_atoms, irreps_in.dim) -> (n_atoms, irreps_out.dim)."""
        a = self.linear_a(self.conv(self.linear_up(h), inputs))
        out = self.linear_out(self.product(a, inputs.species))
        if self.self_connection is not None:
            out = out + self.self_connection(h, inputs.onehot)
        return out


@register_architecture
class MACE(EquivariantModel):
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
        radial_hidden: width of the hidden layers of the radial MLPs.
        radial_layers: number of hidden layers of the radial MLPs.
        readout_hidden: hidden width of the last layer's readout MLP.
        avg_num_neighbors: fixed divisor of the neighbour sums.
        first_self_connection: give the first layer the self-connection too (mace-torch's
            default ``RealAgnosticResidualInteractionBlock`` first block). Off by default,
            which keeps model files written before the option loadable.
        global_inputs: "charge" and/or "spin": total charge and multiplicity from
            atoms.info, embedded as even scalars added to the element embedding.
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
        first_self_connection: bool = False,
        global_inputs: Sequence[str] | None = None,
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
            first_self_connection=bool(first_self_connection),
        )
        self._build_embeddings(n_features, max_ell, n_basis, p, global_inputs)  # features: k x 0e
        radial = dict(n_basis=n_basis, radial_hidden=radial_hidden, radial_layers=radial_layers,
                      avg_num_neighbors=avg_num_neighbors)
        hidden = natural_irreps(hidden_l_max, n_features)
        scalars = natural_irreps(0, n_features)
        # only scalars leave the last layer: nothing after it could use l > 0
        self.layer_irreps: list[o3.Irreps] = [hidden] * (n_layers - 1) + [scalars]
        irreps_in = [scalars, *self.layer_irreps[:-1]]  # the embedding, then each output
        self.layers = nn.ModuleList(
            MACELayer(irreps_in[t], self.layer_irreps[t], self.sh.irreps_out, n_features,
                      max_ell, correlation, len(self.species), radial,
                      self_connection=t > 0 or bool(first_self_connection))
            for t in range(n_layers)
        )
        self.readouts = self._build_readouts(n_features, readout_hidden)
        # plain ints: the readouts' inputs (torch.compile cannot trace e3nn's Irreps)
        self._readout_dims = [scalar_dim(irreps) for irreps in self.layer_irreps]
        self._finalize_e3nn()

    def _build_readouts(self, n_features: int, readout_hidden: int) -> nn.ModuleList:
        """A linear map of each layer's scalars to an energy; after the last layer an MLP."""
        readouts = nn.ModuleList(
            nn.Linear(scalar_dim(irreps), 1, bias=False) for irreps in self.layer_irreps[:-1]
        )
        readouts.append(nn.Sequential(nn.Linear(n_features, readout_hidden, bias=False),
                                      nn.SiLU(), nn.Linear(readout_hidden, 1, bias=False)))
        return readouts

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-atom energies (n_atoms,): the sum of every layer's scalar readout."""
        energy = None
        for readout, h, n_scalars in zip(self.readouts, self.node_features(graph),
                                         self._readout_dims):
            e = readout(h[:, :n_scalars]).squeeze(-1)
            energy = e if energy is None else energy + e
        return energy
