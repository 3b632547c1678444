"""Model sources -> potentials: the one place a name, path, bytes or object becomes a
Potential on a device and in a dtype.

Everything that runs a model (the calculator, batched evaluation and relaxation, Dask
workers, the command line, ``load_model``) comes through here, so defaults and caching are
the same everywhere:

* ``DEFAULT_DTYPE`` is float32 for every entry point; workflows that need float64
  (phonons by small displacements, equations of state, comparisons to 1e-10) ask for it.
* ``load_potential`` reads a model file once per process and (device, dtype) and hands
  out the same frozen (eval-mode, no-gradient) potential to every caller.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import NamedTuple, Sequence, Union

import torch
from ase.calculators.calculator import Calculator

from .addons import WithAddOns
from .committee import Committee
from .compiled import CompiledPotential, is_compiled_file, read_compiled_manifest
from .compiled_cache import CompiledWithEagerTwin
from .errors import ModelFileError
from .modelfile import model_to_bytes, potential_from_bytes, read_file_bytes, save_model
from .models.base import AtomisticModel
from .potential import Potential, as_potential
from .pretrained import list_models, model_path

#: one model: a built-in model's name, a model-file path, model-file bytes, or an in-memory
#: model, potential or committee
OneSource = Union[str, os.PathLike, bytes, AtomisticModel, Potential, Committee]
#: one model, or a list of them evaluated as a committee
ModelSource = Union[OneSource, Sequence[OneSource]]

#: the floating-point precision of every entry point unless a caller asks otherwise
DEFAULT_DTYPE = "float32"
DTYPES = {"float32": torch.float32, "float64": torch.float64}

_CACHE: dict[tuple, Potential] = {}
_CACHE_LOCK = threading.Lock()


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU; asking for CUDA without it is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]', got {device!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA device")
    return device


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"float32"/"float64" (or the torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: str | torch.dtype) -> str:
    """"float32" or "float64" for a name or torch dtype."""
    return str(resolve_dtype(dtype)).replace("torch.", "")


def model_file_path(name_or_path: str | os.PathLike) -> Path:
    """The file behind a built-in model name or a path; a ModelFileError lists the names."""
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


def freeze(potential: Potential | Committee, device: torch.device,
           dtype: torch.dtype) -> Potential | Committee:
    """``potential`` on device/dtype in eval mode, its weights needing no gradient."""
    potential = potential.to(device=device, dtype=dtype).eval()
    for parameter in potential.parameters():
        parameter.requires_grad_(False)
    return potential


def _cached(data: bytes, source: str, device: torch.device,
            dtype: torch.dtype) -> Potential | Committee:
    """Load model-file bytes once per process and (device, dtype); later calls share it."""
    key = (hashlib.sha256(data).hexdigest(), str(device), dtype)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = freeze(potential_from_bytes(data, source), device, dtype)
        return _CACHE[key]


class LoadedPotential(NamedTuple):
    """A frozen potential and where it came from.

    Attributes:
        potential: eval mode, no gradients, on the requested device and dtype.
        name: the model's display name (built-in name, path, or a description).
        sha256: sha256 of the model file's manifest (identifies the model and its weights).
        data: the model-file bytes when the source was bytes or an in-memory object (a
            snapshot that recreates it anywhere), else None.
    """

    potential: Potential | Committee
    name: str
    sha256: str
    data: bytes | None


def load(source: ModelSource, device: str | torch.device = "auto",
         dtype: str | torch.dtype = DEFAULT_DTYPE) -> LoadedPotential:
    """Any model source -> a frozen potential with its name and manifest hash.

    Files and bytes are cached per process; an in-memory model is snapshotted (its later
    training does not change the result) and not cached. A list or tuple of sources is
    loaded as a Committee of them (uncalibrated: std factors 1).
    """
    if is_compiled_file(source):
        return _load_compiled(Path(source).expanduser().resolve(), device, dtype)
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    if isinstance(source, (list, tuple)):
        return _committee_of(source, device, dtype)
    if isinstance(source, (AtomisticModel, Potential, Committee)):
        data = model_to_bytes(source)
        potential = freeze(potential_from_bytes(data), device, dtype)
        name = f"<in-memory {potential.architecture}>"
        return LoadedPotential(potential, name, potential.manifest_sha256, data)
    if isinstance(source, bytes):
        potential = _cached(source, "model data", device, dtype)
        return LoadedPotential(potential, "<model bytes>", potential.manifest_sha256, source)
    path = model_file_path(source)
    potential = _cached(read_file_bytes(path), str(path), device, dtype)
    return LoadedPotential(potential, str(source), potential.manifest_sha256, None)


def _load_compiled(path: Path, device: str | torch.device,
                   dtype: str | torch.dtype) -> LoadedPotential:
    """A compiled model file (``ase_mpnn.compiled``), once per process and device; "auto"
    is the device it was compiled for; another dtype than its own is an error."""
    manifest = read_compiled_manifest(path)
    device = torch.device(manifest["device"]) if str(device) == "auto" \
        else resolve_device(device)
    if resolve_dtype(dtype) != resolve_dtype(manifest["dtype"]):
        raise ModelFileError(
            f"{path} was compiled for {manifest['dtype']}, asked for {dtype_name(dtype)}: "
            f"pass dtype={manifest['dtype']!r} or compile again with --dtype "
            f"{dtype_name(dtype)}")
    stat = path.stat()
    key = ("compiled", str(path), stat.st_mtime_ns, stat.st_size, str(device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = CompiledPotential(path, device)
        potential = _CACHE[key]
    return LoadedPotential(potential, str(path), potential.manifest_sha256, None)


def _committee_of(sources: Sequence[OneSource], device: torch.device,
                  dtype: torch.dtype) -> LoadedPotential:
    """Members loaded one by one (files cached and shared) as one Committee."""
    loaded = [load(source, device, dtype) for source in sources]
    committee = Committee([member.potential for member in loaded])
    shas = ",".join(member.sha256 for member in loaded)
    committee.manifest_sha256 = hashlib.sha256(shas.encode()).hexdigest()
    name = f"committee of {', '.join(member.name for member in loaded)}"
    if any(member.data is not None for member in loaded):  # a snapshot that pickles
        snapshot = load(model_to_bytes(committee), device, dtype)
        return snapshot._replace(name=name)
    return LoadedPotential(committee, name, committee.manifest_sha256, None)


def load_potential(source: ModelSource, device: str | torch.device = "auto",
                   dtype: str | torch.dtype = DEFAULT_DTYPE) -> Potential | Committee:
    """The frozen potential of any model source (see ``load``)."""
    return load(source, device, dtype).potential


def load_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> Potential | Committee:
    """Load a model file (or built-in model) as a trainable Potential (a Committee for a
    committee file) in eval mode.

    Unlike ``load_potential`` the result is a fresh object, not shared, whose weights
    keep ``requires_grad`` (for fine-tuning or inspection).

    Args:
        path: the file written by save_model, or a built-in model's name.
        device: where to put it (files saved on a GPU load on a CPU-only machine).
        dtype: "float32"/"float64" or a torch dtype; default: as saved.
    """
    path = model_file_path(path)
    potential = potential_from_bytes(read_file_bytes(path), str(path))
    return potential.to(device=device, dtype=None if dtype is None else resolve_dtype(dtype))



def potential_for(source: ModelSource, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None) -> Potential | Committee:
    """The potential batch code runs: a Potential already on the requested device and
    dtype (None: any) is used as it is, sharing its weights (``MPNNCalculator.potential``,
    compiled ones included; an MPNNCalculator itself stands for its potential); any other
    source goes through ``load_potential`` ("auto" and DEFAULT_DTYPE for None)."""
    if isinstance(source, Calculator) and getattr(source, "potential", None) is not None:
        source = source.potential
    if isinstance(source, (Potential, Committee, WithAddOns, CompiledPotential,
                           CompiledWithEagerTwin)):
        weights = next(source.parameters())
        if ((device is None or resolve_device(device) == weights.device)
                and (dtype is None or resolve_dtype(dtype) == weights.dtype)):
            return source
    return load_potential(source, "auto" if device is None else device,
                          DEFAULT_DTYPE if dtype is None else dtype)


def save_committee(members: Sequence[Potential | AtomisticModel | str | os.PathLike],
                   path: str | os.PathLike, calibration: dict[str, float] | None = None,
                   **extra) -> Path:
    """Save models (objects, model files or built-in names) as one committee file,
    atomically; ``calibration``: std scale factors {"energy"|"forces"|"stress": c}."""
    potentials = [as_potential(m) if isinstance(m, (Potential, AtomisticModel)) else
                  load_model(m) for m in members]
    return save_model(Committee(potentials, calibration), path, **extra)
