"""MPNNCalculator: the ASE calculator over any ase-mpnn potential.

One model call per structure fills every property: energy (= free_energy), per-atom
energies, forces and, for cells periodic in all three directions, stress; per-atom
stresses are added when asked for. The calculator reads only ``species``, ``cutoff`` and
the potential's outputs: it never branches on the architecture.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from . import keys
from ._version import __version__
from .errors import ModelFileError
from .graph import MIN_DISTANCE, collate
from .io import model_to_bytes, potential_from_bytes, read_file_bytes
from .models.base import AtomisticModel
from .potential import Potential
from .results import split_results
from .verlet import VerletNeighbors

ModelSource = str | os.PathLike | bytes | AtomisticModel | Potential

#: Verlet skin (Angstrom) of the calculator's neighbour list; see ase_mpnn.verlet
DEFAULT_SKIN = 0.5

_CACHE: dict[tuple, Potential] = {}
_CACHE_LOCK = threading.Lock()


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU; asking for CUDA without it is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA device")
    return device


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"float32"/"float64" (or the torch dtype) -> torch dtype."""
    names = {"float32": torch.float32, "float64": torch.float64}
    if isinstance(dtype, torch.dtype) and dtype in names.values():
        return dtype
    if dtype not in names:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return names[dtype]


def _frozen(potential: Potential, device: torch.device, dtype: torch.dtype) -> Potential:
    """An eval-mode copy on device/dtype whose weights need no gradient (inference only)."""
    potential = potential.to(device=device, dtype=dtype).eval()
    for parameter in potential.parameters():
        parameter.requires_grad_(False)
    return potential


def cached_potential(data: bytes, source: str, device: torch.device, dtype: torch.dtype) -> Potential:
    """Load model-file bytes once per process and (device, dtype); later calls share it."""
    key = (hashlib.sha256(data).hexdigest(), str(device), dtype)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _frozen(potential_from_bytes(data, source), device, dtype)
        return _CACHE[key]


def model_file_path(name_or_path: str | os.PathLike) -> Path:
    """The file behind a built-in model name or a path; a ModelFileError lists the names."""
    from .pretrained import list_models, model_path

    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    builtin = model_path(str(name_or_path))
    if builtin is not None:
        return builtin
    raise ModelFileError(
        f"no model file {str(name_or_path)!r} and no built-in model of that name; "
        f"built-in models: {', '.join(list_models()) or 'none'}"
    )


