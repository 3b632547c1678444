"""Training a committee: members apart, one split, resumable, one calibrated file."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from ase_mpnn import Committee, load_model
from ase_mpnn.cli import main
from ase_mpnn.training import TrainConfig, train
from ase_mpnn.training.committee import COMMITTEE_FILE, member_config, train_committee
from ase_mpnn.training.emt_data import emt_dataset
from ase_mpnn.training.loop import _load_splits

TINY = {"n_features": 8, "n_interactions": 1, "n_basis": 8}


@pytest.fixture(scope="module")
def emt_file(tmp_path_factory):
    return emt_dataset(["Cu", "Ni"], 30, tmp_path_factory.mktemp("data") / "cuni.extxyz",
                       seed=2, progress=False)


def _config(emt_file, out, **options) -> TrainConfig:
    return TrainConfig(data=str(emt_file), cutoff=4.0, hyperparameters=TINY, epochs=2,
                       batch_size=6, valid_fraction=0.2, test_fraction=0.2, output=str(out),
                       progress=False, **options)


def test_members_differ_in_seed_and_bootstrap_but_share_one_split(emt_file, tmp_path):
    config = _config(emt_file, tmp_path, seed=3)
    members = [member_config(config, k, bootstrap=True) for k in range(2)]
    assert [m.seed for m in members] == [3, 4] and {m.split_seed for m in members} == {3}
    splits = [_load_splits(m)[0] for m in members]
    for name in ("valid", "test"):
        assert [s.source for s in splits[0][name]] == [s.source for s in splits[1][name]]
    train_sets = [sorted(s.source for s in split["train"]) for split in splits]
    assert train_sets[0] != train_sets[1]  # two bootstrap samples
    assert len(set(train_sets[0])) < len(train_sets[0])  # drawn with replacement
    held_out = {s.source for s in splits[0]["valid"] + splits[0]["test"]}
    assert not held_out & set(train_sets[0])


def test_committee_training_writes_a_calibrated_committee_and_resumes(emt_file, tmp_path):
    calls = []

    def counting_train(config):
        calls.append(config.seed)
        return train(config)

    config = _config(emt_file, tmp_path / "c")
    summary = train_committee(config, 2, bootstrap=True, train_member=counting_train)
    assert calls == [0, 1]
    committee = load_model(tmp_path / "c" / COMMITTEE_FILE)
    assert isinstance(committee, Committee) and len(committee.members) == 2
    weights = [next(m.parameters()).detach() for m in committee.members]
    assert not torch.equal(*weights)  # seeds 0 and 1 start apart
    assert committee.calibration["forces"] == pytest.approx(summary["calibration"]["forces"])
    assert np.isfinite(summary["calibration"]["forces"]) and summary["calibration"]["forces"] > 0
    assert summary["test"]["forces_mae"] > 0
    assert "spearman" in json.dumps(summary["test_calibration"]).lower()
    saved = json.loads((tmp_path / "c" / "committee_summary.json").read_text())
    assert saved["members"] == 2

    # a second run with resume keeps both finished members and trains nothing
    calls.clear()
    train_committee(dataclasses.replace(config, resume=True), 2, bootstrap=True,
                    train_member=counting_train)
    assert calls == []


def test_committee_size_and_member_inits_are_checked(emt_file, tmp_path):
    with pytest.raises(ValueError, match=">= 2"):
        train_committee(_config(emt_file, tmp_path), 1)
    with pytest.raises(ValueError, match="init_members lists 1 models for 2"):
        train_committee(_config(emt_file, tmp_path), 2, init_members=["a.mpnn"])


def test_cli_trains_a_committee(emt_file, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", "--data", str(emt_file), "--committee", "2", "--epochs", "1",
                 "--output", str(out), "--set", "progress=false", "--set", "cutoff=4.0",
                 "--set", f"hyperparameters={json.dumps(TINY)}"]) == 0
    assert isinstance(load_model(out / COMMITTEE_FILE), Committee)
    assert (out / "member_1" / "best.mpnn").exists()
