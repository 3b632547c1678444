"""Built-in models load by name and reproduce the test errors in their manifests."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch
from ase.build import molecule

from ase_mpnn import MPNNCalculator, list_models, load_model, read_manifest
from ase_mpnn.modelfile import WEIGHTS
from ase_mpnn.pretrained import model_path, recipe_path
from ase_mpnn.training.metrics import error_metrics
from ase_mpnn.training.publish import make_data
from ase_mpnn.training.samples import GraphCache, read_samples, split_samples


@pytest.mark.parametrize("name", list_models())
def test_builtin_model_loads_by_name(name, cu_cell):
    manifest = read_manifest(model_path(name))
    assert manifest["name"] == name and recipe_path(name).exists()
    assert model_path(name).stat().st_size < 5e6
    atoms = cu_cell if "Cu" in manifest["species"] else molecule("CH3CH2OH")
    atoms.calc = MPNNCalculator(name)
    assert atoms.calc.parameters["model"] == name
    assert abs(atoms.get_potential_energy()) < 1e5


@pytest.mark.parametrize("name", list_models())
def test_builtin_model_e0_loads_under_its_new_name(name):
    """Files written before the rename (the first built-ins) store E0 as "atomic_energies"."""
    potential = load_model(name, dtype="float64")
    with zipfile.ZipFile(model_path(name)) as archive:
        if manifest_is_committee := "members" in read_manifest(model_path(name)):
            members = [zipfile.ZipFile(io.BytesIO(archive.read(f"members/{k}.mpnn")))
                       for k in range(len(potential.members))]
        else:
            members = [archive]
        states = [torch.load(io.BytesIO(m.read(WEIGHTS)), weights_only=True) for m in members]
    for state, member in zip(states, potential.members if manifest_is_committee
                             else [potential]):
        e0 = state.get("atomic_energies", state.get("reference_energies"))
        torch.testing.assert_close(member.reference_energies, e0.double(), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_builtin_model_reproduces_its_test_errors(name, tmp_path):
    manifest = read_manifest(model_path(name))
    recipe, config = manifest["training"]["data_recipe"], manifest["training"]["config"]
    if recipe.get("reference") == "xtb":
        pytest.importorskip("tblite", reason="the xTB model's data needs tblite")
    data = make_data(recipe, tmp_path / "data.extxyz")
    fractions = [1 - config["valid_fraction"] - config["test_fraction"],
                 config["valid_fraction"], config["test_fraction"]]
    split_seed = config.get("split_seed")
    test = split_samples(read_samples(data), fractions,
                         config["seed"] if split_seed is None else split_seed)[2]
    potential = load_model(name, dtype=config["dtype"])
    metrics = error_metrics(potential, GraphCache(test, potential.cutoff, potential.species),
                       config["batch_size"], getattr(torch, config["dtype"]))
    for key in ("energy_mae", "forces_mae", "stress_mae"):
        if key not in manifest["test_metrics"]:  # molecules: no stress
            assert key not in metrics
            continue
        assert metrics[key] == pytest.approx(manifest["test_metrics"][key], rel=1e-3), key


def test_models_listing_shows_elements_and_global_inputs(capsys):
    """``ase-mpnn models`` says which built-in takes a total charge and spin, so a user
    does not find out from an UnsupportedInputError."""
    from ase_mpnn.cli import main

    assert main(["models"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["xtb-chno-schnet-charge"].rstrip().endswith("H C N O     charge, spin")
    assert rows["emt-cuni-schnet"].rstrip().endswith("-")