class MPNNCalculator(Calculator):
    """ASE calculator for message-passing neural-network potentials.

    Args:
        model: a built-in model name (``ase_mpnn.list_models()``), a model file path,
            model-file bytes, or an in-memory AtomisticModel/Potential.
            The calculator works on a frozen snapshot of an in-memory model's weights taken
            here (later training of the object does not change it), as when pickled.
        device: "auto" (CUDA if available), "cpu" or "cuda[:n]".
        dtype: "float32" (default: it passes the physics kit to float32 precision, and
            is 1.5-3x faster on CPU) or "float64" (phonons by small displacements, tight
            relaxations, comparisons to 1e-10); torch's global default is never changed.
        min_distance: atoms closer than this (Angstrom) are rejected as corrupt input.
        skin: Verlet skin, Angstrom: the neighbour list is built at cutoff + skin and reused
            between calls while no pair can have come within the cutoff unseen (MD steps,
            relaxation steps, NPT cell changes); 0 builds a fresh list on every call.
            Results are identical either way.
        compile: run the model through ``torch.compile`` (Potential.with_compiled_model):
            faster per call after a one-off compilation of tens of seconds, for long runs
            on one system; forces and stress still come from autograd outside the model.

    Results are float64 numpy arrays in eV, eV/A and eV/A^3 (Voigt xx yy zz yz xz xy).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "stresses"]

    def __init__(
        self,
        model: ModelSource,
        device: str = "auto",
        dtype: str = "float32",
        min_distance: float = MIN_DISTANCE,
        skin: float = DEFAULT_SKIN,
        compile: bool = False,  # noqa: A002 (the switch's name across the peers)
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._init_args = {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                           "min_distance": float(min_distance), "skin": float(skin),
                           "compile": bool(compile)}
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.min_distance = float(min_distance)
        self._source = model
        self.potential, name, manifest_hash = self._load(model)
        if compile:
            self.potential = self.potential.with_compiled_model()
        self.neighbors = VerletNeighbors(self.potential.cutoff, skin, self.potential.species,
                                         self.min_distance)
        self.parameters = {
            "model": name,
            "architecture": self.potential.model.architecture,
            "model_sha256": manifest_hash,
            "package": f"ase-mpnn {__version__}",
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "cutoff": self.potential.cutoff,
            "skin": float(skin),
            "compile": bool(compile),
            "species": list(self.potential.species),
        }

    def _load(self, model: ModelSource) -> tuple[Potential, str, str]:
        """(potential, display name, manifest sha256) for any accepted model source."""
        if isinstance(model, (AtomisticModel, Potential)):
            data = model_to_bytes(model)
            self._source = data  # the snapshot, for pickling
            potential = _frozen(potential_from_bytes(data), self.device, self.dtype)
            return potential, f"<in-memory {potential.model.architecture}>", potential.manifest_sha256
        if isinstance(model, bytes):
            potential = cached_potential(model, "model data", self.device, self.dtype)
            return potential, "<model bytes>", potential.manifest_sha256
        path = model_file_path(model)
        potential = cached_potential(read_file_bytes(path), str(path), self.device, self.dtype)
        return potential, str(model), potential.manifest_sha256

    # -- pickling and copying rebuild the calculator from its constructor arguments -------
    def __reduce__(self) -> tuple:
        source = self._source if isinstance(self._source, bytes) else str(self._source)
        return (_rebuild_calculator, (source, self._init_args))

    def __deepcopy__(self, memo: dict) -> "MPNNCalculator":
        function, args = self.__reduce__()
        return function(*args)

    # -- the calculation ---------------------------------------------------------------
    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(atoms.pbc.all())
        for name in ("stress", "stresses"):
            if name in properties and not periodic:
                raise PropertyNotImplementedError(
                    f"{name} needs a cell periodic in all three directions; pbc={atoms.pbc.tolist()}"
                )
        graph = collate([self.neighbors.arrays(atoms)], dtype=self.dtype, device=self.device)
        if self.neighbors.skin > 0:
            graph[keys.LIST_CUTOFF] = torch.tensor(self.neighbors.list_cutoff)
        out = self.potential(graph, forces=True, stress=periodic,
                             atomic_stresses="stresses" in properties)
        self.results = split_results(out, [len(atoms)], [periodic])[0]
        if keys.ATOMIC_STRESSES in out:
            self.results["stresses"] = full_3x3_to_voigt_6_stress(
                out[keys.ATOMIC_STRESSES].detach().to("cpu", torch.float64).numpy())

    def calculate_batch(self, structures: Sequence[Atoms], *, max_atoms: int | None = None,
                        errors: str = "raise", progress: bool = False) -> list[dict[str, Any]]:
        """Results of many structures, many per model call (``ase_mpnn.highthroughput``).

        Returns one dict per structure (energy, free_energy, energies, forces and, for 3-D
        periodic cells, stress), equal to calling this calculator on each in turn; with
        ``errors="store"`` a structure that fails its checks gets ``{"error": message}``.
        """
        from .highthroughput import MAX_ATOMS, evaluate

        return evaluate(structures, self, max_atoms=max_atoms or MAX_ATOMS,
                        min_distance=self.min_distance, errors=errors, progress=progress)


def _rebuild_calculator(source: str | bytes, init_args: dict[str, Any]) -> MPNNCalculator:
    """Unpickling hook: a fresh calculator from the constructor arguments."""
    return MPNNCalculator(source, **init_args)
