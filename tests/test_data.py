"""Training data as mace-torch / nequip users have it: extxyz keys, virials, config types,
IsolatedAtom E0s, partial labels, mixed periodicity, several files and ase.db, label checks,
config-type weights, and ``check-data``.

The files are written with ase.io.write the way those users write them: Atoms with
info["REF_energy"], arrays["REF_forces"], info["REF_stress"] or info["REF_virials"] and
info["config_type"], labelled with ASE's EMT.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc100
from ase.calculators.emt import EMT
from ase.db import connect
from ase.io import write

from ase_mpnn import MPNNCalculator, keys
from ase_mpnn.cli import main
from ase_mpnn.training import TrainConfig, train
from ase_mpnn.training.datacheck import check_data, format_report
from ase_mpnn.training.loop import _load_splits, build_potential
from ase_mpnn.training.loss import batch_loss, dataset_loss
from ase_mpnn.training.metrics import error_metrics, format_metrics
from ase_mpnn.training.samples import (
    DataError,
    GraphCache,
    apply_config_type_weights,
    energy_scale,
    fit_reference_energies,
    read_samples,
)

from .conftest import make_potential

TINY = {"n_features": 8, "n_interactions": 1, "n_basis": 8}


def _value(loss: torch.Tensor) -> float:
    return loss.detach().item()


def emt_frame(atoms: Atoms, *, energy=True, forces=True, stress=True, virials=False,
              config_type: str | None = None) -> Atoms:
    """A copy of ``atoms`` with EMT labels under mace-torch's keys (no calculator attached)."""
    calc_atoms = atoms.copy()
    calc_atoms.calc = EMT()
    frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    if energy:
        frame.info["REF_energy"] = calc_atoms.get_potential_energy()
    if forces:
        frame.arrays["REF_forces"] = calc_atoms.get_forces()
    if stress and atoms.pbc.all():
        frame.info["REF_stress"] = calc_atoms.get_stress()  # 6 Voigt, eV/A^3
    if virials and atoms.pbc.all():  # mace-torch: virials = -stress * volume, eV
        frame.info["REF_virials"] = -calc_atoms.get_stress(voigt=False) * atoms.get_volume()
    if config_type:
        frame.info["config_type"] = config_type
    return frame


