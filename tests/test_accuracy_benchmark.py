"""benchmarks/accuracy.py: its EMT data set, its verdicts, its mace-torch plumbing, and an
end-to-end run of ours alone (mace-torch absent, so nothing is judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _accuracy_data as data  # noqa: E402  (benchmarks/_accuracy_data.py)
import accuracy  # noqa: E402  (benchmarks/accuracy.py)

TRAIN_TYPES = {"IsolatedAtom", "bulk", "strained", "vacancy", "md", "slab"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    return data.make_data(tmp_path_factory.mktemp("data"), seed=3, n_train=14, n_valid=4,
                          n_test=12)


def check_labels(atoms) -> None:
    """mace-torch's keys with the right shapes; stress exactly on 3-D periodic frames."""
    assert isinstance(atoms.info["REF_energy"], float)
    assert atoms.arrays["REF_forces"].shape == (len(atoms), 3)
    assert ("REF_stress" in atoms.info) == bool(atoms.pbc.all())
    if atoms.pbc.all():
        assert np.shape(atoms.info["REF_stress"]) == (6,)
    if atoms.info["config_type"] == "slab":
        assert tuple(atoms.pbc) == (True, True, False)
        vacuum = atoms.cell[2, 2] - np.ptp(atoms.positions[:, 2])
        assert 2 * 6.0 - 1.0 < vacuum < 2 * 6.0 + 1.0  # 6 A each side, give or take the rattle


def test_data_files_have_mace_torch_keys_pbc_and_config_types(tiny_data):
    frames = {name: read(path, ":") for name, path in tiny_data.items()}
    assert [len(frames[n]) for n in ("train", "valid", "test")] == [14 + 2, 4, 12]
    for atoms in frames["train"] + frames["valid"] + frames["test"]:
        check_labels(atoms)
        assert 1 <= len(atoms) <= 64
    types = {a.info["config_type"] for a in frames["train"] + frames["valid"]}
    assert types <= TRAIN_TYPES and {"IsolatedAtom", "slab", "md", "strained"} <= types
    isolated = [a for a in frames["train"] if a.info["config_type"] == "IsolatedAtom"]
    assert sorted(a.get_chemical_symbols()[0] for a in isolated) == ["Cu", "Ni"]
    assert all(len(a) == 1 and not a.pbc.any() for a in isolated)
    assert data.isolated_atom_energies(tiny_data["train"]).keys() == {"Cu", "Ni"}
    assert not data.isolated_atom_energies(tiny_data["valid"])
    test_types = {a.info["config_type"] for a in frames["test"]}
    assert test_types == {"bulk", "strained", "vacancy", "md", "slab"}
    for atoms in frames["test"]:  # outside the training draw
        nickel = float(np.mean(atoms.symbols == "Ni"))
        if atoms.info["config_type"] == "bulk":
            assert nickel <= 0.15 or nickel >= 0.85
        if atoms.info["config_type"] == "vacancy":
            assert len(atoms) == 30  # a divacancy in a 32-atom cell


def test_data_is_cached_by_recipe(tmp_path):
    first = data.make_data(tmp_path, seed=1, n_train=4, n_valid=2, n_test=5,
                           isolated_atoms=False)
    stamp = {p: p.stat().st_mtime_ns for p in first.values()}
    data.make_data(tmp_path, seed=1, n_train=4, n_valid=2, n_test=5, isolated_atoms=False)
    assert {p: p.stat().st_mtime_ns for p in first.values()} == stamp
    assert not data.isolated_atom_energies(first["train"])
    energies = [a.info["REF_energy"] for a in read(first["train"], ":")]
    data.make_data(tmp_path, seed=2, n_train=4, n_valid=2, n_test=5, isolated_atoms=False)
    assert [a.info["REF_energy"] for a in read(first["train"], ":")] != energies
    recipe = json.loads((tmp_path / "recipe.json").read_text())
    assert recipe["seed"] == 2 and recipe["hash"]


MACE = {"energy_mae": 0.010, "forces_mae": 0.100, "stress_mae": 0.001}


def test_targets_judged_against_mace_torch():
    good = {"mace-torch": MACE,
            "ours-mace": {"energy_mae": 0.010, "forces_mae": 0.080, "stress_mae": 0.002},
            "ours-schnet": {"energy_mae": 0.030, "forces_mae": 0.120}}
    assert accuracy.judge(good) == [] and accuracy.judged(good) == 3
    assert accuracy.ratios(good)["ours-mace"]["forces_mae"] == pytest.approx(0.8)
    bad = {"mace-torch": MACE,
           "ours-mace": {"energy_mae": 0.0101, "forces_mae": 0.0801},
           "ours-schnet": {"energy_mae": 0.001, "forces_mae": 0.1201}}
    missed = accuracy.judge(bad)
    assert len(missed) == 3
    assert any("ours-mace: test forces_mae is 0.801x" in m for m in missed)
    assert any("ours-mace: test energy_mae is 1.010x" in m for m in missed)
    assert any("ours-schnet: test forces_mae is 1.201x" in m for m in missed)
    nan = {"mace-torch": MACE, "ours-schnet": {"forces_mae": float("nan")}}
    assert len(accuracy.judge(nan)) == 1
    unjudged = {"mace-torch": None, "ours-mace": bad["ours-mace"]}
    assert accuracy.judge(unjudged) == [] and accuracy.judged(unjudged) == 0
    assert accuracy.exit_status([], {}) == 0
    assert accuracy.exit_status(["x"], {}) == 1
    assert accuracy.exit_status(["x"], {"mace-torch": "no side environment"}) == 2


