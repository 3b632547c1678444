"""A committee of potentials: their mean as the prediction, their spread as its uncertainty.

Query-by-committee (Seung, Opper and Sompolinsky, COLT 1992) applied to interatomic
potentials (Artrith and Behler, Phys. Rev. B 85, 045439, 2012; Smith et al., J. Chem. Phys.
148, 241733, 2018): N members trained on the same data from different seeds (or bootstrap
samples) agree where the data was and disagree where it was not. The committee predicts

    E = (1/N) sum_k E_k,    F_i = (1/N) sum_k F_i^k,    sigma = (1/N) sum_k sigma^k

and reports, with the population standard deviation over members (zero for identical
members) times a calibration factor c fitted on validation data (``calibration``):

    energy_std = c_E std_k(E_k)                   (n_graphs,) eV
    energies_std = c_E std_k(E_i^k)                (n_atoms,) eV
    forces_std_i = c_F sqrt(sum_a var_k(F_ia^k))   (n_atoms,) eV/A
    stress_std = c_S std_k(sigma^k)                (n_graphs, 3, 3) eV/A^3

The members share one neighbour list and one graph, and run one after another, each with
its own forward and backward pass (``potential.evaluate_terms``): a committee of N costs
N model passes plus one neighbour list. Members must cover the same species in the same
order; their cutoffs may differ (the graph is built at the largest, and each member drops
the pairs beyond its own).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import keys
from .graph import Graph
from .potential import EnergyTerm, Potential, evaluate_terms, hessian_of_terms

#: potential output -> the committee's stacked member values (member axis last)
MEMBER_KEYS = {keys.ENERGY: keys.COMMITTEE_ENERGY,
               keys.ATOMIC_ENERGIES: keys.COMMITTEE_ATOMIC_ENERGIES,
               keys.FORCES: keys.COMMITTEE_FORCES, keys.STRESS: keys.COMMITTEE_STRESS}

#: the quantities whose std a calibration factor scales
CALIBRATED = ("energy", "forces", "stress")


class Committee(nn.Module):
    """N potentials evaluated together; their mean and spread (see the module docstring).

    Args:
        members: two or more Potentials with the same species (in the same order).
        calibration: std scale factors {"energy": c_E, "forces": c_F, "stress": c_S}
            (default 1 each), fitted by ``ase_mpnn.training.calibration``.
    """

    def __init__(self, members: Sequence[Potential], calibration: dict[str, float] | None = None):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"a committee needs at least two members, got {len(members)}")
        for k, member in enumerate(members):
            if not isinstance(member, Potential):
                raise TypeError(f"committee member {k} is a {type(member).__name__}, "
                                "not a Potential (wrap models with as_potential)")
            if list(member.species) != list(members[0].species):
                raise ValueError(f"committee member {k} covers {member.species}, member 0 "
                                 f"{members[0].species}: members need the same species")
        self.members = nn.ModuleList(members)
        self.calibration = {name: 1.0 for name in CALIBRATED}
        self.set_calibration(calibration or {})

    def set_calibration(self, factors: dict[str, float]) -> None:
        """Set std scale factors (each finite and > 0) for energy, forces and/or stress."""
        for name, value in factors.items():
            if name not in CALIBRATED:
                raise ValueError(f"calibration for {name!r}; expected one of {CALIBRATED}")
            if not (isinstance(value, (int, float)) and 0 < float(value) < float("inf")):
                raise ValueError(f"calibration factor for {name} must be > 0, got {value!r}")
            self.calibration[name] = float(value)

    @property
    def species(self) -> list[str]:
        """Element symbols covered, in the order of the species index."""
        return self.members[0].species

    @property
    def cutoff(self) -> float:
        """The largest member cutoff (the graph's), Angstrom."""
        return max(member.cutoff for member in self.members)

    @property
    def architecture(self) -> str:
        """E.g. "committee of 4 SchNet"."""
        names = sorted({member.architecture for member in self.members})
        return f"committee of {len(self.members)} {'+'.join(names)}"

    @property
    def global_inputs(self) -> tuple[str, ...]:
        """The structure-wide inputs (charge, spin) that every member takes."""
        return tuple(name for name in self.members[0].global_inputs
                     if all(name in m.global_inputs for m in self.members))

    @property
    def outputs(self) -> tuple[str, ...]:
        """The graph keys forward can return."""
        return (*self.members[0].outputs, *MEMBER_KEYS.values(), keys.ENERGY_STD,
                keys.ATOMIC_ENERGIES_STD, keys.FORCES_STD, keys.STRESS_STD)

    def energy_terms(self) -> list[EnergyTerm]:
        """One energy function per member, each with its own cutoff."""
        cutoff = self.cutoff
        return [EnergyTerm(m.per_atom_energies, m.cutoff, m.cutoff < cutoff)
                for m in self.members]

    def with_compiled_model(self, **options) -> "Committee":
        """A twin whose members' models run through torch.compile (shared weights)."""
        twin = Committee([m.with_compiled_model(**options) for m in self.members],
                         self.calibration)
        twin.__dict__.update({k: v for k, v in self.__dict__.items()
                              if k in ("manifest", "manifest_sha256")})
        return twin

    def eager(self) -> "Committee":
        """This committee with every member's model run eagerly (see Potential.eager)."""
        return Committee([member.eager() for member in self.members], self.calibration)

    def hessian(self, graph: Graph, rows_per_pass: int | None = None,
                atoms: Sequence[int] | None = None) -> torch.Tensor:
        """The Hessian of the mean energy (the members' mean Hessian), (3n, 3n) eV/A^2, or
        the rows of ``atoms`` (see ``potential.hessian_of_terms``)."""
        return hessian_of_terms(graph, self.eager().energy_terms(), rows_per_pass, atoms)

    def forward(self, graph: Graph, forces: bool = True, stress: bool = False,
                atomic_stresses: bool = False, create_graph: bool = False) -> Graph:
        """The members' mean under the usual keys (see ``Potential.forward``), the members'
        values under MEMBER_KEYS' values (member axis last) and the calibrated stds
        (ENERGY_STD, ATOMIC_ENERGIES_STD, FORCES_STD, STRESS_STD; no gradient)."""
        outs = evaluate_terms(graph, self.energy_terms(), forces, stress, atomic_stresses,
                              create_graph)
        result = {}
        for key in outs[0]:
            stacked = torch.stack([out[key] for out in outs], dim=-1)
            result[key] = stacked.mean(dim=-1)
            if key in MEMBER_KEYS:
                result[MEMBER_KEYS[key]] = stacked
        result.update(self._spread(result))
        return result

    def _spread(self, result: Graph) -> Graph:
        """Calibrated standard deviations over the members (population std, detached)."""
        c = self.calibration

        def std(key: str) -> torch.Tensor:
            return result[key].detach().var(dim=-1, unbiased=False).sqrt()

        spread = {keys.ENERGY_STD: c["energy"] * std(keys.COMMITTEE_ENERGY),
                  keys.ATOMIC_ENERGIES_STD: c["energy"] * std(keys.COMMITTEE_ATOMIC_ENERGIES)}
        if keys.COMMITTEE_FORCES in result:
            variance = result[keys.COMMITTEE_FORCES].detach().var(dim=-1, unbiased=False)
            spread[keys.FORCES_STD] = c["forces"] * variance.sum(dim=-1).sqrt()
        if keys.COMMITTEE_STRESS in result:
            spread[keys.STRESS_STD] = c["stress"] * std(keys.COMMITTEE_STRESS)
        return spread