def cuni(seed: int, repeat=(1, 1, 1), rattle: float = 0.08) -> Atoms:
    """A rattled cubic fcc cell (a = 3.6 A) with about a third of the atoms Ni."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.random(len(atoms)) < 0.35] = "Ni"
    atoms.rattle(rattle, seed=seed)
    return atoms


def slab() -> Atoms:
    atoms = fcc100("Cu", (2, 2, 2), a=3.6, vacuum=4.0)
    atoms.pbc = (True, True, False)
    atoms.rattle(0.05, seed=3)
    return atoms


def wire() -> Atoms:
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 0, 0]], cell=[3.6, 10, 10],
                  pbc=(True, False, False))
    atoms.rattle(0.05, seed=4)
    return atoms


def molecule() -> Atoms:
    return Atoms("CuNi", positions=[[0, 0, 0], [2.3, 0.1, 0]])


@pytest.fixture()
def bulk_frames() -> list[Atoms]:
    return [emt_frame(cuni(seed)) for seed in range(8)]


# --- keys, virials, stress forms --------------------------------------------------------


def test_virials_converted_equal_stress(tmp_path):
    atoms = cuni(0)
    path = tmp_path / "v.extxyz"
    write(path, [emt_frame(atoms), emt_frame(atoms, stress=False, virials=True)])
    with_stress, with_virials = read_samples(path)
    assert with_virials.stress is not None
    np.testing.assert_allclose(with_virials.stress, with_stress.stress, rtol=1e-10, atol=1e-12)
    # a frame with both uses the stress; virials on a molecule are ignored
    both = emt_frame(atoms, virials=True)
    both.info["REF_virials"] = np.zeros((3, 3))
    mol = emt_frame(molecule())
    mol.info["REF_virials"] = np.ones(6)
    write(path, [both, mol])
    both_sample, mol_sample = read_samples(path)
    np.testing.assert_allclose(both_sample.stress, with_stress.stress, rtol=1e-10)
    assert mol_sample.stress is None


def test_voigt_9_and_3x3_stress_read_the_same(tmp_path):
    frame = emt_frame(cuni(1))
    voigt = frame.info["REF_stress"]
    full = cuni(1).copy()
    full.calc = EMT()
    tensor = full.get_stress(voigt=False)
    frames = []
    for form in (voigt, tensor.ravel(), tensor):
        copy = frame.copy()
        copy.info["REF_stress"] = form
        frames.append(copy)
    write(tmp_path / "s.extxyz", frames)
    samples = read_samples(tmp_path / "s.extxyz")
    for sample in samples:
        np.testing.assert_allclose(sample.stress, tensor, rtol=1e-10, atol=1e-14)


def test_custom_key_names(tmp_path):
    frame = emt_frame(cuni(2))
    custom = Atoms(frame.numbers, positions=frame.positions, cell=frame.cell, pbc=True)
    custom.info["DFT_energy"] = frame.info["REF_energy"]
    custom.arrays["DFT_forces"] = frame.arrays["REF_forces"]
    custom.info["DFT_stress"] = frame.info["REF_stress"]
    custom.info["kind"] = "bulk"
    write(tmp_path / "c.extxyz", [custom])
    config = TrainConfig(energy_key="DFT_energy", forces_key="DFT_forces",
                         stress_key="DFT_stress", config_type_key="kind")
    (sample,) = read_samples(tmp_path / "c.extxyz", config.label_keys())
    assert sample.energy == pytest.approx(frame.info["REF_energy"])
    assert sample.forces.shape == (4, 3) and sample.stress.shape == (3, 3)
    assert sample.config_type == "bulk"
    # the older keys dict still works; contradicting a *_key option is an error
    old = TrainConfig(keys={"energy": "DFT_energy"}).label_keys()
    assert old["energy"] == "DFT_energy" and old["forces"] == "REF_forces"
    with pytest.raises(ValueError, match="contradicts energy_key"):
        TrainConfig(keys={"energy": "E"}, energy_key="DFT_energy")
    with pytest.raises(ValueError, match="unknown label"):
        TrainConfig(keys={"charges": "q"})


# --- isolated atoms, partial labels, periodicity, several files -------------------------


def test_isolated_atoms_give_e0_exactly_and_are_not_in_splits(tmp_path, bulk_frames):
    isolated = [Atoms("Cu", cell=[10, 10, 10], pbc=True), Atoms("Ni")]
    for atoms, e0 in zip(isolated, (-0.123, -0.456)):
        atoms.info.update(REF_energy=e0, config_type="IsolatedAtom")
    path = tmp_path / "iso.extxyz"
    write(path, isolated + bulk_frames)
    config = TrainConfig(data=str(path), valid_fraction=0.25, test_fraction=0.25,
                         hyperparameters=TINY, cutoff=4.0)
    splits, e0 = _load_splits(config)
    assert e0 == {"Cu": -0.123, "Ni": -0.456}
    in_splits = [s for part in splits.values() for s in part]
    assert len(in_splits) == 8 and not any(s.is_isolated_atom for s in in_splits)
    potential = build_potential(config, splits["train"], e0)
    assert potential.reference_energies.tolist() == [-0.456, -0.123]  # species Ni, Cu
    # only Cu given: Ni is fitted with Cu held fixed; the config's value wins over both
    partial = build_potential(config, splits["train"], {"Cu": -0.123})
    fitted = fit_reference_energies(splits["train"], ["Ni", "Cu"], fixed={"Cu": -0.123})
    assert partial.reference_energies.tolist() == [fitted["Ni"], -0.123]
    config.reference_energies = {"Cu": -1.0}
    assert build_potential(config, splits["train"], e0).reference_energies.tolist() == [
        -0.456, -1.0]
    # no shift: a lone atom (any cell, periodic or not) gets exactly its E0 from the
    # calculator, a far-apart pair the sum of theirs, whatever the weights
    assert potential.shift.tolist() == [0.0, 0.0]
    calc = MPNNCalculator(potential, dtype="float64")
    for atoms, e0 in [(Atoms("Cu", cell=[12] * 3, pbc=True), -0.123),
                      (Atoms("Ni"), -0.456),
                      (Atoms("CuNi", positions=[[0, 0, 0], [0, 0, 9.0]]), -0.579)]:
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(e0, abs=1e-12)
        assert np.abs(atoms.get_forces()).max() == 0.0


def test_partial_labels_train_one_epoch(tmp_path, bulk_frames):
    frames = [emt_frame(cuni(10 + k), forces=False, stress=False) for k in range(3)]
    frames += [emt_frame(cuni(20 + k), energy=False) for k in range(3)]
    frames += bulk_frames[:4]
    write(tmp_path / "partial.extxyz", frames)
    samples = read_samples(tmp_path / "partial.extxyz", require_forces=False)
    assert sum(s.energy is None for s in samples) == 3
    assert sum(s.forces is None for s in samples) == 3
    # E0 from frames with an energy; the scale (RMS force) from frames with forces
    e0 = fit_reference_energies(samples, ["Ni", "Cu"])
    scale = energy_scale(samples, e0)
    rms = np.sqrt(np.mean(np.concatenate([s.forces for s in samples if s.forces is not None]) ** 2))
    assert np.isfinite(list(e0.values())).all() and scale == pytest.approx(rms, rel=1e-12)
    no_forces = [s for s in samples if s.forces is None]
    assert energy_scale(no_forces, e0) > 0 and energy_scale([], e0) == 1.0
    _, targets = GraphCache(samples, 4.0, ["Ni", "Cu"]).batch(range(len(samples)), torch.float64)
    assert targets["energy_mask"].tolist() == [True] * 3 + [False] * 3 + [True] * 4
    assert torch.isfinite(targets["energy"]).all() and targets["energy"][3:6].eq(0).all()
    config = TrainConfig(data=str(tmp_path / "partial.extxyz"), valid_fraction=0.3,
                         test_fraction=0.0, hyperparameters=TINY, cutoff=4.0, epochs=1,
                         batch_size=4, stress_weight=1.0, output=str(tmp_path / "run"),
                         progress=False)
    summary = train(config)
    history = np.loadtxt(tmp_path / "run" / "metrics.csv", delimiter=",", skiprows=1, ndmin=2)
    assert summary["epochs"] == 1 and np.isfinite(history[0, 1:3]).all()


def test_frame_without_any_label_is_an_error(tmp_path):
    write(tmp_path / "none.extxyz", [Atoms("Cu", positions=[[0, 0, 0]])])
    with pytest.raises(DataError, match=r"none.extxyz:0: no labels"):
        read_samples(tmp_path / "none.extxyz", require_forces=False)


def test_mixed_periodicity_reads(tmp_path, capsys):
    slab_frame = emt_frame(slab())
    slab_frame.info["REF_stress"] = np.ones(6)  # ignored: not 3-D periodic
    frames = [emt_frame(cuni(0)), slab_frame, emt_frame(wire()), emt_frame(molecule())]
    write(tmp_path / "mixed.extxyz", frames)
    samples = read_samples(tmp_path / "mixed.extxyz")
    assert [s.atoms.pbc.sum() for s in samples] == [3, 2, 1, 0]
    assert [s.stress is not None for s in samples] == [True, False, False, False]
    report = check_data(tmp_path / "mixed.extxyz")
    assert report.ok and report.ignored_stress == 1
    assert report.periodicity == {"3-D bulk": 1, "2-D slab": 1, "1-D wire": 1,
                                  "0-D molecule": 1}
    potential = make_potential().double()
    cache = GraphCache(samples, potential.cutoff, potential.species)
    graph, targets = cache.batch(range(4), torch.float64)
    config = TrainConfig(stress_weight=1.0)
    assert torch.isfinite(batch_loss(potential, graph, targets, config))


def test_several_files_and_an_ase_db(tmp_path, bulk_frames):
    write(tmp_path / "a.extxyz", bulk_frames[:3])
    db = connect(tmp_path / "b.db")
    for k, atoms in enumerate([cuni(30), cuni(31)]):  # labels as stored calculator results
        atoms.calc = EMT()
        atoms.get_forces()
        atoms.get_stress()
        db.write(atoms, config_type="md" if k else "bulk")
    samples = read_samples([tmp_path / "a.extxyz", str(tmp_path / "b.db")])
    assert [s.source.rsplit("/", 1)[-1] for s in samples] == [
        "a.extxyz:0", "a.extxyz:1", "a.extxyz:2", "b.db:0", "b.db:1"]
    assert [s.config_type for s in samples[3:]] == ["bulk", "md"]
    reference = cuni(31)
    reference.calc = EMT()
    assert samples[4].energy == pytest.approx(reference.get_potential_energy())
    np.testing.assert_allclose(samples[4].forces, reference.get_forces())
    assert samples[4].stress.shape == (3, 3)
    config = TrainConfig(data=[str(tmp_path / "a.extxyz"), str(tmp_path / "b.db")],
                         valid_fraction=0.4, test_fraction=0.0)
    splits, _ = _load_splits(config)
    assert len(splits["train"]) + len(splits["valid"]) == 5


# --- label checks ---------------------------------------------------------------------------


def test_nan_force_names_file_index_and_key(tmp_path, bulk_frames):
    bulk_frames[1].arrays["REF_forces"][3, 1] = np.nan
    write(tmp_path / "data.xyz", bulk_frames)
    with pytest.raises(DataError, match=r"data.xyz:1: REF_forces has a non-finite value at "
                                        r"atom 3"):
        read_samples(tmp_path / "data.xyz")


@pytest.mark.parametrize("key, value, message", [
    ("REF_stress", np.ones(4), r"REF_stress has shape \(4,\), expected 6 \(Voigt\), 9 or 3x3"),
    ("REF_virials", np.ones(5), r"REF_virials has shape \(5,\)"),
    ("REF_energy", np.ones(2), r"REF_energy has shape \(2,\), expected a single number"),
    ("REF_energy", np.inf, r"REF_energy is not finite"),
    ("REF_stress", np.array([0, 0, np.nan, 0, 0, 0]), r"REF_stress has a non-finite value"),
])
def test_bad_labels_name_file_index_and_key(tmp_path, bulk_frames, key, value, message):
    bulk_frames[2].info[key] = value
    write(tmp_path / "data.xyz", bulk_frames[:3])
    with pytest.raises(DataError, match=r"data.xyz:2: " + message):
        read_samples(tmp_path / "data.xyz")


def test_wrong_force_shape_and_bad_geometry(tmp_path, bulk_frames):
    bad_forces = bulk_frames[0].copy()
    bad_forces.new_array("REF_forces2", np.zeros((4, 2)))
    write(tmp_path / "shape.xyz", [bad_forces])
    with pytest.raises(DataError, match=r"shape.xyz:0: REF_forces2 has shape \(4, 2\)"):
        read_samples(tmp_path / "shape.xyz", {"forces": "REF_forces2"})
    nan_position = bulk_frames[1].copy()
    nan_position.positions[2, 0] = np.nan
    flat_cell = bulk_frames[2].copy()
    flat_cell.cell[2] = [0.0, 0.0, 0.0]
    write(tmp_path / "geometry.xyz", [bulk_frames[0], nan_position, flat_cell])
    with pytest.raises(DataError, match=r"geometry.xyz:1: positions have a non-finite value "
                                        r"at atom 2"):
        read_samples(tmp_path / "geometry.xyz")
    report = check_data(tmp_path / "geometry.xyz")
    assert report.errors[0].endswith("positions have a non-finite value at atom 2")
    assert "geometry.xyz:2:" in report.errors[1] and "degenerate" in report.errors[1]


# --- config-type weights and per-type metrics ---------------------------------------------


def weighted_samples(tmp_path):
    frames = [emt_frame(cuni(40 + k), config_type=kind)
              for k, kind in enumerate(["bulk", "bulk", "md", "md", "rattled"])]
    frames[2].arrays.pop("REF_forces")  # an md frame without forces
    write(tmp_path / "w.extxyz", frames)
    samples = read_samples(tmp_path / "w.extxyz", require_forces=False)
    apply_config_type_weights(samples, {"md": 2.0, "rattled": 0.5})
    return samples


def test_config_type_weights_give_a_weighted_mean(tmp_path):
    samples = weighted_samples(tmp_path)
    assert [s.weight for s in samples] == [1.0, 1.0, 2.0, 2.0, 0.5]
    potential = make_potential().double()
    cache = GraphCache(samples, potential.cutoff, potential.species)
    graph, targets = cache.batch(range(len(samples)), torch.float64)
    config = TrainConfig(energy_weight=3.0, forces_weight=2.0, stress_weight=5.0)
    loss = _value(batch_loss(potential, graph, targets, config))
    # by hand: each frame's squared errors counted with its weight
    out = potential(graph, forces=True, stress=True)
    n = [len(s.atoms) for s in samples]
    energy = out[keys.ENERGY].detach().numpy()
    forces = np.split(out[keys.FORCES].detach().numpy(), np.cumsum(n)[:-1])
    stress = out[keys.STRESS].detach().numpy()
    w = np.array([s.weight for s in samples])
    e2 = np.array([((energy[k] - s.energy) / n[k]) ** 2 for k, s in enumerate(samples)])
    f2 = [(np.sum((forces[k] - s.forces) ** 2), 3 * n[k], w[k])
          for k, s in enumerate(samples) if s.forces is not None]
    s2 = np.array([np.sum((stress[k] - s.stress) ** 2) for k, s in enumerate(samples)])
    expected = (3.0 * np.sum(w * e2) / np.sum(w)
                + 2.0 * sum(x * c for x, _, c in f2) / sum(m * c for _, m, c in f2)
                + 5.0 * np.sum(w * s2) / (9 * np.sum(w)))
    assert loss == pytest.approx(expected, rel=1e-10)
    unweighted = (3.0 * e2.mean() + 2.0 * sum(x for x, _, _ in f2) / sum(m for _, m, _ in f2)
                  + 5.0 * s2.mean() / 9)
    assert abs(loss - unweighted) > 1e-6 * unweighted
    # the validation loss pools the same weighted means over the whole set
    metrics = error_metrics(potential, cache, batch_size=2)
    assert dataset_loss(metrics, config) == pytest.approx(loss, rel=1e-10)
    # weight 2 counts a frame twice
    doubled = [*samples, samples[2], samples[3]]
    for sample in doubled:
        sample.weight = 1.0
    graph2, targets2 = GraphCache(doubled, potential.cutoff, potential.species).batch(
        range(len(doubled)), torch.float64)
    apply_config_type_weights(samples, {"md": 2.0, "rattled": 1.0})
    doubled_loss = _value(batch_loss(potential, graph2, targets2, config))
    graph3, targets3 = cache.batch(range(len(samples)), torch.float64)
    assert _value(batch_loss(potential, graph3, targets3, config)) == pytest.approx(
        doubled_loss, rel=1e-10)


def test_per_config_type_metrics_and_table(tmp_path):
    samples = weighted_samples(tmp_path)
    potential = make_potential().double()
    metrics = error_metrics(potential, GraphCache(samples, potential.cutoff, potential.species))
    by_type = metrics["by_config_type"]
    assert list(by_type) == ["bulk", "md", "rattled"]
    assert [v["n_structures"] for v in by_type.values()] == [2, 2, 1]
    for kind in by_type.values():
        assert {"energy_mae", "forces_mae", "stress_mae"} <= set(kind)
    assert by_type["md"]["forces_mae"] > 0  # from the one md frame with forces
    table = format_metrics(metrics, "valid")
    pooled_end = table.index("config type")
    assert "energy" in table[:pooled_end] and "forces_mae" not in table
    for kind in ("bulk", "md", "rattled"):
        assert f"\n  {kind}" in table[pooled_end:]


# --- check-data ------------------------------------------------------------------------


def test_check_data_table_outliers_and_duplicates(tmp_path, bulk_frames):
    frames = [emt_frame(cuni(50 + k, rattle=0.03), config_type="bulk") for k in range(6)]
    frames[1].arrays["REF_forces"][2] = [30.0, 0.0, 0.0]  # a 30 eV/A force
    frames[4].info["REF_energy"] += 2.0 * len(frames[4])  # 2 eV/atom off
    frames.append(frames[3].copy())  # a duplicate
    frames.append(emt_frame(slab(), config_type="slab"))
    frames.append(emt_frame(molecule(), forces=False))
    frames[-1].info["REF_virials"] = np.zeros(9)  # ignored on a molecule
    write(tmp_path / "data.xyz", frames)
    report = check_data(tmp_path / "data.xyz")
    assert report.ok and report.n_frames == 9
    assert report.coverage == {"energy": 9, "forces": 8, "stress": 7, "virials": 1}
    assert report.config_types == {"bulk": 7, "slab": 1, "Default": 1}
    outliers = {o.source.rsplit("/", 1)[-1]: o.reason for o in report.outliers}
    assert set(outliers) == {"data.xyz:1", "data.xyz:4"}
    assert "|F| = 30.0 eV/A" in outliers["data.xyz:1"]
    assert re.search(r"energy per atom \+(1\.9|2\.0)\d* eV/atom", outliers["data.xyz:4"])
    assert [(a.rsplit("/", 1)[-1], b.rsplit("/", 1)[-1]) for a, b in report.duplicates] == [
        ("data.xyz:6", "data.xyz:3")]
    table = format_report(report)
    for text in ("frames               9", "per frame: min 2, max 8",
                 "energy 9, forces 8, stress 7, virials 1",
                 "3-D bulk 7, 2-D slab 1, 0-D molecule 1", "Default 1, bulk 7, slab 1",
                 "max |F| 30.000 eV/A", "stress ignored       1", "suspected outliers   2",
                 "data.xyz:6: same as", "errors               0"):
        assert text in table, text
    assert "Cu" in table and "Ni" in table and "eV/atom" in table


def test_check_data_collects_all_errors_and_cli_exit_codes(tmp_path, bulk_frames, capsys):
    write(tmp_path / "clean.xyz", bulk_frames[:3])
    assert main(["check-data", str(tmp_path / "clean.xyz")]) == 0
    assert "errors               0" in capsys.readouterr().out
    bulk_frames[0].arrays["REF_forces"][1, 0] = np.inf
    bulk_frames[2].info["REF_energy"] = np.nan
    bulk_frames[3].info["REF_stress"] = np.ones(7)
    write(tmp_path / "bad.xyz", bulk_frames[:4])
    report = check_data([tmp_path / "bad.xyz", tmp_path / "missing.xyz"])
    assert len(report.errors) == 4
    assert "bad.xyz:0: REF_forces has a non-finite value at atom 1" in report.errors[0]
    assert "bad.xyz:2: REF_energy is not finite" in report.errors[1]
    assert "bad.xyz:3: REF_stress has shape (7,)" in report.errors[2]
    assert "missing.xyz does not exist" in report.errors[3]
    assert main(["check-data", str(tmp_path / "bad.xyz"), "--energy-key", "REF_energy"]) == 1
    out = capsys.readouterr().out
    assert "errors               3" in out and "bad.xyz:3: REF_stress" in out
    # training stops with all of them before building a potential
    with pytest.raises(DataError, match=r"3 problem\(s\)(.|\n)*bad.xyz:2: REF_energy"):
        train(TrainConfig(data=str(tmp_path / "bad.xyz"), output=str(tmp_path / "run")))


def test_check_data_custom_keys_from_cli(tmp_path, capsys):
    frame = emt_frame(cuni(60))
    frame.info["E"] = frame.info.pop("REF_energy")
    frame.arrays["F"] = frame.arrays.pop("REF_forces")
    write(tmp_path / "k.xyz", [frame])
    assert main(["check-data", str(tmp_path / "k.xyz"), "--energy-key", "E",
                 "--forces-key", "F"]) == 0
    assert "energy 1, forces 1, stress 1, virials 0" in capsys.readouterr().out
