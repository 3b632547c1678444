"""Total charge and spin multiplicity: read from atoms.info, batched, embedded, refused by
models that do not take them, and kept by the model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from ase_mpnn import Committee, MPNNCalculator, Potential, keys, load_model, save_model, testing
from ase_mpnn.batch import evaluate
from ase_mpnn.errors import InvalidChargeSpinError, UnsupportedInputError
from ase_mpnn.graph import build_graph
from ase_mpnn.graph.charge_spin import GlobalState, read_global_state
from ase_mpnn.models.presets import SMALL, build_preset
from ase_mpnn.testing import rattled_triclinic_cell, scale_to_force_rms, small_molecule
from ase_mpnn.training.datacheck import check_data, format_report
from ase_mpnn.training.samples import (
    DataError,
    check_global_inputs_taken,
    fit_reference_energies,
    parse_frame,
    read_samples,
)

from .conftest import SPECIES, make_potential

CHARGED = ["charge", "spin"]


def with_state(atoms: Atoms, charge: int, multiplicity: int | None = None) -> Atoms:
    """A copy with the charge and (default: the lowest) multiplicity in atoms.info."""
    atoms = atoms.copy()
    electrons = int(atoms.numbers.sum()) - charge
    atoms.info.update(charge=charge, spin=multiplicity or 1 + electrons % 2)
    return atoms


def charged_preset(name: str, seed: int = 0):
    """A SMALL preset over Cu/Ni with the charge and spin embedding, physically scaled."""
    model = build_preset(name, SPECIES, 4.0, seed=seed, global_inputs=CHARGED)
    with torch.no_grad():  # random weights: make the embedding matter as much as the rest
        for p in model.global_embedding.parameters():
            p.normal_(0.0, 1.0)
    return scale_to_force_rms(Potential(model), rattled_triclinic_cell(SPECIES), 1.0)


# --- reading atoms.info --------------------------------------------------------------
@pytest.mark.parametrize("info, expected", [
    ({}, (0, 1)),
    ({"charge": 1, "spin": 2}, (1, 2)),
    ({"total_charge": -1, "total_spin": 2}, (-1, 2)),
    ({"charge": np.int64(1), "multiplicity": 2.0}, (1, 2)),
    ({"charge": 0, "spin": 3}, (0, 3)),  # a triplet
    ({"charge": 0, "spin": 0}, (0, 1)),  # FAIRChem's "spin not given"
    ({"charge": 1, "total_charge": 1, "spin": 2, "multiplicity": 2}, (1, 2)),  # aliases agree
])
def test_charge_and_multiplicity_are_read_under_every_alias(info, expected):
    assert read_global_state(info, molecule("H2O").numbers) == GlobalState(*expected)


@pytest.mark.parametrize("info, match", [
    ({"charge": 1, "total_charge": 0}, "conflicting values"),
    ({"spin": 2, "multiplicity": 4}, "conflicting values"),
    ({"charge": 0.5}, "not an integer"),
    ({"charge": "+1"}, "not an integer"),
    ({"charge": True}, "not an integer"),
    ({"charge": float("nan")}, "not an integer"),
    ({"spin": -1}, "multiplicity 2S \\+ 1 >= 1"),
    ({"charge": 1}, "multiplicity 1 does not fit 9 electrons"),  # H2O+ is a doublet
    ({"spin": 2}, "multiplicity 2 does not fit 10 electrons"),
    ({"charge": 11}, "leaves -1 electrons"),
])
def test_bad_or_conflicting_values_raise_a_named_error(info, match):
    with pytest.raises(InvalidChargeSpinError, match=match):
        read_global_state(info, molecule("H2O").numbers)


def test_graph_fields_only_when_some_structure_is_not_a_neutral_singlet():
    water = molecule("H2O")
    neutral = build_graph([water, water], 5.0, ["H", "O"])
    assert keys.TOTAL_CHARGE not in neutral and keys.SPIN_MULTIPLICITY not in neutral
    mixed = build_graph([water, with_state(water, 1), with_state(water, 0, 3)], 5.0, ["H", "O"])
    assert mixed[keys.TOTAL_CHARGE].tolist() == [0.0, 1.0, 0.0]
    assert mixed[keys.SPIN_MULTIPLICITY].tolist() == [1.0, 2.0, 3.0]
    triplet_only = build_graph([with_state(water, 0, 3)], 5.0, ["H", "O"])
    assert keys.TOTAL_CHARGE not in triplet_only and keys.SPIN_MULTIPLICITY in triplet_only


def test_training_frames_keep_their_charge_and_report_bad_ones():
    frame = with_state(molecule("H2O"), -1)
    frame.info["total_charge"] = frame.info.pop("charge")  # mace-torch's key
    frame.info["REF_energy"] = -1.0
    sample, problems = parse_frame(frame)
    assert not problems and sample.atoms.info == {"charge": -1, "spin": 2}
    frame.info["total_charge"] = 0.5
    assert "not an integer" in parse_frame(frame)[1][0]
    with pytest.raises(DataError, match="charge -1, multiplicity 2, but the model takes no "
                                        "charge or spin input"):
        check_global_inputs_taken([sample], ())
    check_global_inputs_taken([sample], ("charge", "spin"))


def test_check_data_counts_states_and_one_geometry_at_two_charges_is_no_duplicate(tmp_path):
    from ase.io import write

    frames = []
    for k, (charge, energy) in enumerate([(0, -10.0), (1, 5.0), (0, -10.1), (1, 5.1)]):
        frame = with_state(molecule("H2O"), charge)
        frame.positions[0, 0] += 0.01 * (k // 2)  # two geometries, each at charge 0 and +1
        frame.info["REF_energy"] = energy
        frames.append(frame)
    write(tmp_path / "ions.extxyz", frames)
    report = check_data(tmp_path / "ions.extxyz")
    assert report.ok and report.duplicates == []
    assert report.global_states == {"+0/1": 2, "+1/2": 2}
    assert "charge/multiplicity  +0/1 2, +1/2 2" in format_report(report)
    # E0 from the neutral frames only: the cation's 15 eV is left to the embedding
    e0 = fit_reference_energies(read_samples(tmp_path / "ions.extxyz", require_forces=False),
                                ["H", "O"], fixed={"H": 0.0})
    assert e0["O"] == pytest.approx(-10.05)


# --- models without the inputs ---------------------------------------------------------
def test_a_model_without_the_inputs_refuses_a_charge_and_accepts_the_neutral_singlet(potential):
    assert potential.global_inputs == ()
    atoms = small_molecule(SPECIES)
    calc = MPNNCalculator(potential, device="cpu", dtype="float64")
    energy = calc.get_potential_energy(atoms)
    neutral = with_state(atoms, 0, 1)
    assert calc.get_potential_energy(neutral) == energy
    with pytest.raises(UnsupportedInputError, match="SchNet model takes no total charge"):
        calc.get_potential_energy(with_state(atoms, 1))
    with pytest.raises(UnsupportedInputError, match="takes no spin multiplicity"):
        calc.get_potential_energy(with_state(atoms, 0, 3))
    with pytest.raises(UnsupportedInputError):
        evaluate([atoms, with_state(atoms, 2)], potential)
    stored = evaluate([atoms, with_state(atoms, 2)], potential, errors="store")
    assert stored[0]["energy"] == pytest.approx(energy, abs=1e-4)
    assert stored[1]["error"].startswith("UnsupportedInputError: this SchNet model takes no")


def test_a_model_with_charge_only_refuses_a_spin():
    potential = make_potential(global_inputs=["charge"])
    atoms = small_molecule(SPECIES)
    evaluate(with_state(atoms, 2), potential)  # an even charge keeps the singlet
    with pytest.raises(UnsupportedInputError, match="spin multiplicity"):
        evaluate(with_state(atoms, 1), potential)


# --- models with the inputs ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_architecture_tells_charges_apart_with_exact_forces(name):
    potential = charged_preset(name)
    assert potential.global_inputs == ("charge", "spin")
    atoms = small_molecule(SPECIES)[:6]
    energies = {q: evaluate(with_state(atoms, q), potential, dtype="float64")["energy"]
                for q in (-1, 0, 1)}
    assert abs(energies[1] - energies[0]) > 1e-3 and abs(energies[-1] - energies[0]) > 1e-3
    cation = with_state(atoms, 1)
    # forces ~3x the neutral's: a smaller step keeps the O(d^2) truncation below 1e-6
    assert testing.check_forces_finite_difference(potential, cation, d=3e-5) < 1e-6
    assert max(testing.check_symmetry(potential, cation).values()) < 1e-10
    high_spin = with_state(atoms, -1)
    high_spin.info["spin"] += 2
    structures = [cation, with_state(atoms, 0), high_spin, with_state(atoms, -1)]
    assert testing.check_batch_consistency(potential, structures) < 1e-10


@pytest.mark.parametrize("name", ["SchNet", "MACE"])
def test_stress_of_a_charged_cell_is_the_strain_derivative(name):
    cell = with_state(rattled_triclinic_cell(SPECIES), 1)
    assert testing.check_stress_finite_difference(charged_preset(name), cell) < 1e-7


def test_the_neutral_singlet_adds_nothing_to_the_features():
    potential = charged_preset("SchNet").double()
    graph = build_graph(small_molecule(SPECIES), potential.cutoff, SPECIES)
    energy = potential(graph, forces=False)[keys.ENERGY]
    potential.model.global_embedding = None  # the same weights, charge-blind
    torch.testing.assert_close(potential(graph, forces=False)[keys.ENERGY], energy,
                               rtol=0, atol=1e-12)


def test_the_model_file_keeps_the_inputs(tmp_path):
    potential = charged_preset("MACE")
    path = save_model(potential, tmp_path / "charged.mpnn")
    loaded = load_model(path)
    assert loaded.global_inputs == ("charge", "spin")
    cation = with_state(small_molecule(SPECIES), 1)
    expected = evaluate(cation, potential, dtype="float64")["energy"]
    assert evaluate(cation, loaded, dtype="float64")["energy"] == expected


def test_the_calculator_recomputes_when_the_charge_changes():
    calc = MPNNCalculator(charged_preset("SchNet"), device="cpu", dtype="float64")
    atoms = small_molecule(SPECIES)
    atoms.calc = calc
    neutral = atoms.get_potential_energy()
    assert atoms.numbers.sum() % 2 == 0
    atoms.info.update(charge=2, spin=1)  # only the charge differs from the default
    cation = atoms.get_potential_energy()  # the same positions: ASE alone would not notice
    assert cation != neutral
    assert calc.neighbors.reuses == 1  # the stored list was reused, the charge read afresh
    del atoms.info["charge"], atoms.info["spin"]
    assert atoms.get_potential_energy() == neutral


def test_a_committee_takes_what_every_member_takes():
    charged, blind = charged_preset("SchNet"), make_potential(seed=3)
    assert Committee([charged, charged_preset("SchNet", seed=1)]).global_inputs == (
        "charge", "spin")
    committee = Committee([charged, blind])
    assert committee.global_inputs == ()
    with pytest.raises(UnsupportedInputError):
        evaluate(with_state(small_molecule(SPECIES), 1), committee)


# --- the built-in model ----------------------------------------------------------------
@pytest.mark.slow
def test_the_builtin_charge_model_predicts_xtb_ionisation_energies_of_new_geometries():
    """benchmarks/charge_xtb.py on 45 held-out geometries (seed 2; training used seed 0)."""
    pytest.importorskip("tblite", reason="the xTB labels need tblite")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import charge_xtb

    result = charge_xtb.ionisation_errors("xtb-chno-schnet-charge", charge_xtb.MOLECULES, 45,
                                          seed=2)
    rows = charge_xtb.summarise(result)
    assert rows["all"]["n"] == 45 and rows["all"]["mean_xtb_ip"] > 10.0
    assert rows["all"]["mae"] <= charge_xtb.MAX_IP_MAE and rows["all"]["max"] < 0.3
