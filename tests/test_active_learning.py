"""Active learning (ase_mpnn.training.active): the loop end to end with EMT, the selection
rule, resuming a killed run without repeating reference calls, reference failures, the
convergence stop and config errors. Tiny SchNet committees keep it fast."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read, write

from ase_mpnn.cli import main
from ase_mpnn.training import TrainConfig
from ase_mpnn.training.active import ActiveConfig, learn, select_frames, spread_picks
from ase_mpnn.training.active import loop as active_loop
from ase_mpnn.training.active.files import append_frame, frame_hash, read_frames_repaired
from ase_mpnn.training.committee import train_committee
from ase_mpnn.training.emt_data import emt_dataset

from .al_reference import Killed

TINY = {"n_features": 8, "n_interactions": 1, "n_basis": 8}
COUNTING = "tests.al_reference:CountingEMT"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 2-member committee trained 3 epochs on 20 EMT Cu-Ni frames, its data and a seed
    (32-atom Cu-Ni fcc cell)."""
    root = tmp_path_factory.mktemp("active")
    data = emt_dataset(["Cu", "Ni"], 20, root / "emt.extxyz", seed=0, progress=False)
    config = TrainConfig(data=str(data), epochs=3, cutoff=4.0, hyperparameters=TINY,
                         output=str(root / "start"), progress=False, valid_fraction=0.2,
                         test_fraction=0.0)
    train_committee(config, 2, calibrate=False)
    seed = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    seed.symbols[::3] = "Ni"
    write(root / "seed.extxyz", seed)
    return root


def options(root, tmp_path, **changes) -> dict:
    values = {"committee": str(root / "start" / "committee.mpnn"),
              "data": str(root / "emt.extxyz"), "seed_structures": [str(root / "seed.extxyz")],
              "temperatures_K": [300, 900], "md_steps": 20, "timestep_fs": 2.0,
              "sample_interval": 2, "threshold": 1e-4, "max_new_per_round": 4,
              "min_separation": 2, "rounds": 1, "calibrate": False,
              "finetune": {"epochs": 2, "valid_fraction": 0.2, "test_fraction": 0.0},
              "output": str(tmp_path / "run"), "progress": False}
    values.update(changes)
    return values


def test_two_rounds_with_emt_write_data_committees_report_and_plot(setup, tmp_path):
    merging = Atoms("Cu2", positions=[[0, 0, 0], [0.3, 0, 0]], cell=[8, 8, 8], pbc=True)
    write(tmp_path / "merging.extxyz", merging)
    values = options(setup, tmp_path, rounds=2, test_data=str(setup / "emt.extxyz"),
                     seed_structures=[str(setup / "seed.extxyz"),
                                      {"file": str(tmp_path / "merging.extxyz"),
                                       "temperatures_K": [300]}])
    summary = learn(values)
    out = tmp_path / "run"
    assert summary["stopped"] == "rounds"
    assert [row["round"] for row in summary["rows"]] == [0, 1, 2]
    assert [row["new_frames"] for row in summary["rows"]] == [4, 4, 0]
    assert all(row["blowups"] == 1 for row in summary["rows"])  # reported, round went on
    assert summary["blowups"][0]["name"].startswith("merging.extxyz")
    for row in summary["rows"]:
        assert row["test_forces_mae_meV_per_A"] > 0 and row["explored_frames"] == 20
    for k in range(3):
        assert (out / f"round_{k:03d}" / "committee.mpnn").exists()
    labelled = read(out / "round_001" / "labelled.extxyz", ":")
    assert len(labelled) == 4 and labelled[0].info["config_type"] == "active_round_1"
    assert labelled[0].arrays["REF_forces"].shape == (32, 3)
    assert len(labelled[0].info["REF_stress"]) == 6
    assert (out / "committee.mpnn").exists() and (out / "active_learning.png").stat().st_size
    assert len((out / "report.csv").read_text().splitlines()) == 4
    assert json.loads((out / "report.json").read_text())["rows"] == summary["rows"]


