"""The training loss, per batch and over a whole data set.

    loss = w_E * <(dE / N)^2> + w_F * <dF^2> + w_S * <dsigma^2>

in (eV/atom)^2, (eV/A)^2 and (eV/A^3)^2, with the weights of the TrainConfig. Dividing the
energy error by the number of atoms N weighs small and large cells alike. Each <...> is a
weighted mean over the labelled frames only (masks: frames with an energy; components of
frames with forces; components of 3-D periodic frames with stress), each frame weighted by
its config-type weight c (``config_type_weights``, default 1):

    <x^2> = sum_frames c * sum_components x^2 / sum_frames c * n_components,

so a weight of 2 counts a frame twice, and weights that are all equal change nothing. A
term without labels (or with zero total weight) counts 0. The validation loss
(``dataset_loss``) applies the same weights, as mace-torch does.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import keys
from ..potential import Potential
from .config import TrainConfig


def weighted_mean_square(errors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i |e_i|^2 / sum_i w_i n_i: the mean square of the rows of ``errors`` (n, ...)
    with row weights ``weights`` (n,), n_i the components per row; 0 when sum w = 0."""
    squares = (errors**2).reshape(len(errors), -1)
    total = (weights * squares.shape[1]).sum()
    tiny = torch.finfo(squares.dtype).tiny
    return (weights[:, None] * squares).sum() / total.clamp_min(tiny)


def batch_loss(potential: Potential, graph: dict, targets: dict, config: TrainConfig
               ) -> torch.Tensor:
    """The loss of one batch (scalar tensor with the autograd graph, for training).

    ``targets`` as ``GraphCache.batch`` gives them: "energy" (n_graphs,) eV with
    "energy_mask" (n_graphs,), "forces" (n_atoms, 3) eV/A with "forces_mask" (n_atoms,),
    "stress" (n_graphs, 3, 3) eV/A^3 with "stress_mask" (n_graphs,), True for labelled 3-D
    periodic frames, and "weight" (n_graphs,), the frames' config-type weights.
    """
    n_graphs = len(targets["energy"])
    weight = targets.get("weight", torch.ones(n_graphs, dtype=targets["energy"].dtype,
                                              device=targets["energy"].device))
    energy_mask = targets.get("energy_mask", torch.ones(n_graphs, dtype=torch.bool,
                                                        device=weight.device))
    wants_forces = config.forces_weight > 0 and bool(targets["forces_mask"].any())
    wants_stress = config.stress_weight > 0 and bool(targets["stress_mask"].any())
    out = potential(graph, forces=config.forces_weight > 0, stress=wants_stress,
                    create_graph=True)
    n_atoms = graph[keys.N_ATOMS].to(out[keys.ENERGY].dtype)
    # the energy term is always computed, so the loss has an autograd graph even when a
    # batch has no label the weights ask for (it is then 0)
    energy_error = (out[keys.ENERGY] - targets["energy"]) / n_atoms
    loss = config.energy_weight * weighted_mean_square(energy_error, weight * energy_mask)
    if wants_forces:
        mask = targets["forces_mask"]
        error = out[keys.FORCES][mask] - targets["forces"][mask]
        atom_weight = weight[graph[keys.BATCH]][mask]
        loss = loss + config.forces_weight * weighted_mean_square(error, atom_weight)
    if wants_stress:  # indexing, not multiplying: unlabelled frames' stress may be NaN
        mask = targets["stress_mask"]
        error = out[keys.STRESS][mask] - targets["stress"][mask]
        loss = loss + config.stress_weight * weighted_mean_square(error, weight[mask])
    return loss


def dataset_loss(metrics: dict[str, Any], config: TrainConfig) -> float:
    """The same loss over a whole data set, from its ``error_metrics``:

        w_E * <(dE/N)^2> + w_F * <dF^2> + w_S * <dsigma^2>,

    each weighted mean square pooled over all labelled frames of the set
    (``metrics["weighted_mse"]``), as ``batch_loss`` pools over one batch. With all
    config-type weights 1 this is w_E * energy_rmse^2 + w_F * forces_rmse^2 +
    w_S * stress_rmse^2. A term without labels counts 0.
    """
    weighted = metrics["weighted_mse"]
    terms = [(config.energy_weight, "energy"), (config.forces_weight, "forces"),
             (config.stress_weight, "stress")]
    return float(sum(weight * weighted[name] for weight, name in terms
                     if weight > 0 and name in weighted))
