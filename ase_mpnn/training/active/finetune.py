"""Fine-tuning the committee on the initial data plus every frame labelled so far.

Each member starts from its own current weights (``train_committee(init_members=...)``),
so the members stay apart (their spread stays an uncertainty) and keep their own seeds
(member k: seed + k, the seed of the committee's recipe). The initial training data stays
in every fine-tuning: trained on the new frames alone the committee would forget the old
domain. Options come from the committee's own recipe (INHERITED), then ``finetune``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ...committee import Committee
from ...loading import load_model
from ...modelfile import save_model
from ..committee import COMMITTEE_FILE, train_committee
from ..config import TrainConfig
from .config import ActiveConfig
from .reference import LABELLED_FILE

#: options of the committee's training recipe that its fine-tuning keeps by default
INHERITED = ("seed", "dtype", "batch_size", "energy_weight", "forces_weight", "stress_weight",
             "valid_fraction", "test_fraction", "energy_key", "forces_key", "stress_key",
             "virials_key", "config_type_key", "keys", "scheduler", "lr_final_factor",
             "ema_decay", "optimizer", "weight_decay", "clip_grad")


def load_committee(path: str | Path) -> Committee:
    """The committee in ``path`` (a file or a built-in name); ValueError for a single model."""
    committee = load_model(path)
    if not isinstance(committee, Committee):
        raise ValueError(f"{path} is a single model, not a committee: active learning needs "
                         "the members' spread (ase-mpnn train --committee N, or "
                         "ase_mpnn.save_committee)")
    return committee


def recipe(committee: Committee) -> dict[str, Any]:
    """The INHERITED options of the committee's training config (empty when unknown)."""
    training = (getattr(committee, "manifest", None) or {}).get("training") or {}
    config = training.get("config") or {}
    return {k: config[k] for k in INHERITED if k in config}


def train_config(config: ActiveConfig, committee: Committee, data: Sequence[str],
                 output: Path, rounds: int = 0) -> TrainConfig:
    """The members' fine-tuning options: recipe, then ``finetune``, then data and output;
    the frames of the first ``rounds`` rounds weigh ``new_frames_weight`` (config types
    that ``finetune``'s own config_type_weights name keep its weight)."""
    values = {**recipe(committee), "progress": config.progress}
    values.update(config.finetune)
    values.update(data=list(data), output=str(output), resume=True)
    if config.new_frames_weight != 1.0:
        values["config_type_weights"] = {
            **{f"active_round_{k}": config.new_frames_weight for k in range(rounds)},
            **config.finetune.get("config_type_weights", {})}
    return TrainConfig.from_dict(values)


def labelled_files(round_dirs: Sequence[Path]) -> list[str]:
    """The labelled-frame files of these rounds that hold frames."""
    return [str(d / LABELLED_FILE) for d in round_dirs
            if (d / LABELLED_FILE).exists() and (d / LABELLED_FILE).stat().st_size]


def fine_tune(config: ActiveConfig, committee_path: Path, round_dirs: Sequence[Path],
              next_path: Path) -> dict[str, Any]:
    """Fine-tune the committee in ``committee_path`` (in its round's folder, the last of
    ``round_dirs``) on data + the frames labelled in ``round_dirs``; writes the result,
    with the std calibration refitted (``calibrate``) or carried over, to ``next_path``.
    Returns train_committee's summary."""
    here = committee_path.parent
    committee = load_committee(committee_path)
    members = []
    for k, member in enumerate(committee.members):
        path = here / "members" / f"member_{k}.mpnn"
        members.append(str(path if path.exists() else save_model(member, path)))
    data = config.data_files() + labelled_files(round_dirs)
    settings = train_config(config, committee, data, here / "training", len(round_dirs))
    summary = train_committee(settings, len(members), calibrate=config.calibrate,
                              init_members=members)
    tuned = load_committee(here / "training" / COMMITTEE_FILE)
    if not config.calibrate:
        tuned.set_calibration(committee.calibration)
    manifest = getattr(tuned, "manifest", None) or {}
    save_model(tuned, next_path, training=manifest.get("training"),
               active_learning={"round": len(round_dirs), "data": data})
    return summary
