"""Data reading, statistics and the training loop (tiny runs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write

from ase_mpnn import UnknownElementError, load_model
from ase_mpnn.cli import main
from ase_mpnn.modelfile import read_manifest
from ase_mpnn.training import TrainConfig, train
from ase_mpnn.training.emt_data import emt_dataset
from ase_mpnn.training.samples import (
    DataError,
    GraphCache,
    Sample,
    fit_reference_energies,
    read_samples,
)

from .conftest import cu_fcc

TINY = {"n_features": 8, "n_interactions": 2, "n_basis": 8}


@pytest.fixture(scope="module")
def emt_file(tmp_path_factory):
    return emt_dataset(["Cu", "Ni"], 24, tmp_path_factory.mktemp("data") / "cuni.extxyz",
                       seed=1, progress=False)


def test_emt_data_has_reference_labels(emt_file):
    samples = read_samples(emt_file)
    assert len(samples) == 24
    assert all(s.forces.shape == (len(s.atoms), 3) for s in samples)
    assert any(s.stress is not None for s in samples)
    assert {x for s in samples for x in s.atoms.get_chemical_symbols()} == {"Cu", "Ni"}


def test_e0_fit_recovers_per_element_constants():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(30):
        n_cu, n_ni = rng.integers(0, 8, size=2) + 1
        atoms = Atoms(["Cu"] * n_cu + ["Ni"] * n_ni)
        energy = -3.25 * n_cu - 5.5 * n_ni + rng.normal(scale=1e-3)
        samples.append(Sample(atoms, energy, None, None, "synthetic"))
    e0 = fit_reference_energies(samples, ["Cu", "Ni"])
    assert e0["Cu"] == pytest.approx(-3.25, abs=2e-3) and e0["Ni"] == pytest.approx(-5.5, abs=2e-3)


def _frame(**arrays):
    atoms = cu_fcc()
    atoms.info["REF_energy"] = -1.0
    for name, value in arrays.items():
        atoms.arrays[name] = value
    return atoms


def test_missing_forces_names_file_frame_and_key(tmp_path):
    path = tmp_path / "bad.extxyz"
    write(path, [_frame(REF_forces=np.zeros((4, 3))), _frame()])
    with pytest.raises(DataError, match=r"bad.extxyz:1: no forces .*'REF_forces'"):
        read_samples(path)


def test_wrong_force_shape(tmp_path):
    path = tmp_path / "bad.extxyz"
    write(path, [_frame(REF_forces=np.zeros((4, 2)))])
    with pytest.raises(DataError, match=r"shape \(4, 2\), expected \(4, 3\)"):
        read_samples(path)


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_samples(tmp_path / "none.extxyz")
    (tmp_path / "junk.extxyz").write_text("this is not\nan xyz file\n")
    with pytest.raises(DataError, match="cannot read"):
        read_samples(tmp_path / "junk.extxyz")


def test_unknown_element_names_the_frame(emt_file):
    samples = read_samples(emt_file)
    with pytest.raises(UnknownElementError, match=r"cuni.extxyz:0: .*Ni"):
        GraphCache(samples, 4.0, ["Cu"])


def test_loss_goes_down_on_a_tiny_dataset(emt_file, tmp_path):
    config = TrainConfig(data=str(emt_file), valid_fraction=0.25, test_fraction=0.0,
                         hyperparameters=TINY, cutoff=4.0, epochs=25, batch_size=4, lr=5e-3,
                         output=str(tmp_path / "run"), progress=False)
    summary = train(config)
    history = np.loadtxt(tmp_path / "run" / "metrics.csv", delimiter=",", skiprows=1)
    train_loss = history[:, 1]
    assert train_loss[-1] < 0.2 * train_loss[0]
    assert summary["epochs"] == 25
    for name in ("best.mpnn", "checkpoint.pt", "learning_curve.png"):
        assert (tmp_path / "run" / name).exists()


def test_resume_equals_straight_run(emt_file, tmp_path):
    common = dict(data=str(emt_file), hyperparameters=TINY, cutoff=4.0, batch_size=4,
                  dtype="float64", progress=False, ema_decay=0.9)
    train(TrainConfig(**common, epochs=4, output=str(tmp_path / "straight")))
    train(TrainConfig(**common, epochs=2, output=str(tmp_path / "split")))
    train(TrainConfig(**common, epochs=4, output=str(tmp_path / "split"), resume=True))
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    resumed = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert resumed["epoch"] == straight["epoch"] == 4
    for part in ("model", "ema"):
        for key, value in straight[part].items():
            torch.testing.assert_close(resumed[part][key], value, rtol=0, atol=1e-6)
    a = [row["valid_loss"] for row in straight["history"]]
    b = [row["valid_loss"] for row in resumed["history"]]
    assert np.allclose(a, b, rtol=1e-6)


def test_valid_loss_is_the_training_loss_with_stress(emt_file, tmp_path):
    """valid_loss = w_E * rmse_E^2 + w_F * rmse_F^2 + w_S * rmse_S^2 of the row's own valid_*
    columns: with stress_weight > 0 the stress term is in it (it drives the scheduler, early
    stopping and best.mpnn)."""
    common = dict(data=str(emt_file), valid_fraction=0.25, test_fraction=0.0,
                  hyperparameters=TINY, cutoff=4.0, epochs=2, batch_size=4, energy_weight=100.0,
                  forces_weight=1.0, progress=False)
    for stress_weight in (0.0, 100.0):
        out = tmp_path / f"stress_weight_{stress_weight:g}"
        summary = train(TrainConfig(**common, stress_weight=stress_weight, output=str(out)))
        history = torch.load(out / "checkpoint.pt", weights_only=True)["history"]
        assert len(history) == 2
        for row in history:
            stress_term = stress_weight * row["valid_stress_rmse"] ** 2
            expected = (100.0 * row["valid_energy_rmse"] ** 2 + row["valid_forces_rmse"] ** 2
                        + stress_term)
            assert row["valid_loss"] == pytest.approx(expected, rel=1e-12)
            if stress_weight:
                assert stress_term > 1e-3 * row["valid_loss"]
        assert summary["best_valid_loss"] == min(row["valid_loss"] for row in history)
        assert "stress_weight" in summary["valid_loss_definition"]


def test_old_option_name_atomic_energies_means_reference_energies():
    e0 = {"Cu": -3.25, "Ni": -5.5}
    assert TrainConfig.from_dict({"atomic_energies": e0}).reference_energies == e0
    assert TrainConfig.from_dict({"reference_energies": e0}).reference_energies == e0
    with pytest.raises(ValueError, match="old name"):
        TrainConfig.from_dict({"atomic_energies": e0, "reference_energies": {"Cu": 0.0}})


def test_cli_train_then_eval(emt_file, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(f"data: {emt_file}\ncutoff: 4.0\nbatch_size: 6\nprogress: false\n"
                      "hyperparameters: {n_features: 8, n_interactions: 1, n_basis: 8}\n")
    assert main(["train", str(config), "--epochs", "2", "--output", str(tmp_path / "cli")]) == 0
    model = tmp_path / "cli" / "best.mpnn"
    assert load_model(model).species == ["Ni", "Cu"]  # by atomic number
    assert main(["eval", str(model), str(emt_file), "--out", str(tmp_path / "eval")]) == 0
    assert "forces" in capsys.readouterr().out
    assert (tmp_path / "eval" / "predictions.extxyz").exists()
    assert (tmp_path / "eval" / "parity_forces.png").exists()


def test_unknown_option_is_listed():
    with pytest.raises(ValueError, match="unknown training option.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def _stage_rows(out):
    return torch.load(out / "checkpoint.pt", weights_only=True)["history"]


def test_second_stage_trains_with_its_weights_and_lr(emt_file, tmp_path):
    """stage_two_fraction 0.5 of 4 epochs: epochs 3-4 use lr stage_two_lr and validate with
    the second stage's weights; best.mpnn is a second-stage model."""
    out = tmp_path / "run"
    summary = train(TrainConfig(
        data=str(emt_file), valid_fraction=0.25, test_fraction=0.0, hyperparameters=TINY,
        cutoff=4.0, epochs=4, batch_size=4, lr=5e-3, energy_weight=1.0, forces_weight=10.0,
        stage_two_fraction=0.5, stage_two_energy_weight=50.0, stage_two_lr=1e-4,
        output=str(out), progress=False))
    rows = _stage_rows(out)
    assert [row["stage"] for row in rows] == [1, 1, 2, 2]
    assert [row["lr"] for row in rows] == [5e-3, 5e-3, 1e-4, 1e-4]
    for row in rows:
        energy_weight = 50.0 if row["stage"] == 2 else 1.0
        expected = (energy_weight * row["valid_energy_rmse"] ** 2
                    + 10.0 * row["valid_forces_rmse"] ** 2)
        assert row["valid_loss"] == pytest.approx(expected, rel=1e-12)
    assert summary["best_valid_loss"] == min(row["valid_loss"] for row in rows[2:])
    assert read_manifest(out / "best.mpnn")["training"]["epoch"] in (3, 4)


