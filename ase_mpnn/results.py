"""Potential outputs (torch, batched) -> ASE results (float64 numpy, one dict per structure)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress

from . import keys


def split_results(out: dict[str, torch.Tensor], counts: Sequence[int],
                  periodic: Sequence[bool]) -> list[dict[str, Any]]:
    """Batched potential outputs -> one ASE-style results dict per structure (float64 numpy;
    eV, eV/A, Voigt eV/A^3 stress for structures periodic in all three directions)."""
    def numpy(key: str) -> np.ndarray:
        return out[key].detach().to("cpu", torch.float64).numpy()

    energy, energies, forces = numpy(keys.ENERGY), numpy(keys.ATOMIC_ENERGIES), numpy(keys.FORCES)
    stress = numpy(keys.STRESS) if keys.STRESS in out else None
    bounds = np.concatenate([[0], np.cumsum(counts)])
    results = []
    for k, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        result = {"energy": float(energy[k]), "free_energy": float(energy[k]),
                  "energies": energies[start:stop].copy(), "forces": forces[start:stop].copy()}
        if stress is not None and periodic[k]:
            result["stress"] = full_3x3_to_voigt_6_stress(stress[k])
        results.append(result)
    return results
