"""Committees: the mean of the members, their spread, one file, the calculator's results."""

from __future__ import annotations

import copy
import pickle
import zipfile

import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError

from ase_mpnn import (
    Committee,
    ModelFileError,
    MPNNCalculator,
    load_model,
    save_committee,
    save_model,
)
from ase_mpnn.models.presets import SMALL
from ase_mpnn.testing import rattled_triclinic_cell, small_molecule

from .conftest import SPECIES, make_potential, make_preset


def _single(model, atoms, dtype="float64"):
    atoms = atoms.copy()
    atoms.calc = MPNNCalculator(model, device="cpu", dtype=dtype)
    periodic = atoms.pbc.all()
    return (atoms.get_potential_energy(), atoms.get_forces(),
            atoms.get_stress() if periodic else None)


def _committee_results(model, atoms, dtype="float64"):
    atoms = atoms.copy()
    atoms.calc = model if isinstance(model, MPNNCalculator) else MPNNCalculator(
        model, device="cpu", dtype=dtype)
    atoms.get_forces()
    return atoms.calc.results


@pytest.fixture(scope="module")
def members():
    return [make_potential(seed=k) for k in range(3)]


@pytest.mark.parametrize("architecture", sorted(SMALL))
def test_committee_mean_and_members_equal_the_members_alone(architecture):
    members = [make_preset(architecture, seed=k) for k in range(2)]
    atoms = rattled_triclinic_cell(SPECIES)
    alone = [_single(m, atoms) for m in members]
    results = _committee_results(members, atoms)
    assert results["energy"] == pytest.approx(np.mean([a[0] for a in alone]), abs=1e-10)
    np.testing.assert_allclose(results["forces"], np.mean([a[1] for a in alone], axis=0),
                               atol=1e-10)
    np.testing.assert_allclose(results["stress"], np.mean([a[2] for a in alone], axis=0),
                               atol=1e-12)
    np.testing.assert_allclose(results["energy_comm"], [a[0] for a in alone], atol=1e-10)
    np.testing.assert_allclose(results["forces_comm"], [a[1] for a in alone], atol=1e-10)
    np.testing.assert_allclose(results["stress_comm"], [a[2] for a in alone], atol=1e-12)


def test_spread_is_the_population_std_over_members(members):
    atoms = rattled_triclinic_cell(SPECIES)
    alone = [_single(m, atoms) for m in members]
    results = _committee_results(members, atoms)
    forces = np.array([a[1] for a in alone])
    assert results["energy_std"] == pytest.approx(np.std([a[0] for a in alone]), abs=1e-10)
    np.testing.assert_allclose(results["forces_std"], np.sqrt(forces.var(axis=0).sum(axis=-1)),
                               atol=1e-10)
    np.testing.assert_allclose(results["stress_std"], np.std([a[2] for a in alone], axis=0),
                               atol=1e-12)
    assert results["energies_std"].shape == (len(atoms),)
    assert results["forces_std"].shape == (len(atoms),)
    assert results["forces_comm"].shape == (3, len(atoms), 3)
    assert results["forces_std"].min() > 0


def test_identical_members_have_zero_spread(members):
    twin = copy.deepcopy(members[0])
    results = _committee_results([members[0], twin], rattled_triclinic_cell(SPECIES))
    assert results["energy_std"] == 0.0
    assert np.all(results["forces_std"] == 0.0)
    assert np.all(results["stress_std"] == 0.0)
    assert np.all(results["energies_std"] == 0.0)


def test_molecule_has_no_stress_but_every_other_committee_result(members):
    atoms = small_molecule(SPECIES)
    atoms.calc = MPNNCalculator(members, device="cpu", dtype="float64")
    assert atoms.calc.get_property("forces_std", atoms).shape == (len(atoms),)
    for name in ("stress", "stress_std", "stress_comm"):
        with pytest.raises(PropertyNotImplementedError):
            atoms.calc.get_property(name, atoms)


def test_a_single_model_has_no_committee_results(members):
    atoms = rattled_triclinic_cell(SPECIES)
    atoms.calc = MPNNCalculator(members[0], device="cpu", dtype="float64")
    assert "forces_std" not in atoms.calc.implemented_properties
    with pytest.raises(PropertyNotImplementedError):
        atoms.calc.get_property("forces_std", atoms)


