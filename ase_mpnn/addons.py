"""A potential plus add-on energy terms (e.g. D3 dispersion), summed in one autograd pass.

An add-on is any object with ``per_atom_energies(graph) -> (n_atoms,)`` eV that reads the
graph ``ase_mpnn.potential`` hands its energy terms: edge geometry of the model's list,
and POSITIONS and CELL as strained for the stress. ``WithAddOns(potential, [addon])``
adds the add-on's per-atom energies to those of every energy term of the potential (each
member of a committee), so E, forces and stress of model + add-on come from one backward.
It evaluates like the potential it wraps (the same outputs, committee statistics
included), and shares its weights; saving it saves the potential alone.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn

from . import keys
from .graph import Graph
from .potential import EnergyTerm, hessian_of_terms


class AddOn(Protocol):
    """An energy term without weights that adds per-atom energies (eV) to a potential's."""

    def per_atom_energies(self, graph: Graph) -> torch.Tensor: ...


class _Summed:
    """graph -> the term's per-atom energies plus every add-on's."""

    def __init__(self, energies: Callable[[Graph], torch.Tensor], addons: Sequence[AddOn]):
        self.energies, self.addons = energies, tuple(addons)

    def __call__(self, graph: Graph) -> torch.Tensor:
        total = self.energies(graph)
        for addon in self.addons:
            total = total + addon.per_atom_energies(graph).to(total.dtype)
        return total


class WithAddOns(nn.Module):
    """``base`` (a Potential or Committee) with ``addons`` added to each of its energy terms.

    Args:
        base: the potential; its species, cutoff, outputs and manifest are this one's.
        addons: objects with ``per_atom_energies(graph)`` (e.g. ``D3Dispersion``).
    """

    def __init__(self, base: nn.Module, addons: Sequence[AddOn]):
        super().__init__()
        self.base = base
        self.addons = tuple(addons)

    def __getattr__(self, name: str) -> Any:
        # species, cutoff, architecture, outputs, manifest, ... are the base's
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["base"], name)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The base's outputs but per-atom stresses: those split the model's edges' virial
        and would leave the add-ons' out."""
        return tuple(k for k in self.base.outputs if k != keys.ATOMIC_STRESSES)

    def energy_terms(self) -> list[EnergyTerm]:
        """The base's energy terms, each with the add-ons' energies added."""
        return [EnergyTerm(_Summed(term.per_atom_energies, self.addons), term.cutoff,
                           term.always_drop) for term in self.base.energy_terms()]

    def with_compiled_model(self, **options) -> "WithAddOns":
        """The same add-ons on the base's compiled twin (see Potential.with_compiled_model)."""
        return WithAddOns(self.base.with_compiled_model(**options), self.addons)

    def eager(self) -> "WithAddOns":
        """The same add-ons on the base run eagerly (see Potential.eager)."""
        return WithAddOns(self.base.eager(), self.addons)

    def hessian(self, graph: Graph, rows_per_pass: int | None = None,
                atoms: Sequence[int] | None = None) -> torch.Tensor:
        """d^2E/dx dx of the base plus the add-ons (see ``potential.hessian_of_terms``)."""
        return hessian_of_terms(graph, self.eager().energy_terms(), rows_per_pass, atoms)

    def forward(self, graph: Graph, forces: bool = True, stress: bool = False,
                atomic_stresses: bool = False, create_graph: bool = False) -> Graph:
        """What ``base.forward`` returns (see Potential.forward, Committee.forward), with
        the add-ons' energies, forces and stress included."""
        # the base's own forward (a committee's statistics too) over the summed terms: a
        # shallow twin (shared weights) whose energy_terms are this module's
        view = copy.copy(self.base)
        view.__dict__["energy_terms"] = self.energy_terms
        return view(graph, forces, stress, atomic_stresses, create_graph)
