"""Built-in models: small potentials trained here by ``ase-mpnn train`` from shipped recipes.

Each ``NAME.mpnn`` in this folder sits beside ``NAME.yaml``, the exact training config,
whose header comment gives the command that makes its data. The model file's manifest
holds the test-set errors under ``test_metrics``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def list_models() -> list[str]:
    """Names of the built-in models, e.g. ["emt-cuni-schnet"]."""
    return sorted(p.stem for p in HERE.glob("*.mpnn"))


def model_path(name: str) -> Path | None:
    """Path of a built-in model, or None when ``name`` is not one."""
    path = HERE / f"{name}.mpnn"
    return path if path.is_file() else None


def recipe_path(name: str) -> Path:
    """The training config (YAML) that produced a built-in model."""
    return HERE / f"{name}.yaml"


def publish(run_dir: str | Path, name: str, data_recipe: dict[str, Any]) -> Path:
    """Copy a finished training run's best model into this folder as a built-in model.

    Adds to the manifest: the name, the test-set metrics and training time from the run's
    summary.json, the recipe (config.json) and ``data_recipe``, what ``make_data`` needs to
    make the data again: ``{"reference": "emt", "elements": [...], "n": ..., "seed": ...}`` or
    ``{"reference": "xtb", "molecules": [...], "n": ..., "seed": ...}``.
    """
    from ..io import load_model, save_model

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
    return save_model(potential, HERE / f"{name}.mpnn", **extra)


def make_data(recipe: dict[str, Any], path: str | Path, progress: bool = False) -> Path:
    """Make a built-in model's training data again from its manifest's ``data_recipe``."""
    recipe = dict(recipe)
    reference = recipe.pop("reference", "emt")  # the first built-ins predate the key
    if reference == "xtb":
        from ..reference_molecules import xtb_dataset

        return xtb_dataset(path=path, progress=progress, **recipe)
    if reference == "emt":
        from ..reference import emt_dataset

        return emt_dataset(path=path, progress=progress, **recipe)
    raise ValueError(f"unknown reference {reference!r} in data recipe (emt or xtb)")
