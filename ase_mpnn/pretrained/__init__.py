"""Built-in models: small potentials trained here by ``ase-mpnn train`` from shipped recipes.

Each ``NAME.mpnn`` in this folder sits beside ``NAME.yaml``, the exact training config,
whose header comment gives the command that makes its data. The model file's manifest
holds the test-set errors under ``test_metrics``.
"""

from __future__ import annotations

from pathlib import Path

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
