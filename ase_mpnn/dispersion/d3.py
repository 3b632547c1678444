"""The D3(BJ) dispersion energy in torch, per atom, for molecules, slabs and bulk cells.

Grimme, Antony, Ehrlich, Krieg, J. Chem. Phys. 132, 154104 (2010) (D3) with the rational
Becke-Johnson damping of Grimme, Ehrlich, Goerigk, J. Comput. Chem. 32, 1456 (2011):

    CN_i   = sum_{j,T; r <= r_cn} 1 / (1 + exp(-k1 (R_cov,ij / r - 1)))          k1 = 16
    w_ia   = exp(-k3 (CN_i - CN_ref,ia)^2) / sum_b exp(-k3 (CN_i - CN_ref,ib)^2)  k3 = 4
    C6_ij  = sum_ab w_ia w_jb C6_ref(Z_i, Z_j, a, b),     C8_ij = 3 C6_ij Q_i Q_j
    E      = -sum_{i<=j, T; r <= r_2} C6_ij [s6 / (r^6 + R0^6) + s8 3 Q_i Q_j / (r^8 + R0^8)]
    R0_ij  = a1 sqrt(3 Q_i Q_j) + a2

with r = |x_j - x_i + T @ cell| over lattice translations T, and the three-body
Axilrod-Teller-Muto term (optional, s9 != 0) over triangles within r_3:

    E_ijk = s9 sqrt(C6_ij C6_ik C6_jk) (3 cos a cos b cos c + 1) / (r_ij r_ik r_jk)^3
            / (1 + 6 ((4/3)^3 R_ij R_ik R_jk / (r_ij r_ik r_jk))^(16/3))

(R: the D3 pair van der Waals radii; s-dftd3's conventions, which the tests check).
C6 depends on the atom pair, not on the image: it is computed once per atom pair, and only
the damping is evaluated per image. The weights are a softmax over each element's
references: the same numbers as the normalised Gaussians, without their underflow.
Cutoffs are hard, as in simple-dftd3 (defaults 60, 40 and 40 Bohr).
"""

from __future__ import annotations

import torch

from .. import keys
from ..nn import scatter_sum
from .imagesum import pair_sums
from .kernels import bj_damping, d3_counting
from .pairs import ImagePairs, image_pairs
from .tables import (
    CN_CUTOFF,
    DISP2_CUTOFF,
    DISP3_CUTOFF,
    K1_COUNTING,
    K3_WEIGHTING,
    MAX_Z,
    D3Parameters,
    d3_tables,
    d3bj_parameters,
)


