"""Named model configurations shared by the tests, the benchmarks and quick experiments.

``SMALL`` covers every architecture and every code path (each MPNN axis, l > 0 features
between equivariant layers, MACE's A^3 products) at sizes that run the float64 physics
kit in seconds. ``BENCHMARK`` holds the settings the benchmarks time against the peer
codes (SchNetPack, mace-torch, nequip), matched to theirs at a 5 A cutoff.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import AtomisticModel, build_model

Preset = tuple[str, dict[str, Any]]  # (architecture, hyper-parameters)

_SMALL_MPNN = dict(n_features=16, n_layers=2)

#: small configurations for tests: name -> (architecture, hyper-parameters)
SMALL: dict[str, Preset] = {
    "SchNet": ("SchNet", dict(n_features=32, n_interactions=2)),
    "SchNet-polynomial-bessel": ("SchNet", dict(n_features=32, n_interactions=2,
                                                envelope="polynomial", radial_basis="bessel",
                                                activation="silu")),
    "CGCNN": ("CGCNN", _SMALL_MPNN),
    "MPNN-mlp-mean-gru": ("MPNN", dict(message="mlp", aggregation="mean", update="gru",
                                       **_SMALL_MPNN)),
    "MPNN-linear-smoothmax-gcn": ("MPNN", dict(message="linear", aggregation="smoothmax",
                                               update="gcn", activation="tanh", **_SMALL_MPNN)),
    "MPNN-gated-attention-mlp-edges": ("MPNN", dict(message="gated", aggregation="attention",
                                                    update="mlp", edge_updates=True,
                                                    **_SMALL_MPNN)),
    "MPNN-filter-pna-residual": ("MPNN", dict(message="filter", aggregation="pna",
                                              update="residual", envelope="polynomial",
                                              **_SMALL_MPNN)),
    # NequIP needs 4 blocks before pseudo-vectors (1e) reach the energy
    "NequIP": ("NequIP", dict(n_features=8, n_layers=4, l_max=1, radial_hidden=16)),
    # l = 1 features between the layers and products of three A's
    "MACE": ("MACE", dict(n_features=8, n_layers=2, max_ell=2, hidden_l_max=1, correlation=3,
                          radial_hidden=16, radial_layers=2)),
    # mace-torch's residual first block (the accuracy benchmark's recipe)
    "MACE-first-self-connection": ("MACE", dict(n_features=8, n_layers=2, max_ell=2,
                                                hidden_l_max=0, correlation=3, radial_hidden=16,
                                                radial_layers=2, first_self_connection=True)),
}

#: the benchmark average neighbour count of fcc Cu within 5 A (the equivariant divisor)
AVG_NUM_NEIGHBORS = 42.0

#: the settings benchmarks compare with the peers: name -> (architecture, hyper-parameters)
BENCHMARK: dict[str, Preset] = {
    # SchNetPack's SchNet: 64 features, 3 interactions, 20 Gaussians, cosine cutoff
    "schnet": ("SchNet", dict(n_features=64, n_interactions=3, n_basis=20,
                              radial_basis="gaussian", envelope="cosine")),
    # mace-torch 32x0e, max_ell 3, correlation 3, 2 layers
    "mace": ("MACE", dict(n_features=32, hidden_l_max=0, max_ell=3, correlation=3, n_layers=2,
                          n_basis=8, p=5, radial_hidden=64, radial_layers=3, readout_hidden=16,
                          avg_num_neighbors=AVG_NUM_NEIGHBORS)),
    # nequip l_max 1, 2 layers, 32 features
    "nequip": ("NequIP", dict(n_features=32, l_max=1, parity=True, n_layers=2, n_basis=8, p=6,
                              radial_hidden=64, radial_layers=2,
                              avg_num_neighbors=AVG_NUM_NEIGHBORS)),
    # CGCNN's published widths: 64 features, 3 gated convolutions, 25 Gaussians
    "cgcnn": ("CGCNN", {}),
    # the generic MPNN with MLP messages (Gilmer et al. 2017) and a GRU update
    "mpnn": ("MPNN", dict(n_features=64, n_layers=3, message="mlp", update="gru",
                          aggregation="sum")),
}


def build_preset(name: str, species: Sequence[str], cutoff: float, seed: int = 0,
                 **overrides: Any) -> AtomisticModel:
    """A freshly initialised model of preset ``name`` (from SMALL or BENCHMARK) with torch's
    RNG seeded by ``seed``; ``overrides`` replace hyper-parameters."""
    presets = {**SMALL, **BENCHMARK}
    if name not in presets:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(presets)}")
    architecture, hyperparameters = presets[name]
    torch.manual_seed(seed)
    return build_model(architecture, species, cutoff, **{**hyperparameters, **overrides})
