"""ZBL short-range repulsion: a physical wall under any model, switched off smoothly.

The Ziegler-Biersack-Littmark universal screened nuclear repulsion (J. F. Ziegler,
J. P. Biersack and U. Littmark, The Stopping and Range of Ions in Solids, Pergamon 1985,
ch. 2) between nuclei of charges Z_i, Z_j at distance r:

    E_ZBL(r) = Z_i Z_j e^2 / (4 pi eps0 r) * phi(r / a),
    a = 0.46850 A / (Z_i^0.23 + Z_j^0.23)                  (0.8854 a0, universal length)
    phi(x) = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x}
           + 0.28022 e^{-0.40290 x} + 0.02817 e^{-0.20162 x}

with e^2 / (4 pi eps0) = Hartree * Bohr = 14.399645 eV A (ase.units). It is the energy a
network never sees in its training data (atoms closer than any equilibrium bond): added
under the model, high-energy collisions and strongly compressed cells meet the screened
Coulomb wall instead of the network's extrapolation.

The pair energy is multiplied by a switch s(r) that is 1 below ``r_inner`` and 0 beyond
``r_outer``, the quintic smootherstep in between: with t = (r - r_inner)/(r_outer - r_inner),
s = 1 - t^3 (10 - 15 t + 6 t^2), whose first and second derivatives vanish at both ends
(C2: forces and Hessians continuous). The radii are the user's, in Angstrom (defaults
0.5 and 1.5: well below the bonds of the metals the shipped models cover, near H-H and
C-H bonds, where smaller radii suit better); ``r_outer`` must not exceed the model's
cutoff, so the model's own neighbour list holds every pair it needs. Each pair's energy
goes half to each of its two atoms (the list holds both directions i->j and j->i), so
per-atom energies and per-atom stresses stay consistent with the total.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ase import units
from torch import nn

from . import keys
from .graph import Graph
from .nn import scatter_sum

#: e^2 / (4 pi eps0) in eV A (the Hartree times the Bohr radius): 14.399645
COULOMB = units.Hartree * units.Bohr
#: ZBL's universal screening length prefactor, A (0.8854 a0)
SCREENING_LENGTH = 0.46850
SCREENING_EXPONENT = 0.23
#: the universal screening function's coefficients and exponents (ZBL 1985)
PHI_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
PHI_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)

DEFAULT_R_INNER = 0.5
DEFAULT_R_OUTER = 1.5


def zbl_pair_energy(r: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
    """The unswitched ZBL energy (eV) of pairs at distances ``r`` (A) with charges z_i, z_j
    (same shapes)."""
    z_i, z_j = z_i.to(r.dtype), z_j.to(r.dtype)
    a = SCREENING_LENGTH / (z_i**SCREENING_EXPONENT + z_j**SCREENING_EXPONENT)
    x = r / a
    phi = sum(c * torch.exp(-d * x) for c, d in zip(PHI_COEFFICIENTS, PHI_EXPONENTS))
    return COULOMB * z_i * z_j / r * phi


class ZBL(nn.Module):
    """ZBL repulsion switched off between ``r_inner`` and ``r_outer`` (Angstrom); see the
    module docstring. No parameters: it is the same in every dtype and adds nothing to the
    state dict.

    ``forward(graph)`` -> per-atom energies (n_atoms,) in eV, from the graph's
    EDGE_LENGTHS and ATOMIC_NUMBERS.
    """

    def __init__(self, r_inner: float = DEFAULT_R_INNER, r_outer: float = DEFAULT_R_OUTER):
        super().__init__()
        for name, value in (("r_inner", r_inner), ("r_outer", r_outer)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"ZBL {name} must be a finite distance >= 0 A, got {value!r}")
        if not r_inner < r_outer:
            raise ValueError(f"ZBL r_inner ({r_inner} A) must be below r_outer ({r_outer} A)")
        self.r_inner, self.r_outer = float(r_inner), float(r_outer)

    def extra_repr(self) -> str:
        return f"r_inner={self.r_inner}, r_outer={self.r_outer}"

    def config(self) -> dict[str, Any]:
        """The JSON-safe description the model file's manifest stores."""
        return {"type": "ZBL", "r_inner": self.r_inner, "r_outer": self.r_outer}

    def switch(self, r: torch.Tensor) -> torch.Tensor:
        """s(r): 1 below r_inner, 0 beyond r_outer, C2 quintic in between."""
        t = ((r - self.r_inner) / (self.r_outer - self.r_inner)).clamp(0.0, 1.0)
        return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)

    def pair_energy(self, r: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor
                    ) -> torch.Tensor:
        """The switched pair energy s(r) E_ZBL(r), eV."""
        return self.switch(r) * zbl_pair_energy(r, z_i, z_j)

    def forward(self, graph: Graph) -> torch.Tensor:
        centers, neighbors = graph[keys.EDGE_INDEX]
        numbers = graph[keys.ATOMIC_NUMBERS]
        r = graph[keys.EDGE_LENGTHS]
        close = torch.nonzero(r < self.r_outer).squeeze(1)  # the others contribute 0
        centers, neighbors = centers.index_select(0, close), neighbors.index_select(0, close)
        energy = self.pair_energy(r.index_select(0, close), numbers.index_select(0, centers),
                                  numbers.index_select(0, neighbors))
        # each pair appears as i->j and j->i: half of its energy on each centre
        return scatter_sum(0.5 * energy, centers, graph[keys.POSITIONS].shape[0])


def repulsion_from_config(config: dict[str, Any] | None) -> ZBL | None:
    """The repulsion a manifest's ``repulsion`` entry describes (None: none)."""
    if config is None:
        return None
    if not isinstance(config, dict) or config.get("type") != "ZBL":
        raise ValueError(f"unknown repulsion {config!r}; this ase-mpnn knows type 'ZBL'")
    options = {k: v for k, v in config.items() if k != "type"}
    unknown = sorted(set(options) - {"r_inner", "r_outer"})
    if unknown:
        raise ValueError(f"unknown ZBL option(s) {unknown}; valid: r_inner, r_outer")
    return ZBL(**options)
