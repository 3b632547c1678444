"""Shared fixtures: a physically scaled random SchNet and the structures tests use."""

from __future__ import annotations

import os

import pytest
import torch
from ase.build import bulk

from ase_mpnn import MPNNCalculator, Potential
from ase_mpnn.models import SchNet
from ase_mpnn.testing import rattled_triclinic_cell, scale_to_force_rms

SPECIES = ["Cu", "Ni"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one process per core: more torch threads than cores makes OpenMP spin and crawl
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # and for the scripts tests start as subprocesses


def make_potential(seed: int = 0, architecture: type = SchNet, **kwargs) -> Potential:
    """A random model over Cu/Ni whose forces have ~1 eV/A RMS on a rattled cell."""
    torch.manual_seed(seed)
    model = architecture(species=SPECIES, cutoff=kwargs.pop("cutoff", 4.0), **kwargs)
    return scale_to_force_rms(Potential(model), rattled_triclinic_cell(SPECIES), 1.0)


@pytest.fixture(scope="session")
def potential() -> Potential:
    return make_potential()


@pytest.fixture()
def calc(potential) -> MPNNCalculator:
    return MPNNCalculator(potential, device="cpu", dtype="float64")


@pytest.fixture()
def cu_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    return atoms
