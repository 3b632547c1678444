"""Potential outputs -> ASE results, and ASE results -> a structure that keeps them.

``to_ase_results`` turns batched potential outputs (torch) into one ASE results dict per
structure (float64 numpy; eV, eV/A, Voigt eV/A^3). ``attach_results`` gives an Atoms a
``SinglePointCalculator`` holding such results, the one way every batch, simulation and
workflow of this package hands back a structure with its energy, forces and stress.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from . import keys
from .graph.batching import unbatch

#: the ASE properties a stored result keeps (those the structure's calculator computed)
RESULT_PROPERTIES = ("energy", "free_energy", "energies", "forces", "stress", "stresses")

#: a committee's results (ase_mpnn.committee): members' values, first axis the member, as
#: mace-torch names them, and calibrated standard deviations
COMMITTEE_PROPERTIES = ("energy_comm", "forces_comm", "stress_comm", "energy_std",
                        "energies_std", "forces_std", "stress_std")


def to_ase_results(out: dict[str, torch.Tensor], n_atoms: Sequence[int],
                   periodic: Sequence[bool]) -> list[dict[str, Any]]:
    """Batched potential outputs -> one ASE results dict per structure.

    Each dict holds energy and free_energy (eV, float), energies (n,) eV, forces (n, 3)
    eV/A and, for structures periodic in all three directions, stress (6,) and, when the
    potential computed them, stresses (n, 6): Voigt xx yy zz yz xz xy, eV/A^3.
    """
    results = []
    for part, is_periodic in zip(unbatch(out, n_atoms), periodic):
        energy = float(part[keys.ENERGY])
        result = {"energy": energy, "free_energy": energy,
                  "energies": part[keys.ATOMIC_ENERGIES], "forces": part[keys.FORCES]}
        if is_periodic and keys.STRESS in part:
            result["stress"] = full_3x3_to_voigt_6_stress(part[keys.STRESS])
        if is_periodic and keys.ATOMIC_STRESSES in part:
            result["stresses"] = full_3x3_to_voigt_6_stress(part[keys.ATOMIC_STRESSES])
        if keys.COMMITTEE_ENERGY in part:
            result.update(_committee_results(part, is_periodic))
        results.append(result)
    return results


def _committee_results(part: dict[str, np.ndarray], periodic: bool) -> dict[str, Any]:
    """One structure's committee fields -> ASE results (members first, Voigt stresses).

    energy_comm (n_members,) eV, forces_comm (n_members, n, 3) eV/A, stress_comm
    (n_members, 6) eV/A^3; energy_std eV, energies_std (n,) eV, forces_std (n,) eV/A,
    stress_std (6,) eV/A^3.
    """
    result = {"energy_comm": part[keys.COMMITTEE_ENERGY],
              "energy_std": float(part[keys.ENERGY_STD]),
              "energies_std": part[keys.ATOMIC_ENERGIES_STD]}
    if keys.COMMITTEE_FORCES in part:
        result["forces_comm"] = np.moveaxis(part[keys.COMMITTEE_FORCES], -1, 0)
        result["forces_std"] = part[keys.FORCES_STD]
    if periodic and keys.COMMITTEE_STRESS in part:
        members = np.moveaxis(part[keys.COMMITTEE_STRESS], -1, 0)
        result["stress_comm"] = np.array([full_3x3_to_voigt_6_stress(s) for s in members])
        result["stress_std"] = full_3x3_to_voigt_6_stress(part[keys.STRESS_STD])
    return result


def ase_properties(outputs: Sequence[str]) -> list[str]:
    """The ASE results a potential with these output keys can give."""
    names = list(RESULT_PROPERTIES)
    if keys.ATOMIC_STRESSES not in outputs:  # e.g. a potential with add-on terms
        names.remove("stresses")
    if keys.COMMITTEE_ENERGY in outputs:
        names += COMMITTEE_PROPERTIES
    return names


def attach_results(atoms: Atoms, results: dict[str, Any] | None = None, *,
                   copy: bool = True) -> Atoms:
    """``atoms`` (a copy, unless ``copy=False``) with ``results`` as a SinglePointCalculator.

    Args:
        atoms: the structure.
        results: an ASE results dict; default: the results of ``atoms.calc``, so a
            structure keeps what its (shared, moving-on) calculator computed for it.
        copy: attach to a copy (default) or to ``atoms`` itself.

    Only RESULT_PROPERTIES are kept; the usual getters (``get_potential_energy``,
    ``get_forces``, ``get_stress``, ...) then read them without recomputing.
    """
    if results is None:
        results = atoms.calc.results if atoms.calc is not None else {}
    target = atoms.copy() if copy else atoms
    kept = {name: results[name] for name in RESULT_PROPERTIES if name in results}
    target.calc = SinglePointCalculator(target, **kept)
    return target


def is_finite(results: dict[str, Any]) -> bool:
    """True when every number in an ASE results dict is finite."""
    return all(bool(np.all(np.isfinite(results[name])))
               for name in RESULT_PROPERTIES if name in results)
