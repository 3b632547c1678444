"""The training loss, per batch and over a whole data set.

    loss = w_E * mean((dE / N)^2) + w_F * mean(dF^2) + w_S * mean(dsigma^2)

in (eV/atom)^2, (eV/A)^2 and (eV/A^3)^2, with the weights of the TrainConfig. Dividing the
energy error by the number of atoms N weighs small and large cells alike. The force mean
runs over the components of frames with force labels; the stress mean over the components
of 3-D periodic frames with stress labels (no volume, no stress otherwise).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import keys
from ..potential import Potential
from .config import TrainConfig


def batch_loss(potential: Potential, graph: dict, targets: dict, config: TrainConfig
               ) -> torch.Tensor:
    """The loss of one batch (scalar tensor with the autograd graph, for training).

    ``targets`` as ``GraphCache.batch`` gives them: "energy" (n_graphs,) eV, "forces"
    (n_atoms, 3) eV/A with "forces_mask" (n_atoms,), "stress" (n_graphs, 3, 3) eV/A^3 with
    "stress_mask" (n_graphs,), True for labelled 3-D periodic frames.
    """
    wants_forces = config.forces_weight > 0 and bool(targets["forces_mask"].any())
    wants_stress = config.stress_weight > 0 and bool(targets["stress_mask"].any())
    out = potential(graph, forces=config.forces_weight > 0, stress=wants_stress,
                    create_graph=True)
    n_atoms = graph[keys.N_ATOMS].to(out[keys.ENERGY].dtype)
    loss = config.energy_weight * (((out[keys.ENERGY] - targets["energy"]) / n_atoms) ** 2).mean()
    if wants_forces:
        mask = targets["forces_mask"]
        error = out[keys.FORCES][mask] - targets["forces"][mask]
        loss = loss + config.forces_weight * (error**2).mean()
    if wants_stress:
        mask = targets["stress_mask"]
        error = out[keys.STRESS][mask] - targets["stress"][mask]
        loss = loss + config.stress_weight * (error**2).mean()
    return loss


def dataset_loss(metrics: dict[str, Any], config: TrainConfig) -> float:
    """The same loss over a whole data set, from its ``error_metrics``:

        w_E * energy_rmse^2 + w_F * forces_rmse^2 + w_S * stress_rmse^2,

    each mean squared error pooled over all frames (energy per atom, force components of
    frames with forces, stress components of labelled 3-D periodic frames), as
    ``batch_loss`` pools over one batch. A term without labels counts 0.
    """
    terms = [(config.energy_weight, "energy_rmse"), (config.forces_weight, "forces_rmse"),
             (config.stress_weight, "stress_rmse")]
    return float(sum(weight * metrics[name] ** 2 for weight, name in terms
                     if weight > 0 and name in metrics))