def pair_vectors(pairs: ImagePairs, positions: torch.Tensor,
                 cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(minimum-image vectors (n_pairs, 3), translation vectors (n_trans, 3)), Angstrom,
    differentiable with respect to ``positions`` (n_atoms, 3) and ``cell`` (n_graphs, 3, 3)."""
    wrap = torch.einsum("pi,pij->pj", pairs.wrap.to(cell.dtype), cell[pairs.pair_graph])
    minimum = (positions.index_select(0, pairs.second) - positions.index_select(0, pairs.first)
               + wrap)
    trans = torch.einsum("ti,tij->tj", pairs.shifts.to(cell.dtype), cell[pairs.shift_graph])
    return minimum, trans


class D3Dispersion:
    """D3(BJ) dispersion as an energy term: per-atom energies of a graph, in eV.

    Args:
        functional: the functional whose damping parameters to use (``list_functionals``).
        three_body: add the ATM three-body term (s9 = 1), as simple-dftd3's ``atm=True``.
        cutoff: two-body cutoff, Angstrom (simple-dftd3's 60 Bohr).
        cn_cutoff: coordination-number cutoff, Angstrom (40 Bohr).
        three_body_cutoff: ATM cutoff, Angstrom (40 Bohr).

    ``per_atom_energies(graph)`` reads ATOMIC_NUMBERS, POSITIONS, CELL, PBC, N_ATOMS and
    BATCH; inside ``ase_mpnn.potential``'s autograd pass POSITIONS and CELL are the strained
    ones, so forces and stress come out with the rest. No weights: nothing to train or save.
    """

    def __init__(self, functional: str = "pbe", three_body: bool = False,
                 cutoff: float = DISP2_CUTOFF, cn_cutoff: float = CN_CUTOFF,
                 three_body_cutoff: float = DISP3_CUTOFF):
        self.parameters: D3Parameters = d3bj_parameters(functional, three_body)
        self.three_body = bool(three_body)
        self.cutoff, self.cn_cutoff = float(cutoff), float(cn_cutoff)
        self.three_body_cutoff = float(three_body_cutoff)

    def settings(self) -> dict:
        """JSON-safe description (the calculator's ``dispersion`` parameter)."""
        return {"functional": self.parameters.functional, "three_body": self.three_body}

    def __repr__(self) -> str:
        return f"D3Dispersion(functional={self.parameters.functional!r}, " \
               f"three_body={self.three_body})"

    def cutoffs(self) -> list[float]:
        found = [self.cutoff, self.cn_cutoff]
        return found + [self.three_body_cutoff] if self.three_body else found

    def per_atom_energies(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """E_i (n_atoms,), eV, of the batched graph."""
        numbers = graph[keys.ATOMIC_NUMBERS]
        if len(numbers) and int(numbers.max()) > MAX_Z:
            raise ValueError(f"D3 has no reference data beyond Z = {MAX_Z}, got Z = "
                             f"{int(numbers.max())}")
        positions, cell = graph[keys.POSITIONS], graph[keys.CELL]
        listed = [self.three_body_cutoff] if self._with_three_body() else []
        pairs = image_pairs(positions, cell, graph[keys.PBC], graph[keys.N_ATOMS],
                            self.cutoffs(), listed)
        minimum, trans = pair_vectors(pairs, positions, cell)
        tables = d3_tables(positions.dtype, positions.device)
        c6 = self._pair_c6(pairs, minimum, trans, numbers, tables)
        energies = self._two_body(pairs, minimum, trans, numbers, tables, c6)
        if self._with_three_body():
            from .atm import atm_energies

            energies = energies + atm_energies(pairs, minimum, trans, numbers,
                                               graph[keys.N_ATOMS], c6,
                                               self.three_body_cutoff, self.parameters)
        return energies

    def _with_three_body(self) -> bool:
        return self.three_body and self.parameters.s9 != 0

    def _pair_c6(self, pairs: ImagePairs, minimum: torch.Tensor, trans: torch.Tensor,
                 numbers: torch.Tensor, tables) -> torch.Tensor:
        """C6_ij (n_pairs,) eV A^6 of each atom pair, from the coordination numbers."""
        n_atoms = len(numbers)
        radius = tables.rcov[numbers[pairs.first]] + tables.rcov[numbers[pairs.second]]
        count = pair_sums(d3_counting(K1_COUNTING), pairs, minimum, trans, radius[:, None],
                          self.cn_cutoff)
        # each listed pair counts for both atoms (an atom and its image: twice, T and -T)
        cn = scatter_sum(count, pairs.first, n_atoms) + scatter_sum(count, pairs.second, n_atoms)
        reference_cn = tables.cn[numbers]  # (n_atoms, 7)
        logits = -K3_WEIGHTING * (cn[:, None] - reference_cn) ** 2
        logits = logits.masked_fill(reference_cn < 0, float("-inf"))
        weights = torch.softmax(logits, dim=-1)  # (n_atoms, 7)
        # contract with the first atom's weights per element present: g (n_atoms, S, 7)
        elements, element_index = torch.unique(numbers, return_inverse=True)
        blocks = tables.c6[numbers[:, None], elements[None, :]]  # (n_atoms, S, 7, 7)
        g = torch.einsum("na,nsab->nsb", weights, blocks)
        n_elements = len(elements)
        rows = g.reshape(-1, g.shape[-1]).index_select(
            0, pairs.first * n_elements + element_index[pairs.second])
        return (rows * weights.index_select(0, pairs.second)).sum(-1)

    def _two_body(self, pairs: ImagePairs, minimum: torch.Tensor, trans: torch.Tensor,
                  numbers: torch.Tensor, tables, c6: torch.Tensor) -> torch.Tensor:
        """Two-body BJ-damped energies per atom (n_atoms,), eV, half of each pair to each."""
        p = self.parameters
        q = tables.r4r2[numbers]
        qq = 3.0 * q[pairs.first] * q[pairs.second]  # C8 / C6 per atom pair, A^2
        r0 = p.a1 * torch.sqrt(qq) + p.a2
        static = torch.stack([r0**6, r0**8, p.s8 * qq], dim=-1)  # (n_pairs, 3)
        summed = pair_sums(bj_damping(p.s6), pairs, minimum, trans, static, self.cutoff)
        pair_energy = -0.5 * c6 * summed
        n_atoms = len(numbers)
        return (scatter_sum(pair_energy, pairs.first, n_atoms)
                + scatter_sum(pair_energy, pairs.second, n_atoms))


def with_dispersion(potential, functional: str = "pbe", three_body: bool = False,
                    **cutoffs: float):
    """``potential`` (a model, Potential or Committee) plus D3(BJ) dispersion, evaluated in
    one autograd pass (``ase_mpnn.addons.WithAddOns``); ``cutoffs`` as D3Dispersion's."""
    from ..addons import WithAddOns
    from ..potential import as_potential

    return WithAddOns(as_potential(potential), [D3Dispersion(functional, three_body, **cutoffs)])
