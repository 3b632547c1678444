"""Training a committee: N members from one config, one committee file.

Every member is an ordinary training run (``train``) in ``OUTPUT/member_k`` with its own
seed (``seed + k``: initial weights and batch order) and, with ``bootstrap``, its own
bootstrap sample of the training frames; all share one train/valid/test split
(``split_seed``, default the config's seed), so the validation frames are unseen by every
member and can calibrate the committee's spread, and the test frames measure it.

A member whose ``summary.json`` exists is finished and is not trained again; one with a
checkpoint resumes from it. So a killed committee training continues where it stopped
when run again with ``resume=True`` (``ase-mpnn train ... --committee N --resume``).

Outputs in OUTPUT: ``committee.mpnn`` (calibrated on the validation frames when
``calibrate``), ``committee_summary.json`` (members' summaries, the committee's test-set
errors and calibration figures).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from ..committee import Committee
from ..loading import load_model
from ..modelfile import save_model
from .config import TrainConfig

COMMITTEE_FILE = "committee.mpnn"
SUMMARY_FILE = "committee_summary.json"


def member_config(config: TrainConfig, k: int, bootstrap: bool,
                  init: str | None = None) -> TrainConfig:
    """The config of member k: seed + k, the shared split, its own output folder and, for
    fine-tuning, its own starting model ``init`` (default: the config's)."""
    split_seed = config.seed if config.split_seed is None else config.split_seed
    out = Path(config.output) / f"member_{k}"
    return dataclasses.replace(config, seed=config.seed + k, split_seed=split_seed,
                               bootstrap=bootstrap, output=str(out),
                               init=config.init if init is None else init,
                               resume=config.resume and (out / "checkpoint.pt").exists())


def train_committee(config: TrainConfig, n_members: int, bootstrap: bool = False,
                    calibrate: bool = True, init_members: Sequence[str] | None = None,
                    train_member: Callable[[TrainConfig], dict] | None = None) -> dict[str, Any]:
    """Train (or resume) ``n_members`` members and write OUTPUT/committee.mpnn.

    Args:
        config: the members' common options; ``output`` is the committee's folder and
            ``max_minutes`` applies to each member.
        n_members: committee size, >= 2.
        bootstrap: train each member on its own bootstrap sample of the training frames.
        calibrate: fit the std scale factors on the validation frames
            (ase_mpnn.training.calibration.fit_calibration) and store them in the file.
        init_members: fine-tune: member k starts from model file ``init_members[k]`` (a
            committee grown by active learning keeps its members apart this way).
        train_member: the function that trains one member (default ``train``).

    Returns:
        The committee summary (also written to OUTPUT/committee_summary.json).
    """
    if isinstance(n_members, bool) or not isinstance(n_members, int) or n_members < 2:
        raise ValueError(f"a committee needs an integer number of members >= 2, got "
                         f"{n_members!r}")
    if init_members is not None and len(init_members) != n_members:
        raise ValueError(f"init_members lists {len(init_members)} models for {n_members} "
                         "members")
    inits = list(init_members) if init_members is not None else [None] * n_members
    if train_member is None:
        from .loop import train as train_member
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for k in range(n_members):
        member = member_config(config, k, bootstrap or config.bootstrap, inits[k])
        done = Path(member.output) / "summary.json"
        if config.resume and done.exists():
            print(f"committee member {k}: finished before, kept ({done})")
            summaries.append(json.loads(done.read_text()))
            continue
        print(f"committee member {k + 1}/{n_members}: seed {member.seed}, {member.output}")
        summaries.append(train_member(member))
    bootstrap = bootstrap or config.bootstrap
    committee = Committee([load_model(Path(member_config(config, k, bootstrap).output)
                                      / "best.mpnn") for k in range(n_members)])
    summary = {"members": n_members, "bootstrap": bootstrap,
               "member_summaries": summaries}
    summary.update(_assess(config, committee, calibrate))
    save_model(committee, out / COMMITTEE_FILE,
               training={"members": n_members, "bootstrap": summary["bootstrap"],
                         "config": _recipe(config)},
               **({"test_metrics": summary["test"]} if "test" in summary else {}))
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=float))
    print(f"committee of {n_members} written to {out / COMMITTEE_FILE}")
    return summary


def _recipe(config: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(config).items()
            if k not in ("progress", "resume", "output")}


def _assess(config: TrainConfig, committee: Committee, calibrate: bool) -> dict[str, Any]:
    """Calibration factors fitted on the validation frames, and the committee's test-set
    errors and calibration figures."""
    import torch

    from .calibration import calibration_metrics, fit_calibration
    from .loop import _load_splits
    from .metrics import error_metrics
    from .samples import GraphCache

    splits, _ = _load_splits(member_config(config, 0, bootstrap=False))
    dtype = getattr(torch, config.dtype)
    committee = committee.to(dtype=dtype)
    result: dict[str, Any] = {}
    if calibrate:
        try:
            factors = fit_calibration(committee, splits["valid"])
        except ValueError as exc:  # no labels, or members that never disagree
            print(f"committee left uncalibrated: {exc}")
        else:
            committee.set_calibration(factors)
            result["calibration"] = factors
    if splits["test"]:
        cache = GraphCache(splits["test"], committee.cutoff, committee.species)
        result["test"] = error_metrics(committee, cache, config.batch_size, dtype)
        result["test_calibration"] = calibration_metrics(committee, splits["test"])
    return result
