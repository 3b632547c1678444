"""BatchedSkinList: a batch's Verlet lists reused across steps give exactly the results of
fresh lists, through moves, wrapping into the cell and cell changes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk

from ase_mpnn import keys
from ase_mpnn.errors import InvalidStructureError, UnknownElementError
from ase_mpnn.graph import collate, make_structure
from ase_mpnn.graph.batched_skin import BatchedSkinList
from ase_mpnn.testing import rattled_triclinic_cell

from .conftest import SPECIES, cu_fcc

DTYPE = torch.float64


def batch_of_cells():
    """Three periodic Cu-Ni cells: cubic 32 atoms, small cubic 4 atoms, triclinic 8."""
    return [cu_fcc(2, nickel_every=3, rattle=0.05), cu_fcc(1, nickel_every=2, rattle=0.05, seed=2),
            rattled_triclinic_cell(SPECIES, seed=3)]


def tensors(structures):
    """positions, cell (rows), pbc, numbers, atoms per structure of a list of Atoms."""
    return (torch.as_tensor(np.concatenate([a.positions for a in structures]), dtype=DTYPE),
            torch.as_tensor(np.stack([a.cell.array for a in structures]), dtype=DTYPE),
            torch.as_tensor(np.stack([a.pbc for a in structures])),
            torch.as_tensor(np.concatenate([a.numbers for a in structures])),
            torch.as_tensor([len(a) for a in structures]))


def fresh_results(potential, structures):
    """The reference: a fresh list of each structure at the model's cutoff."""
    records = [make_structure(a, potential.cutoff, potential.species) for a in structures]
    out = potential(collate(records, dtype=DTYPE), forces=True, stress=True)
    return out[keys.ENERGY], out[keys.FORCES], out[keys.STRESS]


def skin_results(potential, verlet, structures):
    out = potential(verlet.graph(*tensors(structures)), forces=True, stress=True)
    return out[keys.ENERGY], out[keys.FORCES], out[keys.STRESS]


def assert_same(got, expected):
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.fixture()
def potential64(potential):
    # a copy: Module.to converts in place, and ``potential`` is shared by the whole session
    return copy.deepcopy(potential).to(DTYPE)


def test_moves_wraps_and_strains_equal_fresh_lists(potential64):
    """Random walks with lattice translations of single atoms (an engine wrapping them into
    the cell) and cell strains: every step equals fresh lists; wraps never rebuild."""
    rng = np.random.default_rng(0)
    structures = batch_of_cells()
    verlet = BatchedSkinList(potential64.cutoff, 0.5, SPECIES)
    for step in range(40):
        for atoms in structures:
            atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
            k = rng.integers(len(atoms))
            atoms.positions[k] += rng.integers(-2, 3, size=3) @ atoms.cell.array
            if step % 7 == 3:
                strain = np.eye(3) + rng.normal(scale=0.004, size=(3, 3))
                atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        assert_same(skin_results(potential64, verlet, structures),
                    fresh_results(potential64, structures))
    assert verlet.reuses > verlet.builds > 3  # the walk drifts beyond the skin sometimes


def test_a_pure_wrap_reuses_the_list(potential64):
    structures = batch_of_cells()
    verlet = BatchedSkinList(potential64.cutoff, 0.5, SPECIES)
    skin_results(potential64, verlet, structures)
    for atoms in structures:
        atoms.positions[::2] += atoms.cell.array.sum(axis=0)  # every other atom, one image
    assert_same(skin_results(potential64, verlet, structures),
                fresh_results(potential64, structures))
    assert (verlet.builds, verlet.reuses) == (3, 3)


def test_only_the_structure_that_moved_too_far_is_rebuilt(potential64):
    structures = batch_of_cells()
    verlet = BatchedSkinList(potential64.cutoff, 0.5, SPECIES)
    skin_results(potential64, verlet, structures)
    structures[1].positions[0] += [0.3, 0.0, 0.0]  # 0.3 > skin / 2
    structures[2].positions[0] += [0.2, 0.0, 0.0]  # 0.2 < skin / 2
    assert_same(skin_results(potential64, verlet, structures),
                fresh_results(potential64, structures))
    assert (verlet.builds, verlet.reuses) == (4, 2)


def test_a_molecule_and_a_new_batch(potential64):
    """A non-periodic cluster (zero cell) works; a batch of other structures rebuilds all."""
    cluster = bulk("Cu", "fcc", a=3.6, cubic=True)
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    cluster.rattle(0.05, seed=4)
    verlet = BatchedSkinList(potential64.cutoff, 0.5, SPECIES)
    for _ in range(2):
        cluster.positions += 0.01
        got = potential64(verlet.graph(*tensors([cluster])), forces=True)
        records = [make_structure(cluster, potential64.cutoff, SPECIES)]
        expected = potential64(collate(records, dtype=DTYPE), forces=True)
        torch.testing.assert_close(got[keys.FORCES], expected[keys.FORCES], rtol=0, atol=1e-10)
    assert (verlet.builds, verlet.reuses) == (1, 1)
    skin_results(potential64, verlet, batch_of_cells())
    assert verlet.builds == 4


def test_bad_input_names_the_structure(potential64):
    structures = batch_of_cells()
    verlet = BatchedSkinList(potential64.cutoff, 0.5, SPECIES)
    verlet.graph(*tensors(structures))
    structures[2].positions[1] = structures[2].positions[0] + 0.05  # reused list: caught
    with pytest.raises(InvalidStructureError, match="structure 2 of the batch: atoms 0 and 1"):
        verlet.graph(*tensors(structures))
    structures = batch_of_cells()
    structures[1][0].symbol = "Fe"
    with pytest.raises(UnknownElementError, match="structure 1 of the batch.*Fe"):
        BatchedSkinList(potential64.cutoff, 0.5, SPECIES).graph(*tensors(structures))
    structures = batch_of_cells()
    structures[1].positions[0, 0] = np.nan
    with pytest.raises(InvalidStructureError, match="structure 1 of the batch.*NaN"):
        verlet.graph(*tensors(structures))
    with pytest.raises(ValueError, match="skin"):
        BatchedSkinList(4.0, -0.1, SPECIES)