def _explored(stds_by_trajectory: dict[str, list[float]]) -> list[Atoms]:
    frames = []
    for name, stds in stds_by_trajectory.items():
        for k, std in enumerate(stds, start=1):
            atoms = Atoms("Cu")
            atoms.info.update(al_traj=name, al_sample=k, al_std=std)
            frames.append(atoms)
    return frames


def test_selection_is_capped_and_spread_out():
    rng = np.random.default_rng(0)
    one_event = _explored({"md": list(1.0 + rng.random(60))})  # 60 uncertain in a row
    picks = select_frames(one_event, threshold=0.5, max_new=6, min_separation=5)
    samples = sorted(one_event[i].info["al_sample"] for i in picks)
    assert len(picks) == 6 and min(np.diff(samples)) >= 5
    best = max(range(60), key=lambda i: one_event[i].info["al_std"])
    assert picks[0] == best  # the most uncertain frame first
    # round-robin: each trajectory's best before any second pick; below threshold never
    frames = _explored({"a": [0.9, 0.8, 0.7, 0.6], "b": [0.1, 0.3], "c": [0.05]})
    picks = select_frames(frames, threshold=0.2, max_new=3, min_separation=1)
    assert [(frames[i].info["al_traj"], frames[i].info["al_sample"]) for i in picks] == [
        ("a", 1), ("b", 2), ("a", 2)]
    assert spread_picks([(1, 0.5), (2, 0.9), (3, 0.4), (9, 0.1)], 2) == [2, 9]


