"""Built-in models load by name and reproduce the test errors in their manifests."""

from __future__ import annotations

import pytest
import torch

from ase_mpnn import MPNNCalculator, list_models, load_model, read_manifest
from ase_mpnn.data import GraphCache, read_samples, split_samples
from ase_mpnn.evaluate import evaluate
from ase_mpnn.pretrained import model_path, recipe_path
from ase_mpnn.reference import emt_dataset


@pytest.mark.parametrize("name", list_models())
def test_builtin_model_loads_by_name(name, cu_cell):
    manifest = read_manifest(model_path(name))
    assert manifest["name"] == name and recipe_path(name).exists()
    assert model_path(name).stat().st_size < 5e6
    cu_cell.calc = MPNNCalculator(name)
    assert cu_cell.calc.parameters["model"] == name
    assert abs(cu_cell.get_potential_energy()) < 1e4


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_builtin_model_reproduces_its_test_errors(name, tmp_path):
    manifest = read_manifest(model_path(name))
    recipe, config = manifest["training"]["data_recipe"], manifest["training"]["config"]
    data = emt_dataset(path=tmp_path / "data.extxyz", progress=False, **recipe)
    fractions = [1 - config["valid_fraction"] - config["test_fraction"],
                 config["valid_fraction"], config["test_fraction"]]
    test = split_samples(read_samples(data), fractions, config["seed"])[2]
    potential = load_model(name, dtype=config["dtype"])
    metrics = evaluate(potential, GraphCache(test, potential.cutoff, potential.species),
                       config["batch_size"], getattr(torch, config["dtype"]))
    for key in ("energy_mae", "forces_mae", "stress_mae"):
        assert metrics[key] == pytest.approx(manifest["test_metrics"][key], rel=1e-3), key
