"""Shared fixtures: a physically scaled random SchNet and the structures tests use."""

from __future__ import annotations

import os

import pytest
import torch
from ase import Atoms
from ase.build import bulk

from ase_mpnn import MPNNCalculator, Potential, native
from ase_mpnn.models import SchNet
from ase_mpnn.models.presets import build_preset
from ase_mpnn.testing import rattled_triclinic_cell, scale_to_force_rms

SPECIES = ["Cu", "Ni"]

#: the native kernels, built by ``make install`` into the user's cache, are loaded before
#: the session's cache folder (below) hides that cache; SchNet-like models then use them
NATIVE_KERNELS = native.available()

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one process per core: more torch threads than cores makes OpenMP spin and crawl
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # and for the scripts tests start as subprocesses


@pytest.fixture(autouse=True, scope="session")
def _compiled_model_cache(tmp_path_factory):
    """compile=True keeps its programs in a folder of this test session, never the user's
    ~/.cache (tests that look at the cache set their own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASE_MPNN_CACHE", str(tmp_path_factory.mktemp("ase-mpnn-cache")))
        yield


def cu_fcc(repeat: int = 1, nickel_every: int = 0, rattle: float = 0.0, seed: int = 1) -> Atoms:
    """The tests' Cu cell: cubic fcc Cu (a = 3.6 A, 4 atoms) repeated ``repeat`` times along
    each axis, every ``nickel_every``-th atom Ni (0: none), rattled by ``rattle`` A."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    if nickel_every:
        atoms.symbols[::nickel_every] = "Ni"
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def make_potential(seed: int = 0, architecture: type = SchNet, **kwargs) -> Potential:
    """A random model over Cu/Ni whose forces have ~1 eV/A RMS on a rattled cell."""
    torch.manual_seed(seed)
    model = architecture(species=SPECIES, cutoff=kwargs.pop("cutoff", 4.0), **kwargs)
    return scale_to_force_rms(Potential(model), rattled_triclinic_cell(SPECIES), 1.0)


def make_preset(name: str, seed: int = 0) -> Potential:
    """A random model of an ``ase_mpnn.models.presets.SMALL`` configuration over Cu/Ni (4 A
    cutoff), scaled like ``make_potential``."""
    model = build_preset(name, SPECIES, 4.0, seed=seed)
    return scale_to_force_rms(Potential(model), rattled_triclinic_cell(SPECIES), 1.0)


@pytest.fixture(scope="session")
def potential() -> Potential:
    return make_potential()


@pytest.fixture()
def calc(potential) -> MPNNCalculator:
    return MPNNCalculator(potential, device="cpu", dtype="float64")


@pytest.fixture()
def cu_cell():
    return cu_fcc(rattle=0.05)


@pytest.fixture
def native_kernels() -> None:
    """Tests of the native kernels: skipped where they are not built, except in CI
    (``CI`` set), where ``make install`` builds them and their absence is a failure."""
    if not NATIVE_KERNELS:
        message = "native kernels not built (`ase-mpnn kernels --build`)"
        if os.environ.get("CI"):
            pytest.fail(message + ": make install builds them in CI")
        pytest.skip(message)
