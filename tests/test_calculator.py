"""MPNNCalculator's contract with ASE: properties, units, dtypes, parameters, caching."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.db import connect
from ase.io import read, write

from ase_mpnn import MPNNCalculator, save_model


def test_results_are_float64_numpy_of_ase_shapes(calc, cu_cell):
    cu_cell.calc = calc
    n = len(cu_cell)
    energy = cu_cell.get_potential_energy()
    assert isinstance(energy, float)
    assert cu_cell.get_potential_energy(force_consistent=True) == energy  # free_energy
    for value, shape in [(cu_cell.get_forces(), (n, 3)), (cu_cell.get_stress(), (6,)),
                         (cu_cell.get_potential_energies(), (n,)),
                         (cu_cell.get_stresses(), (n, 6))]:
        assert isinstance(value, np.ndarray) and value.dtype == np.float64 and value.shape == shape
    np.testing.assert_allclose(cu_cell.get_stresses().sum(axis=0), cu_cell.get_stress(), atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float32_results_are_still_float64_numpy(potential, cu_cell, dtype):
    cu_cell.calc = MPNNCalculator(potential, dtype=dtype)
    assert cu_cell.get_forces().dtype == np.float64
    assert torch.get_default_dtype() == torch.float32  # never changed


def test_one_model_call_fills_every_property(calc, cu_cell):
    calls = []
    hook = calc.potential.register_forward_hook(lambda *args: calls.append(1))
    try:
        cu_cell.calc = calc
        cu_cell.get_potential_energy()
        cu_cell.get_forces()
        cu_cell.get_stress()
        cu_cell.get_potential_energies()
        assert len(calls) == 1
        cu_cell.positions[0, 0] += 0.01
        cu_cell.get_forces()
        assert len(calls) == 2
    finally:
        hook.remove()


def test_stress_needs_three_periodic_directions(calc):
    atoms = molecule("H2O")
    atoms.set_chemical_symbols(["Ni", "Cu", "Cu"])
    atoms.positions *= 2
    atoms.calc = calc
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three"):
        atoms.get_stress()


def test_parameters_are_json_safe_and_stored_by_ase(calc, cu_cell, tmp_path):
    cu_cell.calc = calc
    cu_cell.get_potential_energy()
    params = json.loads(json.dumps(calc.todict()))
    assert params["architecture"] == "SchNet" and params["dtype"] == "float64"
    assert params["cutoff"] == calc.potential.cutoff and len(params["model_sha256"]) == 64
    with connect(tmp_path / "results.db") as db:
        row_id = db.write(cu_cell)
    row = connect(tmp_path / "results.db").get(row_id)
    assert row.calculator_parameters["model_sha256"] == params["model_sha256"]
    assert row.energy == pytest.approx(cu_cell.get_potential_energy())
    write(tmp_path / "frames.traj", cu_cell)
    assert read(tmp_path / "frames.traj").get_potential_energy() == pytest.approx(row.energy)


def test_path_source_and_shared_cache(potential, cu_cell, tmp_path):
    path = save_model(potential, tmp_path / "m.mpnn")
    a, b = MPNNCalculator(path, dtype="float64"), MPNNCalculator(str(path), dtype="float64")
    assert a.potential is b.potential  # weights loaded once per process
    assert MPNNCalculator(path, dtype="float32").potential is not a.potential
    assert a.parameters["model"] == str(path)
    cu_cell.calc = a
    expected = MPNNCalculator(potential, dtype="float64").get_potential_energy(cu_cell)
    assert cu_cell.get_potential_energy() == pytest.approx(expected, rel=1e-12)


def test_in_memory_model_is_snapshot_and_not_modified(potential, cu_cell):
    model = copy.deepcopy(potential)
    calc = MPNNCalculator(model, dtype="float64")
    assert next(model.parameters()).dtype == torch.float32  # the user's object is untouched
    assert next(model.parameters()).requires_grad
    energy = calc.get_potential_energy(cu_cell)
    with torch.no_grad():
        model.scale.mul_(2.0)  # training the object later ...
    calc.reset()
    assert calc.get_potential_energy(cu_cell) == energy  # ... does not change the snapshot
    assert MPNNCalculator(model, dtype="float64").get_potential_energy(cu_cell) != energy


def test_isolated_atom_reference_cache_follows_weight_updates(potential, cu_cell):
    calc = MPNNCalculator(potential, dtype="float64")
    before = calc.get_potential_energy(cu_cell)
    frozen = calc.potential
    with torch.no_grad():  # change a weight in place, as load_state_dict would
        frozen.model.embedding.weight.add_(0.1)
    calc.reset()
    after = calc.get_potential_energy(cu_cell)
    fresh = MPNNCalculator(frozen, dtype="float64").get_potential_energy(cu_cell)
    assert after != before and after == pytest.approx(fresh, rel=1e-12)


def test_device_and_dtype_validated(potential):
    assert MPNNCalculator(potential, device="auto").device.type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="float32"):
        MPNNCalculator(potential, dtype="float16")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            MPNNCalculator(potential, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_cpu(potential, cu_cell):
    cpu = MPNNCalculator(potential, device="cpu", dtype="float64")
    gpu = MPNNCalculator(potential, device="cuda", dtype="float64")
    np.testing.assert_allclose(gpu.get_forces(cu_cell), cpu.get_forces(cu_cell), atol=1e-10)
    np.testing.assert_allclose(gpu.get_stress(cu_cell), cpu.get_stress(cu_cell), atol=1e-12)


@pytest.mark.slow
def test_compiled_model_gives_the_eager_energy_forces_and_stress():
    """compile=True (torch.compile of the model only) keeps forces and stress exact: on a
    triclinic cell, before and after the atoms move (new edge count, dynamic shapes)."""
    from ase_mpnn.models import NequIP
    from ase_mpnn.testing import rattled_triclinic_cell

    from .conftest import make_potential

    potential = make_potential(architecture=NequIP, n_features=4, n_layers=2, l_max=1,
                               radial_hidden=8)
    atoms = rattled_triclinic_cell(["Cu", "Ni"])
    eager = MPNNCalculator(potential, device="cpu", dtype="float64", skin=0.0)
    compiled = MPNNCalculator(potential, device="cpu", dtype="float64", skin=0.0, compile=True)
    assert compiled.parameters["compile"] and not eager.parameters["compile"]
    for seed in (0, 1):
        atoms.rattle(0.2, seed=seed)
        for name in ("energy", "forces", "stress"):
            np.testing.assert_allclose(compiled.get_property(name, atoms),
                                       eager.get_property(name, atoms), rtol=1e-10, atol=1e-10)
    assert pickle.loads(pickle.dumps(compiled)).parameters["compile"]


def test_unknown_keyword_is_a_type_error_naming_the_valid_options(potential):
    with pytest.raises(TypeError, match=r"'skn'.*valid options: model, device, dtype, "
                                        r"min_distance, skin, compile"):
        MPNNCalculator(potential, skn=0.3)
    calc = MPNNCalculator(potential, dtype="float64")
    with pytest.raises(TypeError, match="'skn'"):
        calc.set(skn=0.3)
    with pytest.raises(ValueError, match="skin must be a distance >= 0 Angstrom, got -1.0"):
        calc.set(skin=-1.0)
    with pytest.raises(ValueError, match="min_distance must be a distance >= 0 Angstrom, got None"):
        MPNNCalculator(potential, min_distance=None)
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda"):
        MPNNCalculator(potential, device="gpu")


def test_set_changes_settings_the_ase_way(potential, cu_cell):
    calc = MPNNCalculator(potential, dtype="float64", skin=0.5)
    cu_cell.calc = calc
    energy = cu_cell.get_potential_energy()
    assert calc.set(skin=0.5) == {}  # unchanged: results kept
    assert calc.results
    assert calc.set(skin=0.0) == {"skin": 0.0} and not calc.results  # changed: cleared
    assert calc.neighbors.skin == 0.0 and calc.parameters["skin"] == 0.0
    assert cu_cell.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    calc.set(dtype="float32")  # a new dtype loads the model again
    assert next(calc.potential.parameters()).dtype == torch.float32
    assert calc.parameters["dtype"] == "float32"
    assert cu_cell.get_potential_energy() == pytest.approx(energy, rel=1e-5)
    clone = pickle.loads(pickle.dumps(calc))
    assert clone.parameters == calc.parameters


def test_parameters_are_settings_and_provenance_joins_them_in_todict(calc):
    assert set(calc.parameters) == {"model", "device", "dtype", "min_distance", "skin",
                                    "compile", "dispersion"}
    assert calc.provenance["architecture"] == "SchNet"
    assert calc.todict()["model_sha256"] == calc.provenance["model_sha256"]
