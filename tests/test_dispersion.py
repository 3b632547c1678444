"""D3(BJ) dispersion: agreement with simple-dftd3, derivatives, batching, composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from ase_mpnn import MPNNCalculator, save_model
from ase_mpnn.committee import Committee
from ase_mpnn.dispersion import D3BJ, d3bj_parameters, list_functionals, with_dispersion
from ase_mpnn.graph import build_graph
from ase_mpnn.modelfile import read_manifest
from ase_mpnn.models.schnet import SchNet
from ase_mpnn.potential import Potential

PROPERTIES = ("energy", "forces", "stress")


def _molecule():
    return molecule("CH3CH2OH")


def _triclinic_cell():
    """Rattled, sheared rocksalt NaCl x Cu mix: three elements, a triclinic cell."""
    atoms = bulk("NaCl", "rocksalt", a=5.64) * (1, 1, 2)
    atoms.symbols[1] = "Cu"
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.06, 0.0], [0.03, 1.0, 0.04],
                                                  [0.0, 0.02, 1.05]]), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def _slab():
    atoms = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    atoms.pbc = (True, True, False)
    atoms.rattle(0.03, seed=2)
    return atoms


STRUCTURES = {"molecule": _molecule, "bulk": _triclinic_cell, "slab": _slab}


def _results(calc, atoms, properties=PROPERTIES):
    atoms = atoms.copy()
    atoms.calc = calc
    wanted = [p for p in properties if p != "stress" or atoms.pbc.all()]
    return {p: np.array(calc.get_property(p, atoms)) for p in wanted}


def _relative(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-300))


@pytest.mark.parametrize("three_body", [False, True])
@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_agrees_with_simple_dftd3(name, three_body):
    dftd3 = pytest.importorskip("dftd3.ase", reason="simple-dftd3 (pip install dftd3) is the "
                                "reference")
    atoms = STRUCTURES[name]()
    tweaks = {"method": "pbe", "atm": True} if three_body else {}
    cutoffs, ours_cutoffs = {}, {}
    if three_body and atoms.pbc.any():  # both sides' periodic three-body sums grow as r_3^6
        cutoffs, ours_cutoffs = {"disp3": 12.0}, {"three_body_cutoff": 12.0}
    reference = _results(dftd3.DFTD3(method="pbe", damping="d3bj", params_tweaks=tweaks,
                                     realspace_cutoff=cutoffs), atoms)
    ours = _results(D3BJ("pbe", three_body=three_body, **ours_cutoffs), atoms)
    for key, value in reference.items():
        assert _relative(ours[key], value) < 1e-6, key
    assert abs(ours["energy"]) > 1e-3  # not trivially zero


def test_other_functional_and_alias():
    dftd3 = pytest.importorskip("dftd3.ase", reason="simple-dftd3 is the reference")
    atoms = _molecule()
    reference = _results(dftd3.DFTD3(method="b3lyp", damping="d3bj"), atoms)["energy"]
    assert abs(_results(D3BJ("B3LYP5"), atoms)["energy"] / reference - 1) < 1e-6
    assert d3bj_parameters("pbe").a1 != d3bj_parameters("b3lyp").a1


def test_bad_functional_one_line_error_with_valid_names():
    with pytest.raises(ValueError) as info:
        D3BJ("pbx")
    message = str(info.value)
    assert "\n" not in message and "'pbx'" in message and "pbe" in message
    assert "b3lyp" in list_functionals() and len(list_functionals()) > 100
    with pytest.raises(ValueError, match="pbx"):
        MPNNCalculator(_schnet(), dispersion="pbx")


def test_batched_equals_one_by_one():
    structures = [STRUCTURES[name]() for name in sorted(STRUCTURES)]
    calc = D3BJ("pbe")
    batched = calc.calculate_batch(structures)
    for atoms, result in zip(structures, batched):
        single = _results(D3BJ("pbe"), atoms)
        for key, value in single.items():
            np.testing.assert_allclose(result[key], value, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(result["energies"].sum(), result["energy"], rtol=1e-12)


def test_finite_differences_float64():
    atoms = _triclinic_cell()
    atoms.calc = D3BJ("pbe")
    forces, stress = atoms.get_forces(), atoms.get_stress()
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-4), atol=1e-7)
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-6), atol=1e-8)
    molecule_atoms = _molecule()
    molecule_atoms.calc = D3BJ("pbe", three_body=True)
    np.testing.assert_allclose(molecule_atoms.get_forces(),
                               calculate_numerical_forces(molecule_atoms, eps=1e-4), atol=1e-8)


def test_float32_close_to_float64_and_slab_has_no_stress():
    atoms = _triclinic_cell()
    exact, single = _results(D3BJ("pbe"), atoms), _results(D3BJ("pbe", dtype="float32"), atoms)
    for key in PROPERTIES:
        assert _relative(single[key], exact[key]) < 1e-4, key
    slab = _slab()
    slab.calc = D3BJ("pbe")
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()


def _schnet(species=("Na", "Cl", "Cu"), seed=0):
    torch.manual_seed(seed)
    return Potential(SchNet(list(species), cutoff=4.0, n_features=8, n_interactions=1,
                            n_basis=8), shift=-1.0)


def test_composed_calculator_equals_model_plus_d3():
    atoms = _triclinic_cell()
    model = _schnet()
    plain = _results(MPNNCalculator(model, dtype="float64", dispersion=False), atoms)
    both = _results(MPNNCalculator(model, dtype="float64", dispersion={"functional": "pbe"}),
                    atoms)
    d3 = _results(D3BJ("pbe"), atoms)
    for key in PROPERTIES:
        np.testing.assert_allclose(both[key], plain[key] + d3[key], rtol=1e-10, atol=1e-12)
    assert np.abs(d3["forces"]).max() > 1e-3
    calc = MPNNCalculator(model, dtype="float64", dispersion="pbe")
    assert calc.parameters["dispersion"] == {"functional": "pbe", "three_body": False}
    assert "stresses" not in calc.implemented_properties  # they would miss the D3 virial
    # a committee: every member gets D3 (the mean shifts by it, the spread does not)
    committee = Committee([_schnet(seed=0), _schnet(seed=1)])
    plain_c = MPNNCalculator(committee, dtype="float64", dispersion=False)
    both_c = MPNNCalculator(committee, dtype="float64", dispersion="pbe")
    for key in ("energy", "forces"):
        np.testing.assert_allclose(_results(both_c, atoms, [key])[key],
                                   _results(plain_c, atoms, [key])[key] + d3[key], atol=1e-10)
    batch = both_c.calculate_batch([atoms, _molecule()[:0] + atoms])
    np.testing.assert_allclose(batch[0]["energy"], _results(both_c, atoms)["energy"], rtol=1e-12)


def test_manifest_flag_adds_d3_back_unless_switched_off(tmp_path):
    atoms = _triclinic_cell()
    model = _schnet()
    path = save_model(model, tmp_path / "subtracted.mpnn",
                      dispersion={"functional": "pbe", "subtracted": True})
    plain = _results(MPNNCalculator(model, dtype="float64", dispersion=False), atoms)
    d3 = _results(D3BJ("pbe"), atoms)
    auto = MPNNCalculator(path, dtype="float64")
    assert auto.provenance["dispersion_added"] == {"functional": "pbe", "three_body": False}
    np.testing.assert_allclose(_results(auto, atoms)["energy"], plain["energy"] + d3["energy"],
                               rtol=1e-12)
    off = MPNNCalculator(path, dtype="float64", dispersion=False)
    assert off.provenance["dispersion_added"] is None
    np.testing.assert_allclose(_results(off, atoms)["energy"], plain["energy"], rtol=1e-12)
    unflagged = save_model(model, tmp_path / "plain.mpnn")
    assert MPNNCalculator(unflagged).provenance["dispersion_added"] is None
    # an older reader would not add D3 back: the flagged file needs format version 2
    assert read_manifest(path)["format_version"] == 2
    assert read_manifest(unflagged)["format_version"] == 1


def test_calculator_dispersion_takes_shorter_cutoffs():
    """dispersion={"functional": ..., "cutoff": A, "cn_cutoff": A} equals D3BJ with the same
    cutoffs (and differs from the default ones); nonsense cutoffs are refused by name."""
    atoms = _triclinic_cell()
    short = {"cutoff": 12.0, "cn_cutoff": 8.0}
    plain = _results(MPNNCalculator(_schnet(), dtype="float64", dispersion=False), atoms)
    calc = MPNNCalculator(_schnet(), dtype="float64", dispersion={"functional": "pbe", **short})
    d3_short = _results(D3BJ("pbe", **short), atoms)
    np.testing.assert_allclose(_results(calc, atoms)["energy"],
                               plain["energy"] + d3_short["energy"], rtol=1e-12)
    assert abs(d3_short["energy"] - _results(D3BJ("pbe"), atoms)["energy"]) > 1e-4
    for bad in (-1.0, float("nan"), "12", True):
        with pytest.raises(ValueError, match="cn_cutoff"):
            MPNNCalculator(_schnet(), dispersion={"functional": "pbe", "cn_cutoff": bad})


def test_with_dispersion_potential_one_pass():
    atoms = _molecule()
    composed = with_dispersion(_schnet(("C", "H", "O")).double())
    assert composed.species == ["C", "H", "O"] and composed.cutoff == 4.0
    plain = _results(MPNNCalculator(_schnet(("C", "H", "O")), dtype="float64",
                                    dispersion=False), atoms)
    d3 = _results(D3BJ("pbe"), atoms)
    graph = build_graph(atoms, composed.cutoff, composed.species)
    out = composed(graph, forces=True)
    np.testing.assert_allclose(float(out["energy"][0].detach()), plain["energy"] + d3["energy"],
                               rtol=1e-12)
    np.testing.assert_allclose(out["forces"].numpy(), plain["forces"] + d3["forces"],
                               atol=1e-12)


@pytest.mark.slow
def test_training_subtracts_d3_and_records_it(tmp_path):
    from ase.io import write

    from ase_mpnn.training import TrainConfig, train
    from ase_mpnn.training.loop import _load_splits

    frames = []
    for seed in range(6):
        atoms = bulk("Cu", "fcc", a=3.61) * (2, 2, 1)
        atoms.rattle(0.05, seed=seed)
        atoms.calc = None
        atoms.info["REF_energy"] = -1.0 - 0.1 * seed
        atoms.arrays["REF_forces"] = np.full((len(atoms), 3), 0.01 * seed)
        frames.append(atoms)
    path = tmp_path / "data.extxyz"
    write(path, frames)
    common = dict(data=str(path), valid_fraction=0.34, test_fraction=0.0, cutoff=3.0,
                  hyperparameters={"n_features": 4, "n_interactions": 1, "n_basis": 4},
                  epochs=1, batch_size=4, progress=False)
    plain, _ = _load_splits(TrainConfig(**common))
    config = TrainConfig(**common, subtract_dispersion="pbe", output=str(tmp_path / "run"))
    subtracted, _ = _load_splits(config)
    for before, after in zip(plain["train"], subtracted["train"]):
        d3 = _results(D3BJ("pbe"), before.atoms)
        np.testing.assert_allclose(after.energy, before.energy - d3["energy"], rtol=1e-12)
        np.testing.assert_allclose(after.forces, before.forces - d3["forces"], atol=1e-12)
    with pytest.raises(ValueError, match="pbx"):
        TrainConfig(**common, subtract_dispersion="pbx")
    train(config)
    manifest = read_manifest(tmp_path / "run" / "best.mpnn")
    assert manifest["dispersion"] == {"functional": "pbe", "three_body": False,
                                      "subtracted": True}
    calc = MPNNCalculator(tmp_path / "run" / "best.mpnn")
    assert calc.provenance["dispersion_added"] == {"functional": "pbe", "three_body": False}


def test_benchmark_judges_its_targets():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "dispersion.py"
    spec = importlib.util.spec_from_file_location("dispersion_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    good = {"ours float64": 1000.0, "dftd3": 400.0, "torch-dftd": 5000.0,
            "SchNet 108": 10.0, "SchNet+D3 108": 13.0}
    assert all(met for *_, met in bench.judge(good))
    bad = {**good, "dftd3": 300.0, "torch-dftd": 4900.0, "SchNet+D3 108": 13.1}
    assert not any(met for *_, met in bench.judge(bad))
    assert len(bench.judge({k: v for k, v in good.items() if k != "torch-dftd"})) == 2
