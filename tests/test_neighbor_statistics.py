"""avg_num_neighbors of fresh MACE/NequIP models is measured on the training frames."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111

from ase_mpnn.training.config import TrainConfig
from ase_mpnn.training.loop import model_hyperparameters
from ase_mpnn.training.samples import Sample, mean_neighbor_count


def _sample(atoms: Atoms) -> Sample:
    return Sample(atoms, 0.0, np.zeros((len(atoms), 3)), None, "test")


def test_mean_neighbor_count_counts_shells_and_surfaces():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)  # first shell 2.55 A, second 3.6 A
    assert mean_neighbor_count([_sample(cu)], 3.0) == pytest.approx(12.0)
    assert mean_neighbor_count([_sample(cu * (2, 2, 2))], 4.0) == pytest.approx(18.0)
    # a three-layer (111) slab: outer atoms have 9 first neighbours, the middle layer 12
    slab = fcc111("Cu", (2, 2, 3), a=3.6, vacuum=5.0)
    assert mean_neighbor_count([_sample(slab)], 3.0) == pytest.approx((9 + 12 + 9) / 3)
    # atoms are pooled over frames, not frames averaged
    lone = Atoms("Cu", positions=[[0, 0, 0]])
    assert mean_neighbor_count([_sample(cu), _sample(lone)], 3.0) == pytest.approx(48 / 5)
    assert mean_neighbor_count([_sample(lone)], 3.0) == 1.0  # no pairs: a neutral divisor
    assert mean_neighbor_count([], 3.0) == 1.0


@pytest.mark.parametrize("architecture", ["MACE", "NequIP"])
def test_equivariant_models_get_the_data_s_neighbour_count(architecture):
    samples = [_sample(bulk("Cu", "fcc", a=3.6, cubic=True))]
    config = TrainConfig(architecture=architecture, cutoff=3.0)
    assert model_hyperparameters(config, samples)["avg_num_neighbors"] == pytest.approx(12.0)
    given = TrainConfig(architecture=architecture, cutoff=3.0,
                        hyperparameters={"avg_num_neighbors": 7.5})
    assert model_hyperparameters(given, samples)["avg_num_neighbors"] == 7.5


def test_models_without_the_option_are_unchanged():
    samples = [_sample(bulk("Cu", "fcc", a=3.6, cubic=True))]
    config = TrainConfig(architecture="SchNet", cutoff=3.0, hyperparameters={"n_features": 8})
    assert model_hyperparameters(config, samples) == {"n_features": 8}
