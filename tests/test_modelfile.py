"""The model file: manifest, atomic writes, safe loading, and every way it can be broken."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from ase_mpnn import (
    ModelFileError,
    MPNNCalculator,
    UnknownArchitectureError,
    load_model,
    read_manifest,
    save_model,
)
from ase_mpnn.modelfile import (
    FORMAT_VERSION,
    MANIFEST,
    PLAIN_FORMAT_VERSION,
    WEIGHTS,
    atomic_write_bytes,
    content_checksum,
)


def rewrite(path, manifest=None, weights=None):
    """Rewrite a model file with a changed manifest and/or weights (the weights' hash left as
    it was). A changed manifest gets a matching content checksum, as a writer with a bug
    would give it, so that the checks behind the checksum are tested."""
    with zipfile.ZipFile(path) as archive:
        old_manifest, old_weights = json.loads(archive.read(MANIFEST)), archive.read(WEIGHTS)
    if manifest is not None and "content_sha256" in manifest:
        manifest = {**manifest, "content_sha256": content_checksum(manifest, old_weights)}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(MANIFEST, json.dumps(manifest if manifest is not None else old_manifest))
        archive.writestr(WEIGHTS, weights if weights is not None else old_weights)
    return old_manifest, old_weights


@pytest.fixture()
def model_file(potential, tmp_path):
    return save_model(potential, tmp_path / "model.mpnn")


def test_manifest_describes_the_model(model_file, potential):
    manifest = read_manifest(model_file)
    # a model without an add-on energy term is written in the oldest format that holds it
    assert manifest["format"] == "ase-mpnn-model" and \
        manifest["format_version"] == PLAIN_FORMAT_VERSION
    assert manifest["architecture"] == "SchNet" and manifest["species"] == ["Cu", "Ni"]
    assert manifest["cutoff"] == potential.cutoff
    assert manifest["units"]["energy"] == "eV" and manifest["units"]["length"] == "Angstrom"
    assert manifest["hyperparameters"]["n_interactions"] == 3
    assert len(manifest["weights_sha256"]) == 64 and manifest["package_version"]
    assert manifest["n_parameters"] == sum(p.numel() for p in potential.parameters())


def test_weights_are_a_plain_state_dict(model_file):
    with zipfile.ZipFile(model_file) as archive:
        state = torch.load(io.BytesIO(archive.read(WEIGHTS)), weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "scale" in state and "reference_energies" in state


def test_roundtrip_preserves_float64_weights(potential, tmp_path):
    # a copy: .double() works in place and the session fixture must stay float32
    model = copy.deepcopy(potential.model)
    precise = type(potential)(model, reference_energies=[-3.123456789012345, 1.0]).double()
    loaded = load_model(save_model(precise, tmp_path / "p.mpnn"))
    for (name, a), b in zip(precise.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert next(loaded.model.parameters()).dtype == torch.float64


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]  # no temp files left


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no model file .*nope.mpnn.*built-in models"):
        load_model(tmp_path / "nope.mpnn")
    with pytest.raises(ModelFileError, match="nope.mpnn"):
        MPNNCalculator(tmp_path / "nope.mpnn")


def test_truncated_file(model_file):
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(model_file)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "x.mpnn"
    path.write_text("hello")
    with pytest.raises(ModelFileError):
        load_model(path)


def test_tampered_weights(model_file):
    with zipfile.ZipFile(model_file) as archive:
        state = torch.load(io.BytesIO(archive.read(WEIGHTS)), weights_only=True)
    state["scale"] = state["scale"] * 2
    buffer = io.BytesIO()
    torch.save(state, buffer)
    rewrite(model_file, weights=buffer.getvalue())
    with pytest.raises(ModelFileError, match="sha256.*modified or damaged"):
        load_model(model_file)


def test_unknown_architecture(model_file):
    manifest = read_manifest(model_file)
    rewrite(model_file, manifest={**manifest, "architecture": "Transformer9000"})
    with pytest.raises(UnknownArchitectureError, match="Transformer9000.*SchNet"):
        load_model(model_file)


def test_newer_format_version(model_file):
    manifest = read_manifest(model_file)
    rewrite(model_file, manifest={**manifest, "format_version": FORMAT_VERSION + 1})
    with pytest.raises(ModelFileError, match="upgrade ase-mpnn"):
        load_model(model_file)


def test_manifest_that_does_not_fit_the_weights(model_file):
    manifest = read_manifest(model_file)
    manifest["hyperparameters"]["n_interactions"] = 5
    rewrite(model_file, manifest=manifest)
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(model_file)


def test_load_maps_to_cpu_and_requested_dtype(model_file, cu_cell):
    potential = load_model(model_file, device="cpu", dtype="float64")
    assert next(potential.parameters()).dtype == torch.float64
    assert not potential.training
    calc = MPNNCalculator(model_file, dtype="float64")
    cu_cell.calc = calc
    assert np.isfinite(cu_cell.get_potential_energy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_saved_from_cuda_loads_on_cpu(potential, tmp_path):
    import copy

    on_gpu = copy.deepcopy(potential).to("cuda")
    loaded = load_model(save_model(on_gpu, tmp_path / "gpu.mpnn"), device="cpu")
    assert all(t.device.type == "cpu" for t in loaded.state_dict().values())


def test_file_from_the_core_release_gives_the_same_results():
    """A model file written by the first layout of SchNet loads and reproduces its results."""
    from pathlib import Path

    from ase import Atoms

    data = Path(__file__).parent / "data"
    reference = json.loads((data / "schnet_core_v1.json").read_text())
    atoms = Atoms(reference["symbols"], positions=reference["positions"],
                  cell=reference["cell"], pbc=True)
    atoms.calc = MPNNCalculator(data / "schnet_core_v1.mpnn", dtype="float64")
    # the reference was computed with the Gaussian centres rounded to float32 (as the file
    # stores them); float64 now uses the exact grid, a change of a few 1e-10 eV
    assert atoms.get_potential_energy() == pytest.approx(reference["energy"], abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), reference["forces"], atol=1e-8)
    np.testing.assert_allclose(atoms.get_stress(), reference["stress"], atol=1e-10)


def test_saved_file_has_normal_permissions(model_file):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(model_file.stat().st_mode) == 0o666 & ~umask
