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
        results.append(result)
    return results


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
