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
from .committee import Committee
from .errors import ModelFileError
from .models.base import AtomisticModel, architecture_class, build_model
from .potential import Potential, as_potential
from .repulsion import repulsion_from_config

FORMAT_NAME = "ase-mpnn-model"
#: the newest single-model version this package reads and writes: 2 adds an energy term
#: beside the network (``repulsion``, ZBL; or a ``dispersion`` record with "subtracted":
#: trained on D3-subtracted labels, D3 to be added back); a file without one is written as version 1
#: (PLAIN_FORMAT_VERSION), which older readers still load, while they refuse a version 2
#: file instead of silently dropping its repulsion. A committee file is version 2 (older
#: readers then ask for an upgrade instead of failing on a missing weights.pt)
FORMAT_VERSION = 2
PLAIN_FORMAT_VERSION = 1
COMMITTEE_FORMAT_VERSION = 2
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
    repulsion = getattr(potential, "repulsion", None)
    terms = {} if repulsion is None else {"repulsion": repulsion.config()}
    # an older reader would drop the repulsion, or not add D3 back, without a word
    needs_this_reader = bool(terms) or bool((extra.get("dispersion") or {}).get("subtracted"))
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION if needs_this_reader else PLAIN_FORMAT_VERSION,
        "architecture": model.architecture,
        "hyperparameters": dict(model.hyperparameters),
        "species": list(model.species),
        "cutoff": model.cutoff,
        "units": UNITS,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "n_parameters": sum(p.numel() for p in potential.parameters()),
        "package_version": __version__,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        **terms,
        **extra,
    }


def content_checksum(manifest: dict[str, Any], weights: bytes) -> str:
    """sha256 of the manifest (canonical JSON, without its own checksum entry) and weights."""
    body = {k: v for k, v in manifest.items() if k != "content_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical + b"\0" + weights).hexdigest()


def model_to_bytes(model: AtomisticModel | Potential | Committee, **extra: Any) -> bytes:
    """Serialise a model or potential to the bytes of a model file.

    ``extra`` adds JSON-safe entries to the manifest (e.g. training metadata).
    """
    if isinstance(model, Committee):
        return committee_to_bytes(model, **extra)
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


def save_model(model: AtomisticModel | Potential | Committee, path: str | os.PathLike,
               **extra: Any) -> Path:
    """Save a model, potential or committee to one file, atomically. Returns the path.

    ``extra`` adds JSON-safe entries to the manifest.
    """
    return atomic_write_bytes(path, model_to_bytes(model, **extra))


def _members_extra(potential: Potential) -> dict[str, Any]:
    """What a loaded member's manifest said beyond its architecture (name, metrics, ...)."""
    manifest = getattr(potential, "manifest", None) or {}
    return {k: manifest[k] for k in ("name", "test_metrics", "training") if k in manifest}


def committee_to_bytes(committee: Committee, **extra: Any) -> bytes:
    """Serialise a committee: one archive holding each member's model file and a manifest
    (members, their sha256, species, cutoff, calibration factors, ``extra``)."""
    members = [model_to_bytes(m, **_members_extra(m)) for m in committee.members]
    names = [f"members/{k}.mpnn" for k in range(len(members))]
    manifest = {
        "format": FORMAT_NAME,
        "format_version": COMMITTEE_FORMAT_VERSION,
        "kind": "committee",
        "architecture": committee.architecture,
        "members": names,
        "members_sha256": [hashlib.sha256(m).hexdigest() for m in members],
        "species": list(committee.species),
        "cutoff": committee.cutoff,
        "calibration": dict(committee.calibration),
        "units": UNITS,
        "n_parameters": sum(p.numel() for p in committee.parameters()),
        "package_version": __version__,
        **extra,
    }
    manifest["content_sha256"] = content_checksum(manifest, b"".join(members))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        for name, data in zip(names, members):
            archive.writestr(name, data)
    return buffer.getvalue()


def _read_archive(data: bytes, source: str) -> tuple[dict[str, Any], bytes, dict[str, bytes]]:
    """(manifest, manifest bytes, {entry name: bytes}) of a model file; checks the format,
    the version and every checksum."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            manifest_bytes = archive.read(MANIFEST)
            manifest = json.loads(manifest_bytes)
            names = (manifest.get("members", []) if isinstance(manifest, dict)
                     and manifest.get("kind") == "committee" else [WEIGHTS])
            entries = {name: archive.read(name) for name in names}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, EOFError,
            zipfile.LargeZipFile) as exc:
        raise ModelFileError(
            f"{source} is not a readable ase-mpnn model file (truncated or corrupt?): {exc}"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"{source} is not an ase-mpnn model file (no '{FORMAT_NAME}' manifest)")
    version = manifest.get("format_version")
    # a single model is format 1; a committee format 2 (a newer single model is unknown)
    readable = COMMITTEE_FORMAT_VERSION if manifest.get("kind") == "committee" \
        else FORMAT_VERSION
    if not isinstance(version, int) or version > readable:
        raise ModelFileError(
            f"{source} has model-file format version {version}, written by ase-mpnn "
            f"{manifest.get('package_version')}; this ase-mpnn {__version__} reads up to "
            f"version {readable} of this kind of file: upgrade ase-mpnn"
        )
    expected = manifest.get("members_sha256") if manifest.get("kind") == "committee" \
        else [manifest.get("weights_sha256")]
    if not isinstance(expected, list) or len(expected) != len(entries):
        raise ModelFileError(f"{source}: the manifest lists {len(entries)} entries but "
                             f"{expected!r} as their sha256: the file was modified or damaged")
    for (name, entry), want in zip(entries.items(), expected):
        digest = hashlib.sha256(entry).hexdigest()
        if digest != want:
            raise ModelFileError(
                f"{source}: the sha256 {digest[:12]}... of {name} does not match the "
                f"manifest's {str(want)[:12]}...: the file was modified or damaged")
    # files written before the content checksum existed carry only the weights' hash
    if "content_sha256" in manifest and content_checksum(
            manifest, b"".join(entries.values())) != manifest["content_sha256"]:
        raise ModelFileError(
            f"{source}: manifest.json does not match the checksum written with it (edited by "
            "hand? species, cutoff or hyper-parameters changed?): the file was modified or "
            "damaged; rebuild it with save_model")
    return manifest, manifest_bytes, entries


def potential_from_bytes(data: bytes, source: str = "model data") -> Potential | Committee:
    """Rebuild a Potential, or a Committee of them, (on the CPU, in the saved dtype, eval
    mode) from model-file bytes."""
    manifest, manifest_bytes, entries = _read_archive(data, source)
    if manifest.get("kind") == "committee":
        members = [potential_from_bytes(entry, f"{source}:{name}")
                   for name, entry in entries.items()]
        try:
            potential = Committee(members, manifest.get("calibration"))
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{source}: not a valid committee: {exc}") from exc
    else:
        potential = _single_potential(manifest, entries[WEIGHTS], source)
    potential.manifest = manifest
    potential.manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    return potential.eval()


def _single_potential(manifest: dict[str, Any], weights: bytes, source: str) -> Potential:
    """The Potential a single-model manifest and its weights describe."""
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
    try:
        potential = Potential(model, repulsion=repulsion_from_config(manifest.get("repulsion")))
    except ValueError as exc:
        raise ModelFileError(f"{source}: the manifest's repulsion is not valid: {exc}") from exc
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    try:
        potential.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"{source}: the weights do not fit the architecture the manifest describes: {exc}"
        ) from exc
    return potential


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
