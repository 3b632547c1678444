"""``TrainConfig``: every option of a training run (YAML keys of ``ase-mpnn train``)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from ..loading import DEFAULT_DTYPE
from ..repulsion import ZBL

DEFAULT_LR = 1e-3  # learning rate of a fresh training
FINE_TUNE_LR = 2e-4  # a fine-tuning run starts near a minimum: smaller steps keep it there

SCHEDULERS = ("plateau", "cosine")  # learning-rate schedules (TrainConfig.scheduler)

class Bounds(NamedTuple):
    """The values a numeric option takes: low < value < high, or <= where ``*_ok``."""

    low: float = -float("inf")
    high: float = float("inf")
    integer: bool = False
    low_ok: bool = True  # the low end itself is allowed
    high_ok: bool = False
    none_ok: bool = False  # None (YAML null) means "use the default behaviour"


_COUNT, _WEIGHT = Bounds(1, integer=True), Bounds(0)
_POSITIVE, _FRACTION = Bounds(0, low_ok=False), Bounds(0, 1)
#: every numeric option and its bounds
NUMBER_RANGES: dict[str, Bounds] = {
    "valid_fraction": _FRACTION, "test_fraction": _FRACTION, "cutoff": _POSITIVE,
    "energy_weight": _WEIGHT, "forces_weight": _WEIGHT, "stress_weight": _WEIGHT,
    "epochs": _COUNT, "batch_size": _COUNT, "lr": Bounds(0, none_ok=True),
    "weight_decay": _WEIGHT, "clip_grad": _POSITIVE, "max_skipped_steps": _COUNT,
    "scheduler_patience": Bounds(0, integer=True), "scheduler_factor": Bounds(0, 1, False,
                                                                             False, True),
    "ema_decay": _FRACTION, "early_stopping_patience": _COUNT,
    "stage_two_energy_weight": Bounds(0, none_ok=True),
    "stage_two_forces_weight": Bounds(0, none_ok=True),
    "stage_two_stress_weight": Bounds(0, none_ok=True), "stage_two_lr": _POSITIVE,
    "max_minutes": Bounds(0, low_ok=False, none_ok=True), "seed": Bounds(integer=True),
    "split_seed": Bounds(integer=True, none_ok=True),
    "threads": Bounds(1, integer=True, none_ok=True),
}
#: string options with a fixed set of values
CHOICES = {"dtype": ("float32", "float64"), "optimizer": ("adam", "adamw"),
           "finetune_e0": ("new", "all")}


def check_option_values(config: Any) -> None:
    """ValueError naming the first option whose value has the wrong type or range."""
    for name, (low, high, integer, low_ok, high_ok, none_ok) in NUMBER_RANGES.items():
        value = getattr(config, name)
        if value is None and none_ok:
            continue
        kind = "an integer" if integer else "a number"
        wrong_type = isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int))
        if wrong_type or not (value > low or (low_ok and value == low)) or not (
                value < high or (high_ok and value == high)):
            bounds = (f"{'>=' if low_ok else '>'} {low:g}" if low > -float("inf") else "")
            if high < float("inf"):
                bounds += f"{' and ' if bounds else ''}{'<=' if high_ok else '<'} {high:g}"
            raise ValueError(f"{name} = {value!r}: need {kind}{' ' + bounds if bounds else ''}"
                             f"{' or null' if none_ok else ''}")
    for name, allowed in CHOICES.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} = {getattr(config, name)!r}: choose one of {allowed}")


#: option names of earlier releases -> their current names (accepted by ``from_dict``)
ALIASES = {"atomic_energies": "reference_energies"}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (read from YAML by ``ase-mpnn train``).

    Units: energies eV, lengths Angstrom, times minutes. The loss weights multiply mean
    squared errors of energy per atom (eV/atom)^2, forces (eV/A)^2 and stress (eV/A^3)^2.
    """

    # file(s) with all frames (split below) or the training frames: one path or a list, any
    # format ase.io reads (extxyz, ase.db, .traj, ...)
    data: str | list[str] = ""
    valid_data: str | list[str] | None = None  # optional separate validation file(s)
    test_data: str | list[str] | None = None  # optional separate test file(s)
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    # label keys as mace-torch names them (ase_mpnn.training.samples): energy eV (info),
    # forces eV/A (arrays), stress eV/A^3 (info; 6 Voigt, 9 or 3x3; tensile positive),
    # virials eV (info; stress = -virials / volume), config_type (info)
    energy_key: str = "REF_energy"
    forces_key: str = "REF_forces"
    stress_key: str = "REF_stress"
    virials_key: str = "REF_virials"
    config_type_key: str = "config_type"
    # older form {"energy"|"forces"|"stress"|"virials"|"config_type": key}; may not
    # contradict a *_key option given a non-default value (ValueError)
    keys: dict[str, str] = dataclasses.field(default_factory=dict)
    # loss weight of each frame by its config_type (types not listed: 1); also applied to
    # the validation loss, as in mace-torch
    config_type_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    architecture: str = "SchNet"
    species: list[str] | None = None  # default: the elements in the data
    cutoff: float = 5.0
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    # ZBL short-range repulsion under the network, {r_inner: A, r_outer: A} ({}: the
    # defaults 0.5 and 1.5; r_outer <= cutoff), so that the network learns on top of it
    # (ase_mpnn.repulsion); None: none. With init, it replaces the model's own.
    zbl: dict[str, float] | None = None
    # isolated-atom energies E0 {symbol: eV}; these win over the data's IsolatedAtom frames,
    # which win over a least-squares fit of the other elements to the training set.
    # from_dict also reads the option's old name, ``atomic_energies`` (see ALIASES).
    reference_energies: dict[str, float] | None = None
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 0.0
    epochs: int = 100
    batch_size: int = 8
    lr: float | None = None  # default: DEFAULT_LR, or FINE_TUNE_LR with init
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    clip_grad: float = 10.0
    max_skipped_steps: int = 5  # non-finite steps in a row before TrainingDiverged
    # "plateau": lr *= scheduler_factor after scheduler_patience epochs without a new best
    # validation loss; "cosine": lr follows half a cosine from its start to
    # lr_final_factor x start over each stage's share of the budget (epochs or max_minutes,
    # whichever runs out first), updated every step: a run stopped by its time limit ends
    # annealed instead of at whatever lr the plateaus left
    scheduler: str = "plateau"
    scheduler_patience: int = 5
    scheduler_factor: float = 0.5
    lr_final_factor: float = 0.01
    ema_decay: float = 0.99
    early_stopping_patience: int = 30
    # mace-torch's "Stage Two": the last stage_two_fraction of the run (of the epochs, or of
    # max_minutes when that ends the run sooner; also entered instead of early stopping)
    # trains with these loss weights (None: the weight above) at lr stage_two_lr. Forces
    # are learned first, energies, which the force term drowns out early, at the end.
    # 0: off. The validation loss, best.mpnn and the scheduler restart with the new weights.
    stage_two_fraction: float = 0.0
    stage_two_energy_weight: float | None = 1000.0
    stage_two_forces_weight: float | None = None
    stage_two_stress_weight: float | None = None
    stage_two_lr: float = 1e-3
    max_minutes: float | None = None  # stop (with a checkpoint) after this wall time
    # D3(BJ) of this functional ("pbe", ...) is subtracted from the labels when read; the
    # model file records it and MPNNCalculator adds D3 back (ase_mpnn.dispersion)
    subtract_dispersion: str | None = None
    dtype: str = DEFAULT_DTYPE  # training precision, "float32" or "float64"
    seed: int = 0  # initial weights, batch order and (unless split_seed) the data split
    # the train/valid/test split's seed (None: seed); a committee's members share it
    split_seed: int | None = None
    # train on a bootstrap sample of the training frames (drawn with replacement, seed
    # ``seed``): committee members then differ in their data as well as their weights
    bootstrap: bool = False
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    # fine-tuning: start from this model file or built-in name (its architecture,
    # hyper-parameters and cutoff; elements of the data it lacks are added)
    init: str | None = None
    finetune_e0: str = "new"  # E0 refitted for "new" elements only or for "all" in the data
    output: str = "training"
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_option_values(self)
        self.label_keys()  # raises ValueError for contradicting keys
        if self.subtract_dispersion is not None:
            from ..dispersion import d3bj_parameters

            d3bj_parameters(self.subtract_dispersion)  # ValueError naming valid functionals
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler = {self.scheduler!r}: choose one of {SCHEDULERS}")
        if not 0 <= self.lr_final_factor <= 1:
            raise ValueError(f"lr_final_factor = {self.lr_final_factor!r}: need 0 <= factor "
                             "<= 1 (the last lr as a fraction of the first)")
        if not 0 <= self.stage_two_fraction < 1:
            raise ValueError(f"stage_two_fraction = {self.stage_two_fraction!r}: need "
                             "0 <= fraction < 1 (0: no second stage)")
        self.repulsion()  # raises ValueError for bad ZBL radii
        for config_type, weight in self.config_type_weights.items():
            if not (isinstance(weight, (int, float)) and 0 <= weight < float("inf")):
                raise ValueError(f"config_type_weights[{config_type!r}] = {weight!r}: "
                                 "need a finite number >= 0")

    def repulsion(self) -> ZBL | None:
        """The ZBL term ``zbl`` asks for (None without), checked against ``cutoff``."""
        if self.zbl is None:
            return None
        if not isinstance(self.zbl, dict):
            raise ValueError(f"zbl = {self.zbl!r}: need a mapping {{r_inner: A, r_outer: A}}")
        unknown = sorted(set(self.zbl) - {"r_inner", "r_outer"})
        if unknown:
            raise ValueError(f"unknown zbl option(s) {unknown}; valid: r_inner, r_outer")
        zbl = ZBL(**self.zbl)
        if zbl.r_outer > self.cutoff:
            raise ValueError(f"zbl r_outer = {zbl.r_outer} A reaches beyond the cutoff "
                             f"({self.cutoff} A)")
        return zbl

    def stage_two_weights(self) -> "TrainConfig":
        """This config with the second stage's loss weights (``stage_two_*_weight``, those
        not given keep their first-stage value)."""
        weights = {name: getattr(self, f"stage_two_{name}")
                   for name in ("energy_weight", "forces_weight", "stress_weight")}
        return dataclasses.replace(self, **{k: v for k, v in weights.items() if v is not None})

    def label_keys(self) -> dict[str, str]:
        """{"energy"|"forces"|"stress"|"virials"|"config_type": key in the files} from the
        ``*_key`` options and the ``keys`` dict; a key both give differently (the option not
        at its default) raises ValueError."""
        options = {"energy": "energy_key", "forces": "forces_key", "stress": "stress_key",
                   "virials": "virials_key", "config_type": "config_type_key"}
        unknown = sorted(set(self.keys) - set(options))
        if unknown:
            raise ValueError(f"unknown label(s) {unknown} in keys; valid: {sorted(options)}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        resolved = {}
        for label, option in options.items():
            value = getattr(self, option)
            if label in self.keys and value != defaults[option] and self.keys[label] != value:
                raise ValueError(f"keys['{label}'] = {self.keys[label]!r} contradicts "
                                 f"{option} = {value!r}: give one")
            resolved[label] = self.keys.get(label, value)
        return resolved

    def data_paths(self) -> list[str]:
        """Every data file of the run: data, valid_data, test_data (each one or a list)."""
        paths: list[str] = []
        for value in (self.data, self.valid_data, self.test_data):
            if value:
                paths += [str(p) for p in value] if isinstance(value, (list, tuple)) else [
                    str(value)]
        return paths

    @property
    def learning_rate(self) -> float:
        """``lr``, else the default of a fresh run or, with ``init``, of a fine-tuning run."""
        if self.lr is not None:
            return float(self.lr)
        return FINE_TUNE_LR if self.init else DEFAULT_LR

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
        for name in set(values) & set(NUMBER_RANGES):
            values[name] = _number_from_text(values[name])
        return cls(**values)


def _number_from_text(value: Any) -> Any:
    """A number written as text ("1e-3": PyYAML reads exponents without a dot as strings)
    as the number; anything else unchanged (and judged by check_option_values)."""
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() \
        else number
