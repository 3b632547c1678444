"""CGCNN (Xie & Grossman, Phys. Rev. Lett. 120, 145301, 2018) as a smooth potential.

Each convolution concatenates the two atoms' features and the Gaussian-expanded bond,
z = [h_v; h_u; e_uv], and passes the gated message sigmoid(W_f z) * softplus(W_s z);
the summed messages update the atom as softplus(h + sum). Two changes make it a potential:
messages are weighted by a cosine cutoff envelope, so energies and forces are continuous as
bonds cross the cutoff, and batch normalisation is left out, since it would make an atom's
energy depend on the other structures in a batch. The readout is per atom (energies sum)
instead of CGCNN's mean pooling, so energy is extensive.

In the MPNN's axes: message "gated", aggregation "sum", update "cgcnn", no edge updates.
"""

from __future__ import annotations

from typing import Sequence

from .base import register_architecture
from .mpnn import MPNN


@register_architecture
class CGCNN(MPNN):
    """Crystal graph convolutional network (Xie & Grossman 2018) with a cutoff envelope.

    Args:
        species: element symbols the model covers.
        cutoff: neighbour cutoff radius, Angstrom.
        n_features: atom feature width (CGCNN's atom_fea_len, 64).
        n_layers: number of convolutions (CGCNN's n_conv, 3).
        n_basis: Gaussians expanding each distance (CGCNN: 0.2 A spacing).
        envelope: "cosine" or "polynomial".
        activation: readout activation, "ssp" (softplus shifted to 0 at 0), "silu", "tanh".
        global_inputs: "charge" and/or "spin" (see ``MPNN``).
    """

    architecture = "CGCNN"

    def __init__(
        self,
        species: Sequence[str],
        cutoff: float = 5.0,
        n_features: int = 64,
        n_layers: int = 3,
        n_basis: int = 25,
        envelope: str = "cosine",
        activation: str = "ssp",
        global_inputs: Sequence[str] | None = None,
    ):
        super().__init__(
            species, cutoff, n_features=n_features, n_layers=n_layers, message="gated",
            aggregation="sum", update="cgcnn", edge_updates=False, n_basis=n_basis,
            radial_basis="gaussian", envelope=envelope, activation=activation,
            global_inputs=global_inputs,
        )
        self.hyperparameters = dict(n_features=n_features, n_layers=n_layers, n_basis=n_basis,
                                    envelope=envelope, activation=activation)
        self._record_global_inputs(global_inputs)
