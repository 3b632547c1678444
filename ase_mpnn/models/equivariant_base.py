"""The front end shared by the E(3)-equivariant models (NequIP, MACE).

Both start the same way: the element of each atom is embedded as n_features even scalars
(a learned ``nn.Embedding``, i.e. a linear map of the one-hot element), and the edge
geometry is embedded once per forward pass as spherical harmonics of the bond direction
and a Bessel basis times a polynomial envelope of its length (``EdgeInputs``). Their
interaction layers then map (h, EdgeInputs) -> h; ``node_features`` runs them in turn.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..nn.e3nn_patches import ExactConstantsMixin
from ..nn.equivariant import EdgeInputs, EdgeSphericalHarmonics, RadialEmbedding, edge_inputs
from ..nn.global_state import GlobalStateEmbedding, make_global_embedding
from .base import AtomisticModel


class EquivariantModel(ExactConstantsMixin, AtomisticModel):
    """Base of the equivariant architectures: embeddings in, features of every layer out.

    A subclass's ``__init__`` calls, in this order, ``super().__init__(species, cutoff)``,
    ``self._build_embeddings(...)``, builds ``self.layers`` (an ``nn.ModuleList`` of modules
    called as ``layer(h, inputs)``) and its readout(s), and ends with
    ``self._finalize_e3nn()`` (exact Clebsch-Gordan tables, no dead einsums). The
    attribute names ``embedding``, ``sh``, ``radial`` and ``layers`` are state-dict keys
    of the model files.
    """

    embedding: nn.Embedding
    global_embedding: GlobalStateEmbedding | None
    sh: EdgeSphericalHarmonics
    radial: RadialEmbedding
    layers: nn.ModuleList

    def _build_embeddings(self, n_features: int, l_max: int, n_basis: int, p: int,
                          global_inputs: Sequence[str] | None = None) -> None:
        """The element embedding (n_features x 0e) plus, for ``global_inputs`` (charge,
        spin), a scalar embedding of the total charge and multiplicity; the spherical
        harmonics of the edge directions up to l_max, and the radial basis (n_basis Bessel
        functions, envelope exponent p) of the edge lengths within the cutoff."""
        self.embedding = nn.Embedding(len(self.species), n_features)  # = Linear(one-hot)
        self._record_global_inputs(global_inputs)
        # even scalars (0e): adding them to the 0e embedding keeps every layer equivariant
        self.global_embedding = make_global_embedding(global_inputs, n_features)
        self.sh = EdgeSphericalHarmonics(l_max)
        self.radial = RadialEmbedding(self.cutoff, n_basis, p)

    def edge_inputs(self, graph: dict[str, torch.Tensor]) -> EdgeInputs:
        """What every layer reads from a graph that carries edge geometry."""
        return edge_inputs(graph, self.sh, self.radial, len(self.species))

    def node_features(self, graph: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Features after each layer t: (n_atoms, layer_irreps[t].dim), equivariant."""
        inputs = self.edge_inputs(graph)
        h = self.embedding(inputs.species)
        if self.global_embedding is not None:
            h = h + self.global_embedding(graph, h)
        features = []
        for layer in self.layers:
            h = layer(h, inputs)
            features.append(h)
        return features
