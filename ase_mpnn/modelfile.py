"""The model file: a zip archive holding ``manifest.json`` and ``weights.pt``.

``manifest.json`` is plain JSON (read it with ``unzip -p model.mpnn manifest.json``): format
name and version, architecture and hyper-parameters, species, cutoff, units, package
version, the sha256 of ``weights.pt`` and a checksum of the manifest's own content with
those weights (``content_sha256``), so that editing either part (species swapped, a cutoff
changed, weights replaced) makes the file refuse to load. The checks catch accidents and
damage, not a forger: anyone can recompute a sha256. ``weights.pt`` is a plain state dict
written by ``torch.save`` and read back with ``torch.load(weights_only=True)``: no pickled
modules, so loading never runs code and survives refactors. The module is rebuilt from the
manifest through the architecture table, then the weights are loaded strictly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .errors import ModelFileError
from .models.base import AtomisticModel, architecture_class, build_model
from .potential import Potential, as_potential

FORMAT_NAME = "ase-mpnn-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"}


def _state_dict_bytes(potential: Potential) -> bytes:
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in potential.state_dict().items()}
    torch.save(state, buffer)
    return buffer.getvalue()


def make_manifest(potential: Potential, weights: bytes, **extra: Any) -> dict[str, Any]:
    """The JSON-safe description of a potential whose state dict serialises to ``weights``."""
    model = potential.model
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": model.architecture,
        "hyperparameters": dict(model.hyperparameters),
        "species": list(model.species),
        "cutoff": model.cutoff,
        "units": UNITS,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "n_parameters": sum(p.numel() for p in potential.parameters()),
        "package_version": __version__,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        **extra,
    }


def content_checksum(manifest: dict[str, Any], weights: bytes) -> str:
    """sha256 of the manifest (canonical JSON, without its own checksum entry) and weights."""
    body = {k: v for k, v in manifest.items() if k != "content_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical + b"\0" + weights).hexdigest()


def model_to_bytes(model: AtomisticModel | Potential, **extra: Any) -> bytes:
    """Serialise a model or potential to the bytes of a model file.

    ``extra`` adds JSON-safe entries to the manifest (e.g. training metadata).
    """
    potential = as_potential(model)
    weights = _state_dict_bytes(potential)
    manifest = make_manifest(potential, weights, **extra)
    manifest["content_sha256"] = content_checksum(manifest, weights)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        archive.writestr(WEIGHTS, weights)
    return buffer.getvalue()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_model(model: AtomisticModel | Potential, path: str | os.PathLike, **extra: Any) -> Path:
    """Save a model (or potential) to one file, atomically. Returns the path.

    ``extra`` adds JSON-safe entries to the manifest.
    """
    return atomic_write_bytes(path, model_to_bytes(model, **extra))


def _read_archive(data: bytes, source: str) -> tuple[dict[str, Any], bytes, bytes]:
    """(manifest, manifest bytes, weights bytes) of a model file's contents; checks format."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            manifest_bytes = archive.read(MANIFEST)
            weights = archive.read(WEIGHTS)
        manifest = json.loads(manifest_bytes)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, EOFError,
            zipfile.LargeZipFile) as exc:
        raise ModelFileError(
            f"{source} is not a readable ase-mpnn model file (truncated or corrupt?): {exc}"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"{source} is not an ase-mpnn model file (no '{FORMAT_NAME}' manifest)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{source} has model-file format version {version}, written by ase-mpnn "
            f"{manifest.get('package_version')}; this ase-mpnn {__version__} reads up to "
            f"version {FORMAT_VERSION}: upgrade ase-mpnn"
        )
    digest = hashlib.sha256(weights).hexdigest()
    if digest != manifest.get("weights_sha256"):
        raise ModelFileError(
            f"{source}: the weights' sha256 {digest[:12]}... does not match the manifest's "
            f"{str(manifest.get('weights_sha256'))[:12]}...: the file was modified or damaged"
        )
    # files written before the content checksum existed carry only the weights' hash
    if "content_sha256" in manifest and content_checksum(manifest, weights) != manifest[
            "content_sha256"]:
        raise ModelFileError(
            f"{source}: manifest.json does not match the checksum written with it (edited by "
            "hand? species, cutoff or hyper-parameters changed?): the file was modified or "
            "damaged; rebuild it with save_model")
    return manifest, manifest_bytes, weights


def potential_from_bytes(data: bytes, source: str = "model data") -> Potential:
    """Rebuild a Potential (on the CPU, in the saved dtype, eval mode) from model-file bytes."""
    manifest, manifest_bytes, weights = _read_archive(data, source)
    architecture_class(manifest["architecture"])  # unknown names: UnknownArchitectureError
    dtype = manifest.get("dtype", "float32")
    if dtype not in ("float32", "float64"):
        raise ModelFileError(f"{source}: unsupported dtype {dtype!r} in the manifest")
    try:
        model = build_model(manifest["architecture"], manifest["species"], manifest["cutoff"],
                            **manifest["hyperparameters"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(
            f"{source}: the manifest does not describe a valid model: {exc}") from exc
    model.to(dtype=getattr(torch, dtype))  # the saved precision; E0 etc. stay float64
    potential = Potential(model)
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    try:
        potential.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"{source}: the weights do not fit the architecture the manifest describes: {exc}"
        ) from exc
    potential.manifest = manifest
    potential.manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    return potential.eval()


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a model file, with a clear error when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc}") from exc


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a model file, after checking format and weights hash."""
    return _read_archive(read_file_bytes(path), str(path))[0]
