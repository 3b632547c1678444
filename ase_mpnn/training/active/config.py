"""``ActiveConfig``: every option of an active-learning run (YAML keys of ``ase-mpnn learn``),
checked up front so that a typo fails before any simulation or reference call."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ...simulate.molecular_dynamics import MAX_TIMESTEP_FS
from ..config import TrainConfig
from .reference import make_reference

#: TrainConfig options the loop sets itself (not allowed under ``finetune``)
RESERVED_FINETUNE = ("data", "output", "init", "resume")


@dataclasses.dataclass
class ActiveConfig:
    """Options of ``learn`` (units: K, fs, eV/A, minutes).

    Paths are relative to the working directory. ``seed_structures`` entries are files
    (every frame in a file is a seed) or ``{file: PATH, temperatures_K: [...]}`` to give a
    file its own temperatures.
    """

    committee: str = ""  # the starting committee: a committee file or a built-in name
    data: str | list[str] = ""  # its training data (kept in every fine-tuning: no forgetting)
    seed_structures: list[Any] = dataclasses.field(default_factory=list)
    temperatures_K: list[float] = dataclasses.field(default_factory=lambda: [300.0])
    md_steps: int = 500  # Langevin steps per trajectory and round
    timestep_fs: float = 2.0
    friction_per_fs: float = 0.01  # Langevin friction, 1/fs
    sample_interval: int = 10  # keep a frame every this many steps
    relax_steps: int = 0  # > 0: also a BFGS relaxation of each seed, sampled alike
    relax_fmax: float = 0.05  # eV/A
    threshold: float = 0.0  # eV/A: frames whose largest per-atom force std exceeds it
    max_new_per_round: int = 20
    min_separation: int = 5  # sampled frames between two picks of one trajectory
    reference: str = "emt"  # "emt", "xtb" or "module:Class" (any ASE calculator)
    reference_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    rounds: int = 5  # fine-tuning rounds at most
    finetune: dict[str, Any] = dataclasses.field(default_factory=dict)  # TrainConfig options
    calibrate: bool = True  # refit the committee's std calibration after each fine-tuning
    # loss weight of the labelled frames (config_type_weights of active_round_N) against the
    # initial data's 1: > 1 spends more of a short fine-tuning on the new domain
    new_frames_weight: float = 1.0
    test_data: str | list[str] | None = None  # fixed labelled test frames of the target
    dtype: str = "float32"  # committee precision in exploration and tests
    seed: int = 0  # exploration: velocities and thermostat noise of round r, trajectory t
    output: str = "active_learning"
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_config(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ActiveConfig":
        """A config from a mapping; unknown names raise ValueError listing the valid ones."""
        if not isinstance(values, dict):
            raise ValueError(f"an active-learning config is a mapping of options, got "
                             f"{type(values).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown active-learning option(s) {unknown}; valid: "
                             f"{sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ActiveConfig":
        """A config from a YAML file."""
        import yaml

        with open(path) as handle:
            values = yaml.safe_load(handle)
        return cls.from_dict(values or {})

    def data_files(self) -> list[str]:
        """``data`` as a list of paths."""
        return _paths(self.data)

    def test_files(self) -> list[str]:
        """``test_data`` as a list of paths (empty without one)."""
        return _paths(self.test_data)

    def seed_entries(self) -> list[tuple[str, list[float]]]:
        """(file, temperatures K) of every seed_structures entry."""
        entries = []
        for entry in self.seed_structures:
            if isinstance(entry, dict):
                entries.append((str(entry["file"]), [float(t) for t in entry.get(
                    "temperatures_K", self.temperatures_K)]))
            else:
                entries.append((str(entry), [float(t) for t in self.temperatures_K]))
        return entries

    def train_config(self, values: dict[str, Any]) -> TrainConfig:
        """The fine-tuning TrainConfig: ``values`` (inherited), then ``finetune``."""
        return TrainConfig.from_dict({**values, **self.finetune})


def _paths(value: str | list[str] | None) -> list[str]:
    if not value:
        return []
    return [str(p) for p in value] if isinstance(value, (list, tuple)) else [str(value)]


def check_config(config: ActiveConfig) -> None:
    """ValueError naming the first bad option (see ActiveConfig for each one's meaning)."""
    temperatures = [config.temperatures_K] + [
        e["temperatures_K"] for e in config.seed_structures
        if isinstance(e, dict) and "temperatures_K" in e]
    if not all(isinstance(ts, list) and ts and all(
            isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts)
            for ts in temperatures):
        raise ValueError(f"temperatures_K must be a non-empty list of numbers > 0 K, got "
                         f"{temperatures[0]!r}")
    _check_files(config)
    _check_numbers(config)
    if config.dtype not in ("float32", "float64"):
        raise ValueError(f"dtype = {config.dtype!r}: choose 'float32' or 'float64'")
    if not isinstance(config.reference_kwargs, dict):
        raise ValueError(f"reference_kwargs must be a mapping, got {config.reference_kwargs!r}")
    make_reference(config.reference, config.reference_kwargs)  # ValueError naming it
    _check_finetune(config)


def _check_files(config: ActiveConfig) -> None:
    from ...pretrained import model_path

    if not config.committee:
        raise ValueError("committee: give the starting committee (a committee file, e.g. "
                         "OUTPUT/committee.mpnn of ase-mpnn train --committee N, or a "
                         "built-in name)")
    if model_path(str(config.committee)) is None and not Path(config.committee).is_file():
        raise ValueError(f"committee {config.committee!r} is neither a file nor a built-in "
                         "model")
    if not config.data_files():
        raise ValueError("data: give the committee's training data (file or list); "
                         "fine-tuning on the new frames alone would forget it")
    if not isinstance(config.seed_structures, list) or not config.seed_structures:
        raise ValueError("seed_structures: give a list of structure files to explore from")
    for entry in config.seed_structures:
        if isinstance(entry, dict) and (set(entry) - {"file", "temperatures_K"}
                                        or "file" not in entry):
            raise ValueError(f"seed_structures entry {entry!r}: a file name or "
                             "{file: PATH, temperatures_K: [...]}")
    for option, files in (("data", config.data_files()), ("test_data", config.test_files()),
                          ("seed_structures", [f for f, _ in config.seed_entries()])):
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise ValueError(f"{option}: file(s) {missing} do not exist")


def _check_numbers(config: ActiveConfig) -> None:
    temperatures = [t for _, ts in config.seed_entries() for t in ts]
    if not all(math.isfinite(t) and t > 0 for t in temperatures):
        raise ValueError(f"temperatures_K must be a non-empty list of numbers > 0 K, got "
                         f"{config.temperatures_K!r}")
    for name, least in (("md_steps", 1), ("sample_interval", 1), ("relax_steps", 0),
                        ("max_new_per_round", 1), ("min_separation", 1), ("rounds", 0),
                        ("seed", 0)):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} = {value!r}: need an integer >= {least}")
    if config.sample_interval > config.md_steps:
        raise ValueError(f"sample_interval = {config.sample_interval} exceeds md_steps = "
                         f"{config.md_steps}: no frame would be sampled")
    for name, high in (("threshold", math.inf), ("timestep_fs", MAX_TIMESTEP_FS),
                       ("friction_per_fs", math.inf), ("relax_fmax", math.inf),
                       ("new_frames_weight", math.inf)):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0 < value <= high and math.isfinite(value)):
            unit = {"threshold": " eV/A (the largest per-atom force std that needs no label)",
                    "timestep_fs": f" and <= {high:g} fs"}.get(name, "")
            raise ValueError(f"{name} = {value!r}: need a finite number > 0{unit}")


def _check_finetune(config: ActiveConfig) -> None:
    if not isinstance(config.finetune, dict):
        raise ValueError(f"finetune must be a mapping of training options, got "
                         f"{config.finetune!r}")
    reserved = sorted(set(config.finetune) & set(RESERVED_FINETUNE))
    if reserved:
        raise ValueError(f"finetune: {reserved} are set by the loop (data: the initial data "
                         "plus the labelled frames; each member starts from its own weights)")
    try:
        config.train_config({"data": config.data})
    except ValueError as exc:
        raise ValueError(f"finetune: {exc}") from None
