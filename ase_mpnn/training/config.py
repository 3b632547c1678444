"""``TrainConfig``: every option of a training run (YAML keys of ``ase-mpnn train``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..loading import DEFAULT_DTYPE

#: option names of earlier releases -> their current names (accepted by ``from_dict``)
ALIASES = {"atomic_energies": "reference_energies"}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (read from YAML by ``ase-mpnn train``).

    Units: energies eV, lengths Angstrom, times minutes. The loss weights multiply mean
    squared errors of energy per atom (eV/atom)^2, forces (eV/A)^2 and stress (eV/A^3)^2.
    """

    data: str = ""  # file with all frames (split below) or the training frames
    valid_data: str | None = None  # optional separate validation file
    test_data: str | None = None  # optional separate test file
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    keys: dict[str, str] = dataclasses.field(default_factory=dict)  # label keys
    architecture: str = "SchNet"
    species: list[str] | None = None  # default: the elements in the data
    cutoff: float = 5.0
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    # isolated-atom energies E0 {symbol: eV}; default: least-squares fit to the training set.
    # from_dict also reads the option's old name, ``atomic_energies`` (see ALIASES).
    reference_energies: dict[str, float] | None = None
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 0.0
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    clip_grad: float = 10.0
    max_skipped_steps: int = 5  # non-finite steps in a row before TrainingDiverged
    scheduler_patience: int = 5
    scheduler_factor: float = 0.5
    ema_decay: float = 0.99
    early_stopping_patience: int = 30
    max_minutes: float | None = None  # stop (with a checkpoint) after this wall time
    dtype: str = DEFAULT_DTYPE  # training precision, "float32" or "float64"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    output: str = "training"
    resume: bool = False
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config from a mapping of options; old names in ALIASES are read as the new ones,
        unknown names raise ValueError."""
        values = dict(values)
        for old, new in ALIASES.items():
            if old in values:
                value = values.pop(old)
                if new in values and values[new] != value:
                    raise ValueError(f"'{old}' is the old name of '{new}': give only one")
                values[new] = value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; valid: {sorted(known)}")
        return cls(**values)