def test_killed_run_resumes_without_repeating_reference_calls(setup, tmp_path, monkeypatch):
    counter = tmp_path / "calls.txt"
    values = options(setup, tmp_path, reference=COUNTING, rounds=2,
                     reference_kwargs={"counter": str(counter), "kill_after": 3})
    with pytest.raises(Killed):  # killed in round 0 while labelling, after 3 calls
        learn(values)
    assert len(read((tmp_path / "run" / "round_000" / "labelled.extxyz"), ":")) == 3

    def killed_in_training(*args, **kwargs):
        raise Killed("killed while fine-tuning")

    monkeypatch.setattr(active_loop, "fine_tune", killed_in_training)
    values.update(resume=True, reference_kwargs={"counter": str(counter)})
    with pytest.raises(Killed):  # labelling finishes, then killed in the training phase
        learn(values)
    assert len(counter.read_text().splitlines()) == 4
    monkeypatch.undo()
    write_yaml = tmp_path / "al.yaml"
    write_yaml.write_text(json.dumps({**values, "resume": False}))  # JSON is YAML
    assert main(["learn", str(write_yaml), "--resume"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    calls = counter.read_text().splitlines()
    assert report["rows"][-1]["total_reference_calls"] == len(calls) == 8  # 4 + 4, none twice
    frames = [a for k in range(2) for a in read(tmp_path / "run" / f"round_{k:03d}"
                                               / "labelled.extxyz", ":")]
    assert len({a.info["al_hash"] for a in frames}) == len(frames) == 8


def test_reference_failures_are_reported_and_the_loop_goes_on(setup, tmp_path):
    counter = tmp_path / "calls.txt"
    values = options(setup, tmp_path, reference=COUNTING, max_new_per_round=6,
                     reference_kwargs={"counter": str(counter), "fail_every": 4,
                                       "nan_every": 5})
    summary = learn(values)
    first = summary["rows"][0]
    assert (first["reference_calls"], first["failures"], first["new_frames"]) == (6, 2, 4)
    errors = [f["error"] for f in summary["failures"] if f["round"] == 0]
    assert errors == ["RuntimeError: reference failed on call 4",
                      "ValueError: the reference returned non-finite energy"]
    assert summary["stopped"] == "rounds" and len(summary["rows"]) == 2


def test_stops_converged_when_no_frame_is_above_the_threshold(setup, tmp_path):
    summary = learn(options(setup, tmp_path, threshold=100.0, rounds=3, relax_steps=4))
    assert summary["stopped"] == "converged" and len(summary["rows"]) == 1
    assert summary["rows"][0]["fraction_above_threshold"] == 0
    explored = read(tmp_path / "run" / "round_000" / "explored.extxyz", ":")
    relaxed = [a.info["al_step"] for a in explored if a.info["al_traj"] == "seed.extxyz relax"]
    assert len(explored) == 20 + len(relaxed) and relaxed[0] == 2
    assert not (tmp_path / "run" / "round_000" / "training").exists()
    with pytest.raises(ValueError, match="holds an active-learning run"):
        learn(options(setup, tmp_path, threshold=100.0))


@pytest.mark.parametrize("change, message", [
    ({"thresold": 0.1}, r"unknown active-learning option\(s\) \['thresold'\]; valid: .*"
                        "'threshold'"),
    ({"threshold": 0.0}, "threshold = 0.0: need a finite number > 0"),
    ({"threshold": -1}, "threshold = -1"),
    ({"seed_structures": ["nowhere.xyz"]}, r"seed_structures: file\(s\) \['nowhere.xyz'\]"),
    ({"reference": "no_such_module:Calc"}, "module 'no_such_module' does not import"),
    ({"reference": "ase.calculators.emt:Nope"}, "has no class 'Nope'"),
    ({"reference": "dft"}, "use 'emt', 'xtb' or 'module:Class'"),
    ({"reference": COUNTING}, "reference 'tests.al_reference:CountingEMT' with "
                              r"reference_kwargs \{\}: TypeError"),
    ({"finetune": {"data": "x.extxyz"}}, r"finetune: \['data'\] are set by the loop"),
    ({"finetune": {"epoch": 2}}, r"finetune: unknown training option\(s\) \['epoch'\]"),
    ({"temperatures_K": 300}, "temperatures_K must be a non-empty list"),
    ({"sample_interval": 50}, "sample_interval = 50 exceeds md_steps = 20"),
])
def test_config_errors_name_the_option(setup, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        ActiveConfig.from_dict(options(setup, tmp_path, **change))


def test_cli_config_error_is_one_line(setup, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(options(setup, tmp_path, reference="nope_mod:X")))
    assert main(["learn", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'nope_mod:X'" in err


def test_a_frame_cut_short_by_a_kill_is_dropped_and_hashes_survive_the_file(tmp_path):
    frames = [bulk("Cu", cubic=True) for _ in range(2)]
    frames[1].rattle(0.1, seed=1)
    path = tmp_path / "labelled.extxyz"
    for atoms in frames:
        append_frame(path, atoms)
    with open(path, "a") as handle:
        handle.write("4\nProperties=species:S:1:pos:R:3 pbc=\"T T T\"\nCu 0.0 0.0")
    kept = read_frames_repaired(path)
    assert len(kept) == 2 and len(read(path, ":")) == 2
    assert [frame_hash(a) for a in kept] == [frame_hash(a) for a in frames]


def test_fine_tuning_keeps_the_recipe_and_weighs_the_new_frames(setup, tmp_path):
    from ase_mpnn.training.active.finetune import load_committee, train_config

    config = ActiveConfig.from_dict(options(setup, tmp_path, new_frames_weight=3.0, finetune={
        "epochs": 2, "config_type_weights": {"active_round_1": 0.5}}))
    committee = load_committee(config.committee)
    settings = train_config(config, committee, ["a.extxyz"], tmp_path / "t", rounds=2)
    assert settings.config_type_weights == {"active_round_0": 3.0, "active_round_1": 0.5}
    assert (settings.cutoff, settings.valid_fraction, settings.seed) == (5.0, 0.2, 0)
    assert settings.epochs == 2 and settings.resume and settings.data == ["a.extxyz"]
