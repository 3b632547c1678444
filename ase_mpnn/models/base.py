"""The contract every architecture fulfils, and the name -> class table of model files."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from ase.data import atomic_numbers
from torch import nn

from ..errors import UnknownArchitectureError

ARCHITECTURES: dict[str, type["AtomisticModel"]] = {}


def register_architecture(cls: type["AtomisticModel"]) -> type["AtomisticModel"]:
    """Class decorator: make ``cls`` loadable from model files by ``cls.architecture``."""
    ARCHITECTURES[cls.architecture] = cls
    return cls


def architecture_class(name: str) -> type["AtomisticModel"]:
    """The model class registered under ``name``; unknown names list the known ones."""
    if name not in ARCHITECTURES:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; this version of ase-mpnn provides "
            f"{', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[name]


def build_model(architecture: str, species: Sequence[str], cutoff: float,
                **hyperparameters: Any) -> "AtomisticModel":
    """Build a registered architecture by name; unknown option names list the valid ones."""
    import inspect

    cls = architecture_class(architecture)
    valid = [name for name in inspect.signature(cls.__init__).parameters
             if name not in ("self", "species", "cutoff")]
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        raise ValueError(f"{architecture} has no option(s) {', '.join(unknown)}; "
                         f"its options are {', '.join(valid)}")
    return cls(species, cutoff, **hyperparameters)


def check_positive_ints(**values: Any) -> None:
    """Raise ValueError naming the first argument that is not a positive integer."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
                or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class AtomisticModel(nn.Module):
    """Base class: a graph in, one unscaled energy per atom out.

    Subclasses read geometry only through ``keys.EDGE_VECTORS`` / ``keys.EDGE_LENGTHS``
    (written by the potential), never from positions, so that energies are translation
    invariant by construction and the potential can differentiate them for forces and stress.
    They never compute forces. ``forward(graph)`` returns an (n_atoms,) tensor.

    Subclasses set ``architecture`` (the name written into model files) and store their
    JSON-safe constructor arguments, other than species and cutoff, in ``self.hyperparameters``.
    A model built with ``global_inputs=["charge", "spin"]`` records them there too (only
    when not empty, so files of charge-blind models are unchanged) and adds
    ``ase_mpnn.nn.global_state.GlobalStateEmbedding`` to its atoms' initial features.
    """

    architecture: ClassVar[str] = ""

    def __init__(self, species: Sequence[str], cutoff: float):
        super().__init__()
        species = list(species)
        unknown = [s for s in species if s not in atomic_numbers or s == "X"]
        if not species or unknown or len(set(species)) != len(species):
            raise ValueError(
                f"species must be a non-empty list of distinct element symbols, got {species}"
            )
        if not cutoff > 0:
            raise ValueError(f"cutoff must be a positive distance in Angstrom, got {cutoff}")
        self.species: list[str] = species
        self.cutoff: float = float(cutoff)
        self.hyperparameters: dict[str, Any] = {}

    @property
    def global_inputs(self) -> tuple[str, ...]:
        """The structure-wide inputs it takes: a subset of ("charge", "spin"), from
        ``atoms.info`` (``ase_mpnn.graph.charge_spin``); empty for charge-blind models."""
        return tuple(self.hyperparameters.get("global_inputs", ()))

    def _record_global_inputs(self, global_inputs: Sequence[str] | None) -> None:
        """Add the checked, non-empty ``global_inputs`` to ``self.hyperparameters``."""
        from ..nn.global_state import check_global_inputs

        names = check_global_inputs(global_inputs)
        if names:
            self.hyperparameters["global_inputs"] = names

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