def test_second_stage_survives_resume(emt_file, tmp_path):
    common = dict(data=str(emt_file), hyperparameters=TINY, cutoff=4.0, batch_size=4,
                  dtype="float64", progress=False, ema_decay=0.9, stage_two_fraction=0.5,
                  stage_two_lr=1e-3)
    train(TrainConfig(**common, epochs=4, output=str(tmp_path / "straight")))
    train(TrainConfig(**common, epochs=3, output=str(tmp_path / "split")))  # stage 2 at 2
    train(TrainConfig(**common, epochs=4, output=str(tmp_path / "split"), resume=True))
    straight, resumed = _stage_rows(tmp_path / "straight"), _stage_rows(tmp_path / "split")
    assert [r["stage"] for r in resumed] == [r["stage"] for r in straight] == [1, 1, 2, 2]
    assert np.allclose([r["valid_loss"] for r in resumed],
                       [r["valid_loss"] for r in straight], rtol=1e-6)


def test_early_stopping_starts_the_second_stage(emt_file, tmp_path):
    """With lr 0 the validation loss cannot go down (beyond rounding noise): the first
    stage ends by early stopping, long before its 18 epochs, and the run goes on in the
    second stage instead of stopping."""
    out = tmp_path / "run"
    train(TrainConfig(data=str(emt_file), hyperparameters=TINY, cutoff=4.0, batch_size=4,
                      epochs=20, lr=0.0, early_stopping_patience=2, stage_two_fraction=0.1,
                      output=str(out), progress=False))
    rows = _stage_rows(out)
    stages = [row["stage"] for row in rows]
    first_of_stage_two = stages.index(2)
    assert 3 <= first_of_stage_two < 18
    assert stages == [1] * first_of_stage_two + [2] * (len(stages) - first_of_stage_two)
    assert rows[first_of_stage_two]["lr"] == 1e-3  # stage_two_lr's default
    with pytest.raises(ValueError, match="stage_two_fraction"):
        TrainConfig(stage_two_fraction=1.0)


