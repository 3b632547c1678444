"""Knowing when a simulation leaves the training data: a committee's force spread, per step.

A committee (``ase_mpnn.committee``) reports for every atom the spread of its members'
forces, ``forces_std`` (n_atoms,) eV/A. Members trained on the same data agree where the
data was and disagree where it was not, so the largest per-atom spread of a configuration
measures how far the potential extrapolates there (the atom where it happens is where the
structure looks least like anything seen in training). ``UncertaintyMonitor`` reads it
after every step of a run, from the results the integrator or optimizer already computed
(nothing is evaluated again), and, given a threshold ``max_force_std`` (eV/A), stops the
run or flags the steps above it.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .structures import SimulationError

#: what a run does when a step's largest force std exceeds max_force_std
ON_UNCERTAIN = ("stop", "flag")


def check_uncertainty_options(max_force_std: float | None, on_uncertain: str) -> None:
    """ValueError naming ``max_force_std`` (None, or finite and > 0, eV/A) or
    ``on_uncertain`` (one of ON_UNCERTAIN) when out of range."""
    if max_force_std is not None:
        is_number = isinstance(max_force_std, Real) and not isinstance(max_force_std, bool)
        if not (is_number and math.isfinite(max_force_std) and max_force_std > 0):
            raise ValueError(f"max_force_std must be a finite number > 0 (eV/A) or None, got "
                             f"{max_force_std!r}")
    if on_uncertain not in ON_UNCERTAIN:
        raise ValueError(f"on_uncertain must be one of {', '.join(map(repr, ON_UNCERTAIN))}, "
                         f"got {on_uncertain!r}")


def gives_force_std(calc: Calculator) -> bool:
    """True when ``calc`` reports a per-atom force std (a committee)."""
    return "forces_std" in getattr(calc, "implemented_properties", ())


def largest_force_std(forces_std: np.ndarray) -> tuple[float, int]:
    """(the largest per-atom force std, eV/A; the index of that atom) of a (n_atoms,) array."""
    atom = int(np.argmax(forces_std))
    return float(forces_std[atom]), atom


class UncertaintyMonitor:
    """The largest per-atom force std of each step of a run, checked against a threshold.

    Args:
        calc: the run's calculator. Without ``forces_std`` (not a committee) the monitor
            is off (``enabled`` False) and a ``max_force_std`` is a ValueError.
        max_force_std: threshold on the largest per-atom force std, eV/A; None: record only.
        on_uncertain: "stop" (``stops`` is True for a step above the threshold: the caller
            records that frame and raises ``error``) or "flag" (such steps are counted and
            marked, and the run goes on).
    """

    def __init__(self, calc: Calculator, max_force_std: float | None = None,
                 on_uncertain: str = "stop"):
        check_uncertainty_options(max_force_std, on_uncertain)
        self.enabled = gives_force_std(calc)
        if max_force_std is not None and not self.enabled:
            raise ValueError(
                f"max_force_std needs a committee of potentials, whose force spread measures "
                f"the uncertainty: MPNNCalculator([model_a, model_b, ...]) or a committee file "
                f"(save_committee); this {type(calc).__name__} gives no forces_std")
        self.threshold = None if max_force_std is None else float(max_force_std)
        self.on_uncertain = on_uncertain
        self.uncertain_steps = 0
        self.first_uncertain_step: int | None = None
        self._last: tuple[int, dict[str, Any]] | None = None

    def check(self, atoms: Atoms, step: int) -> dict[str, Any]:
        """The fields of ``atoms`` at ``step``, once per step (a second call returns the first
        call's fields): ``max_force_std`` (eV/A), ``uncertain_atom`` (its index) and, with a
        threshold, ``uncertain`` (bool); {} when the monitor is off. Uncertain steps are
        counted (``summary``)."""
        if not self.enabled:
            return {}
        if self._last is not None and self._last[0] == step:
            return self._last[1]
        fields = self._fields(atoms)
        self._last = (step, fields)
        if fields.get("uncertain"):
            self.uncertain_steps += 1
            if self.first_uncertain_step is None:
                self.first_uncertain_step = step
        return fields

    def stops(self, fields: dict[str, Any]) -> bool:
        """True when these fields (from ``check``) must stop the run."""
        return bool(fields.get("uncertain")) and self.on_uncertain == "stop"

    def error(self, atoms: Atoms, step: int, fields: dict[str, Any]) -> SimulationError:
        """The SimulationError for an uncertain step: step, atom, element, std, threshold."""
        atom = fields["uncertain_atom"]
        return SimulationError(
            f"step {step}: atom {atom} ({atoms.get_chemical_symbols()[atom]}) has a force std "
            f"of {fields['max_force_std']:.4g} eV/A over the committee, above max_force_std "
            f"{self.threshold:g} eV/A: the potential is extrapolating (on_uncertain='flag' "
            "runs on, marking such steps)")

    def forces_std(self, atoms: Atoms) -> np.ndarray:
        """The per-atom force std (n_atoms,) eV/A of ``atoms`` as it stands.

        The integrator or optimizer has just computed forces for this geometry, so
        ``get_property`` returns the stored result; it evaluates only if ``atoms`` changed.
        """
        return np.asarray(atoms.calc.get_property("forces_std", atoms))

    def summary(self) -> dict[str, Any]:
        """``max_force_std_threshold`` (eV/A), ``uncertain_steps`` and
        ``first_uncertain_step`` (None if none) of a run with a threshold; {} without one."""
        if self.threshold is None:
            return {}
        return {"max_force_std_threshold": self.threshold,
                "uncertain_steps": self.uncertain_steps,
                "first_uncertain_step": self.first_uncertain_step}

    def _fields(self, atoms: Atoms) -> dict[str, Any]:
        value, atom = largest_force_std(self.forces_std(atoms))
        fields: dict[str, Any] = {"max_force_std": value, "uncertain_atom": atom}
        if self.threshold is not None:
            fields["uncertain"] = value > self.threshold
        return fields
