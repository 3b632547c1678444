"""Publishing a training run as a built-in model, and remaking a built-in's training data.

A built-in model ships as ``ase_mpnn/pretrained/NAME.mpnn`` beside ``NAME.yaml``, the exact
training config. Its manifest holds the test-set errors, the training time and the
``data_recipe`` from which ``make_data`` makes the same data again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..loading import load_model
from ..modelfile import save_model
from ..pretrained import HERE as BUILTIN_DIR
from .emt_data import emt_dataset
from .xtb_data import xtb_dataset


def publish(run_dir: str | Path, name: str, data_recipe: dict[str, Any]) -> Path:
    """Copy a finished training run's best model into ase_mpnn/pretrained/ as a built-in model.

    Adds to the manifest: the name, the test-set metrics and training time from the run's
    summary.json, the recipe (config.json) and ``data_recipe``, what ``make_data`` needs to
    make the data again: ``{"reference": "emt", "elements": [...], "n": ..., "seed": ...}`` or
    ``{"reference": "xtb", "molecules": [...], "n": ..., "seed": ...}`` (plus
    ``"charges": [0, 1, -1]`` for data at several total charges).
    """
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    potential = load_model(run_dir / "best.mpnn")
    extra: dict[str, Any] = {
        "name": name,
        "test_metrics": summary.get("test", {}),
        "training": {"epochs": summary["epochs"],
                     "minutes": summary.get("training_minutes"),
                     "config": {k: v for k, v in config.items() if k not in ("progress", "resume")},
                     "data_recipe": data_recipe},
    }
    return save_model(potential, BUILTIN_DIR / f"{name}.mpnn", **extra)


def publish_committee(run_dir: str | Path, name: str, data_recipe: dict[str, Any]) -> Path:
    """Copy a finished committee training (``ase-mpnn train --committee N``) into
    ase_mpnn/pretrained/ as a built-in model: its committee.mpnn, calibration included,
    with the name, the committee's test-set errors and calibration figures, the members'
    epochs and minutes, the recipe and ``data_recipe`` added to the manifest."""
    from .committee import COMMITTEE_FILE, SUMMARY_FILE

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    config = json.loads((run_dir / "member_0" / "config.json").read_text())
    members = summary["member_summaries"]
    extra: dict[str, Any] = {
        "name": name,
        "test_metrics": summary.get("test", {}),
        "test_calibration": summary.get("test_calibration", {}),
        "training": {"members": summary["members"], "bootstrap": summary["bootstrap"],
                     "epochs": [m["epochs"] for m in members],
                     "minutes": [m.get("training_minutes") for m in members],
                     "config": {k: v for k, v in config.items()
                                if k not in ("progress", "resume", "output", "init")},
                     "data_recipe": data_recipe},
    }
    return save_model(load_model(run_dir / COMMITTEE_FILE), BUILTIN_DIR / f"{name}.mpnn",
                      **extra)


def make_data(recipe: dict[str, Any], path: str | Path, progress: bool = False) -> Path:
    """Make a built-in model's training data again from its manifest's ``data_recipe``."""
    recipe = dict(recipe)
    reference = recipe.pop("reference", "emt")  # the first built-ins predate the key
    if reference == "xtb":
        return xtb_dataset(path=path, progress=progress, **recipe)
    if reference == "emt":
        return emt_dataset(path=path, progress=progress, **recipe)
    raise ValueError(f"unknown reference {reference!r} in data recipe (emt or xtb)")