def _cosine(first, final, progress):
    return first * (final + (1 - final) * 0.5 * (1 + np.cos(np.pi * progress)))


def test_cosine_schedule_anneals_each_stage(emt_file, tmp_path):
    """scheduler "cosine", 4 epochs, second stage for the last half: each row's lr (that of
    the epoch's last step, after 12 of the 16 training frames) follows half a cosine from lr
    to lr_final_factor x lr over epochs 1-2, then from stage_two_lr over epochs 3-4; the
    plateau rule never changes it."""
    from ase.io import read

    frames = read(emt_file, ":")
    write(tmp_path / "train.extxyz", frames[:16])
    write(tmp_path / "valid.extxyz", frames[16:])
    out = tmp_path / "run"
    train(TrainConfig(
        data=str(tmp_path / "train.extxyz"), valid_data=str(tmp_path / "valid.extxyz"),
        test_fraction=0.0, hyperparameters=TINY, cutoff=4.0, epochs=4, batch_size=4, lr=5e-3,
        scheduler="cosine", lr_final_factor=0.1, scheduler_patience=0, scheduler_factor=0.01,
        stage_two_fraction=0.5, stage_two_energy_weight=None, stage_two_lr=1e-3,
        output=str(out), progress=False))
    rows = _stage_rows(out)
    assert [row["stage"] for row in rows] == [1, 1, 2, 2]
    spent = [(epoch + 12 / 16) / 4 for epoch in range(4)]
    expected = [_cosine(5e-3, 0.1, spent[0] / 0.5), _cosine(5e-3, 0.1, spent[1] / 0.5),
                _cosine(1e-3, 0.1, (spent[2] - 0.5) / 0.5),
                _cosine(1e-3, 0.1, (spent[3] - 0.5) / 0.5)]
    assert [row["lr"] for row in rows] == pytest.approx(expected, rel=1e-12)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["stage_start"] == 0.5


def test_budget_spent_is_the_larger_of_epochs_and_minutes(monkeypatch):
    """The cosine schedule's clock: epochs done / epochs or this session's minutes /
    max_minutes, whichever is further along, at most 1."""
    from ase_mpnn.training import trainer as trainer_module

    trainer = trainer_module.Trainer.__new__(trainer_module.Trainer)
    trainer.config = TrainConfig(epochs=10, max_minutes=2.0)
    trainer.state = trainer_module.RunState(epoch=3)
    trainer.session_start = 100.0
    for seconds, expected in ((30.0, 0.35), (90.0, 0.75), (500.0, 1.0)):
        monkeypatch.setattr(trainer_module.time, "perf_counter", lambda s=seconds: 100.0 + s)
        assert trainer.budget_spent(0.5) == pytest.approx(expected, rel=1e-12)


def test_bad_schedule_options_are_named():
    with pytest.raises(ValueError, match="scheduler = 'linear'.*plateau"):
        TrainConfig(scheduler="linear")
    with pytest.raises(ValueError, match="lr_final_factor = 2"):
        TrainConfig(lr_final_factor=2)
