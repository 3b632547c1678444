"""``MPNNCalculator(..., compile=True)``: the ahead-of-time compiled potential, in-process.

The first use of a model (per weights, dtype, device, torch and ase-mpnn version, and
compiled-file format) compiles
energy, forces and stress with AOTInductor, as ``ase-mpnn compile`` does, into a ``.pt2``
file in a cache folder; later uses load that file in a second. Energy, forces and stress
of graphs the compiled program takes run compiled; everything else (Hessians, per-atom
stresses, create_graph for training) runs on the eager twin of the same weights.

Cache folder: ``$ASE_MPNN_CACHE``, else ``$XDG_CACHE_HOME/ase-mpnn``, else
``~/.cache/ase-mpnn``; files under ``compiled/``, written atomically (two processes that
compile at once both write a complete file, and the last one stays).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from . import keys
from ._cache import cache_dir
from ._version import __version__
from .compiled import FORMAT_VERSION, CompiledPotential, _check_compilable
from .compiled_check import CompiledCheckError, compile_checked
from .potential import Potential

log = logging.getLogger(__name__)

Graph = dict[str, torch.Tensor]


def cached_file(model_sha256: str, dtype: torch.dtype, device: torch.device) -> Path:
    """The cache file of one model's weights for one dtype, device and torch version."""
    dtype_name = str(dtype).replace("torch.", "")
    name = (f"{model_sha256[:20]}-{dtype_name}-{device.type}-torch{torch.__version__}-"
            f"ase-mpnn{__version__}-format{FORMAT_VERSION}.pt2").replace("+", "_")
    return cache_dir() / "compiled" / name


def is_compilable(potential: Any) -> bool:
    """True for a single model without charge or spin inputs (what AOT compiles)."""
    try:
        _check_compilable(potential)
    except ValueError:
        return False
    return True


def compiled_with_eager_twin(potential: Potential, model_sha256: str,
                             model_name: str = "") -> "CompiledWithEagerTwin | Potential":
    """``potential`` compiled ahead of time (from the cache, or compiled now into it); a
    program that fails its check (``ase_mpnn.compiled_check``) is not kept, and the model
    runs through torch.compile instead, with a warning."""
    weights = next(potential.parameters())
    path = cached_file(model_sha256, weights.dtype, weights.device)
    if not path.is_file():
        label = model_name or potential.architecture
        log.warning("compiling %s (%s, %s) ahead of time into %s: 20 s to 2 min, once",
                    label, weights.dtype, weights.device.type, path)
        try:
            compile_checked(potential, path, model_name=model_name,
                            model_sha256=model_sha256)
        except CompiledCheckError as exc:
            warnings.warn(f"{label}: {exc}; running its model through torch.compile instead",
                          RuntimeWarning, stacklevel=3)
            return potential.with_compiled_model()
    return CompiledWithEagerTwin(CompiledPotential(path, weights.device), potential)


class CompiledWithEagerTwin:
    """A compiled potential for energy, forces and stress, and its eager twin for the rest.

    Args:
        compiled: the AOTInductor program of ``eager``'s weights.
        eager: the same model, run eagerly (Hessians, per-atom stresses, training).
    """

    def __init__(self, compiled: CompiledPotential, eager: Potential):
        self.compiled, self._eager = compiled, eager

    def __getattr__(self, name: str) -> Any:
        # species, cutoff, architecture, manifest, outputs, parameters, ...: the eager's
        return getattr(self.__dict__["_eager"], name)

    def __call__(self, graph: Graph, forces: bool = True, stress: bool = False,
                 atomic_stresses: bool = False, create_graph: bool = False) -> Graph:
        """As ``Potential.__call__``: compiled when only energy, forces and stress are
        asked of a graph without global inputs (charge, spin), else eager."""
        eager_only = (atomic_stresses or create_graph or not forces
                      or keys.TOTAL_CHARGE in graph or keys.SPIN_MULTIPLICITY in graph)
        if eager_only:
            return self._eager(graph, forces=forces, stress=stress,
                               atomic_stresses=atomic_stresses, create_graph=create_graph)
        return self.compiled(graph, forces=True, stress=stress)

    def hessian(self, graph: Graph, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The eager twin's Hessian (a compiled backward cannot be differentiated again)."""
        return self._eager.hessian(graph, *args, **kwargs)

    def eager(self) -> Potential:
        """The eager twin."""
        return self._eager

    def with_compiled_model(self, **options: Any) -> "CompiledWithEagerTwin":
        """Itself: it is compiled already."""
        return self