def test_mace_torch_predictions_scored_like_error_metrics(tiny_data, tmp_path):
    refs = read(tiny_data["test"], ":")
    for atoms in refs:
        atoms.info["MACE_energy"] = atoms.info["REF_energy"] + 0.01 * len(atoms)
        atoms.arrays["MACE_forces"] = atoms.arrays["REF_forces"] - 0.02
        atoms.info["MACE_stress"] = np.full((3, 3), 0.003)  # slabs: predicted, not scored
        if "REF_stress" in atoms.info:
            from ase.stress import voigt_6_to_full_3x3_stress

            full = voigt_6_to_full_3x3_stress(atoms.info["REF_stress"])
            atoms.info["MACE_stress"] = full + 0.003
    write(tmp_path / "pred.xyz", refs, format="extxyz")
    metrics = accuracy.metrics_from_xyz(tiny_data["test"], tmp_path / "pred.xyz")
    assert metrics["n_structures"] == 12
    assert metrics["energy_mae"] == pytest.approx(0.01)
    assert metrics["forces_mae"] == pytest.approx(0.02)
    assert metrics["stress_mae"] == pytest.approx(0.003)


LOG = """\
2026-11-30 09:55:29.117 INFO: Started training, reporting errors on validation set
2026-11-30 09:55:30.285 INFO: Initial: head: Default, loss=14.57260609, MAE_E_per_atom= 3876.70 \
meV, MAE_F=  545.80 meV / A, MAE_stress=   12.07 meV / A^3
2026-11-30 09:55:36.459 INFO: Epoch 0: head: Default, loss=14.29150200, MAE_E_per_atom= 3865.71 \
meV, MAE_F=  538.80 meV / A, MAE_stress=   11.96 meV / A^3
2026-11-30 09:56:36.459 INFO: Epoch 1: head: Default, loss=0.2, MAE_E_per_atom=   12.50 meV, \
MAE_F=   98.00 meV / A, MAE_stress=    1.50 meV / A^3
"""


def test_mace_torch_log_gives_epochs_and_clock():
    start, rows = accuracy.parse_mace_log(LOG)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[1]["time"] - start == pytest.approx(66.174)  # from the "Initial:" line
    assert rows[1]["forces_mae"] == pytest.approx(0.098)
    assert rows[1]["energy_mae"] == pytest.approx(0.0125)
    assert rows[1]["stress_mae"] == pytest.approx(0.0015)
    assert accuracy.parse_mace_log("no training yet") == (None, [])
    started = accuracy.parse_mace_log(LOG.splitlines()[0])[0]  # before "Initial:" is logged
    assert start - started == pytest.approx(1.168)


@pytest.mark.parametrize("name", sorted(accuracy.RECIPES))
def test_recipes_are_training_configs(name):
    from ase_mpnn.training import TrainConfig

    config = TrainConfig.from_dict({**accuracy.RECIPES[name], "data": "train.xyz"})
    assert config.dtype == "float32" and config.forces_weight > config.energy_weight


def test_mace_torch_command(tiny_data, tmp_path):
    command = accuracy.mace_command(Path("/side/bin"), tiny_data, tmp_path, 0,
                                    accuracy._mace_e0s(tiny_data))
    assert command[0] == "/side/bin/mace_run_train"
    for option in ("--loss=stress", "--num_channels=32", "--max_L=0", "--correlation=3",
                   "--num_interactions=2", "--r_max=5.0", "--default_dtype=float32",
                   "--energy_key=REF_energy", "--forces_key=REF_forces",
                   "--stress_key=REF_stress", "--ema", "--save_cpu", "--eval_interval=1"):
        assert option in command, option
    assert not any(c.startswith("--E0s") for c in command)  # its IsolatedAtom frames
    restart = accuracy.mace_command(Path("/b"), tiny_data, tmp_path, 0, "average",
                                    {"restart_latest": True, "max_num_epochs": 7})
    assert "--E0s=average" in restart and "--restart_latest" in restart
    assert "--max_num_epochs=7" in restart and "--max_num_epochs=100000" not in restart


@pytest.mark.slow
def test_end_to_end_ours_alone(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "accuracy.py"), "--minutes", "0.05",
               "--models", "ours-schnet", "--threads", "1", "--out", str(tmp_path),
               "--n-train", "8", "--n-valid", "3", "--n-test", "5"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert accuracy.HEADER in done.stdout
    assert "ours-schnet" in done.stdout and "targets unjudged" in done.stdout
    record = json.loads((tmp_path / "results.json").read_text())
    result = record["results"]["ours-schnet"]
    assert result["epochs"] >= 1 and result["minutes"] > 0
    assert set(accuracy.QUANTITIES) <= set(result["test"])
    assert result["curve"] and record["missed"] == [] and record["failed"] == {}
    assert record["recipes"]["ours-schnet"]["architecture"] == "SchNet"
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