def test_committee_file_round_trip_keeps_results_and_calibration(members, tmp_path):
    atoms = rattled_triclinic_cell(SPECIES)
    path = save_committee(members, tmp_path / "c.mpnn", calibration={"forces": 2.5})
    loaded = load_model(path)
    assert isinstance(loaded, Committee)
    assert loaded.calibration == {"energy": 1.0, "forces": 2.5, "stress": 1.0}
    assert loaded.manifest["kind"] == "committee"
    listed = _committee_results(members, atoms)
    from_file = _committee_results(str(path), atoms)
    np.testing.assert_allclose(from_file["forces"], listed["forces"], atol=1e-12)
    np.testing.assert_allclose(from_file["forces_std"], 2.5 * listed["forces_std"], atol=1e-12)


def test_members_given_as_files_and_as_a_list_of_paths(members, tmp_path):
    paths = [save_model(member, tmp_path / f"m{k}.mpnn") for k, member in enumerate(members)]
    atoms = rattled_triclinic_cell(SPECIES)
    by_paths = _committee_results([str(p) for p in paths], atoms)
    from_saved = _committee_results(str(save_committee(paths, tmp_path / "c.mpnn")), atoms)
    np.testing.assert_allclose(by_paths["forces_comm"], from_saved["forces_comm"], atol=1e-12)


def test_damaged_member_is_refused_naming_it(members, tmp_path):
    path = save_committee(members, tmp_path / "c.mpnn")
    damaged = tmp_path / "damaged.mpnn"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "members/1.mpnn":
                data = data[:-40] + bytes(40)
            target.writestr(item, data)
    with pytest.raises(ModelFileError, match="members/1.mpnn"):
        load_model(damaged)


def test_members_with_other_species_are_refused(members):
    other = make_potential(seed=0)
    other.model.species = ["Ni", "Cu"]
    with pytest.raises(ValueError, match="same species"):
        Committee([members[0], other])
    with pytest.raises(ValueError, match="at least two"):
        Committee(members[:1])
    with pytest.raises(ValueError, match="must be > 0"):
        Committee(members, {"forces": 0.0})


def test_pickled_and_copied_committee_calculators_give_the_same_results(members, tmp_path):
    atoms = rattled_triclinic_cell(SPECIES)
    path = save_committee(members, tmp_path / "c.mpnn")
    for source in (members, str(path)):
        calc = MPNNCalculator(source, device="cpu", dtype="float64")
        reference = _committee_results(calc, atoms)
        for clone in (pickle.loads(pickle.dumps(calc)), copy.deepcopy(calc)):
            again = _committee_results(clone, atoms)
            assert np.array_equal(again["forces_std"], reference["forces_std"])
            assert np.array_equal(again["forces_comm"], reference["forces_comm"])


def test_batched_evaluation_gives_each_structure_its_committee_results(members):
    structures = [rattled_triclinic_cell(SPECIES, 0), small_molecule(SPECIES),
                  rattled_triclinic_cell(SPECIES, 1)]
    calc = MPNNCalculator(members, device="cpu", dtype="float64")
    batched = calc.calculate_batch(structures)
    for atoms, together in zip(structures, batched):
        alone = _committee_results(members, atoms)
        for name in ("energy_std", "forces_std", "forces_comm", "energy_comm"):
            np.testing.assert_allclose(together[name], alone[name], atol=1e-10)
        assert ("stress_std" in together) == bool(atoms.pbc.all())


def test_high_throughput_rows_keep_the_committee_spread(members, tmp_path):
    from ase.io import write

    from ase_mpnn.runs import run
    from ase_mpnn.runs.results_db import ResultsDB

    structures = [rattled_triclinic_cell(SPECIES, k) for k in range(3)]
    write(tmp_path / "in.extxyz", structures)
    model = save_committee(members, tmp_path / "c.mpnn")
    counts = run("static", [tmp_path / "in.extxyz"], tmp_path / "r.db", str(model),
                 workers=0, dtype="float64", progress=False)
    assert counts["ok"] == 3
    for row in ResultsDB(tmp_path / "r.db").rows():
        atoms = structures[int(row.input_id.rsplit(":", 1)[1])]
        alone = _committee_results(members, atoms)
        assert row.max_force_std == pytest.approx(alone["forces_std"].max(), rel=1e-6)
        assert row.energy_std_per_atom == pytest.approx(alone["energy_std"] / len(atoms),
                                                        rel=1e-6)
