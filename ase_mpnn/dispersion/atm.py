"""The Axilrod-Teller-Muto three-body term of D3 (Grimme et al., J. Chem. Phys. 132,
154104, 2010, eqs. 14-16), with simple-dftd3's zero damping of it:

    E = sum_triangles C9 (3 cos a cos b cos c + 1) / (r_ij r_ik r_jk)^3
        * 1 / (1 + 6 ((4/3)^3 R_ij R_ik R_jk / (r_ij r_ik r_jk))^((alp + 2) / 3))

with C9 = s9 sqrt(C6_ij C6_ik C6_jk) in atomic units (sqrt(C6 C6 C6 / E_h) in eV, E_h the
Hartree energy), over every triangle of atoms (periodic images included) whose three
sides are within the three-body cutoff, each triangle once, a third of its energy to
each corner. Triangles are enumerated from the directed pair list: two neighbours
j + T_j, k + T_k of one atom i close a triangle when |r_k - r_j| is within the cutoff;
anchored at each of its corners a triangle appears three times, so each anchored
triangle carries a third.

The cost grows as (neighbours within 21 A)^2 per atom: fine for molecules and small cells,
heavy for large cells (simple-dftd3 itself took ten minutes for 1372 Cu atoms).
"""

from __future__ import annotations

import torch
from ase.units import Hartree

from ..nn import scatter_sum
from .pairs import ImagePairs
from .tables import D3Parameters, d3_tables


def _pair_index(a: torch.Tensor, b: torch.Tensor, pairs: ImagePairs,
                n_atoms: torch.Tensor) -> torch.Tensor:
    """Index into the atom pairs (i <= j, row-major upper triangle per structure) of the
    unordered pair {a, b} of atoms of the same structure."""
    counts = n_atoms.to(a.device)
    atom_offset = torch.cumsum(counts, 0) - counts
    pair_offset = torch.cumsum(counts * (counts + 1) // 2, 0) - counts * (counts + 1) // 2
    graph = torch.repeat_interleave(torch.arange(len(counts), device=a.device), counts)[a]
    low, high = torch.minimum(a, b) - atom_offset[graph], torch.maximum(a, b) - atom_offset[graph]
    n = counts[graph]
    return pair_offset[graph] + low * n - low * (low - 1) // 2 + (high - low)


def atm_energies(pairs: ImagePairs, minimum: torch.Tensor, trans: torch.Tensor,
                 numbers: torch.Tensor, n_atoms: torch.Tensor, c6: torch.Tensor,
                 cutoff: float, parameters: D3Parameters) -> torch.Tensor:
    """Three-body energies per atom (n_atoms,), eV (see the module docstring).

    Args:
        pairs: the image pairs, with hits within ``cutoff``; minimum, trans: their vectors.
        numbers: (n_atoms,) atomic numbers; n_atoms: (n_graphs,) atoms per structure.
        c6: (n_pairs,) C6 per atom pair, eV A^6.
    """
    pair, t = pairs.within[cutoff]
    vectors = minimum.index_select(0, pair) + trans.index_select(0, t)
    first, second = pairs.first[pair], pairs.second[pair]
    # directed edges i -> j + T, both directions of each listed pair
    centers = torch.cat([first, second])
    others = torch.cat([second, first])
    edge_pair = torch.cat([pair, pair])
    edge_vectors = torch.cat([vectors, -vectors])
    order = torch.argsort(centers, stable=True)
    centers, others, edge_pair = centers[order], others[order], edge_pair[order]
    edge_vectors = edge_vectors[order]
    with torch.no_grad():
        n = len(numbers)
        counts = torch.bincount(centers, minlength=n)
        starts = torch.cumsum(counts, 0) - counts
        per_edge = counts[centers]
        e1 = torch.repeat_interleave(torch.arange(len(centers), device=centers.device), per_edge)
        block_start = torch.repeat_interleave(torch.cumsum(per_edge, 0) - per_edge, per_edge)
        e2 = starts[centers[e1]] + torch.arange(len(e1), device=e1.device) - block_start
        keep = e1 < e2
        e1, e2 = e1[keep], e2[keep]
        third = edge_vectors.detach()[e2] - edge_vectors.detach()[e1]
        r2jk = (third * third).sum(-1)
        keep = (r2jk <= cutoff * cutoff) & (r2jk > 0)
        e1, e2 = e1[keep], e2[keep]
    vij, vik = edge_vectors[e1], edge_vectors[e2]
    vjk = vik - vij
    r2ij, r2ik, r2jk = (vij * vij).sum(-1), (vik * vik).sum(-1), (vjk * vjk).sum(-1)
    i, j, k = centers[e1], others[e1], others[e2]
    jk = _pair_index(j, k, pairs, n_atoms)
    # C9 ~ sqrt(C6_ij C6_ik C6_jk) holds in atomic units (Hartree); in eV it carries one
    # factor 1/sqrt(E_h) (the approximation is not dimensionally homogeneous)
    c6_product = torch.abs(c6[edge_pair[e1]] * c6[edge_pair[e2]] * c6[jk])
    c9 = parameters.s9 * torch.sqrt(c6_product / Hartree)
    rvdw = d3_tables(vij.dtype, vij.device).rvdw
    r0 = (4.0 / 3.0) ** 3 * rvdw[numbers[i], numbers[j]] * rvdw[numbers[i], numbers[k]] \
        * rvdw[numbers[j], numbers[k]]
    r2 = r2ij * r2ik * r2jk
    r1 = torch.sqrt(r2)
    r3 = r2 * r1
    damping = 1.0 / (1.0 + 6.0 * (r0 / r1) ** ((parameters.alp + 2.0) / 3.0))
    # 3 cos a cos b cos c from the law of cosines, over (r_ij r_ik r_jk)^3
    angular = 0.375 * (r2ij + r2jk - r2ik) * (r2ij - r2jk + r2ik) * (-r2ij + r2jk + r2ik) \
        / (r3 * r2) + 1.0 / r3
    energy = c9 * angular * damping / 3.0  # each triangle is anchored at its three corners
    return scatter_sum(energy, i, len(numbers))
