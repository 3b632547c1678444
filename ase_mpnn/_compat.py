"""Small shims over ASE versions."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.md.velocitydistribution import Stationary

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta as _thermalize
except ImportError:  # pragma: no cover - older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def _thermalize(atoms, temperature_K, rng=None):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


def thermalize(atoms: Atoms, temperature_K: float, seed: int | None = None) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` (K), zero total momentum."""
    _thermalize(atoms, temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
