"""Small shims over ASE versions, and imports of optional packages (extras)."""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
from ase import Atoms
from ase.md.velocitydistribution import Stationary

from .errors import MissingDependencyError

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


def require(module: str, extra: str, needed_for: str, package: str | None = None) -> ModuleType:
    """Import the optional ``module``, or raise MissingDependencyError (an ImportError)
    naming the install command: ``"{needed_for} need {package}: pip install
    'ase-mpnn[{extra}]'"``.

    Args:
        module: dotted module name, e.g. ``"dask.distributed"``.
        extra: the ase-mpnn extra that installs it (a key of ``[project.optional-dependencies]``).
        needed_for: what needs it, plural, e.g. ``"phonons"``.
        package: the name users install, when it differs from the top-level module name.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = package or module.split(".")[0]
        raise MissingDependencyError(
            f"{needed_for} need {name}: pip install 'ase-mpnn[{extra}]'") from exc
