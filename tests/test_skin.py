"""Verlet-skin neighbour reuse gives exactly the results of a fresh list on every call."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from ase_mpnn import MPNNCalculator
from ase_mpnn._compat import thermalize
from ase_mpnn.graph.skin import SkinNeighborList

from .conftest import cu_fcc


def results(atoms, calc):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


def assert_same(a, b):
    assert a["energy"] == pytest.approx(b["energy"], abs=1e-12)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-12, rtol=0)
    if "stress" in b:
        np.testing.assert_allclose(a["stress"], b["stress"], atol=1e-12, rtol=0)


def test_md_with_a_skin_equals_md_with_fresh_lists(potential):
    atoms = cu_fcc(repeat=2, nickel_every=3)
    thermalize(atoms, 1500, seed=0)
    fresh = MPNNCalculator(potential, device="cpu", dtype="float64", skin=0.0)
    skinned = MPNNCalculator(potential, device="cpu", dtype="float64", skin=0.5)
    atoms.calc = skinned
    dynamics = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    for _ in range(30):
        dynamics.run(1)
        assert_same(results(atoms, skinned), results(atoms, fresh))
    assert skinned.neighbors.builds < 10 and skinned.neighbors.reuses > 20
    assert fresh.neighbors.reuses == 0


def test_random_moves_and_strains_never_miss_a_pair(potential):
    """Property test: after any sequence of moves and cell changes, skin == fresh."""
    rng = np.random.default_rng(1)
    atoms = bulk("Ni", "fcc", a=3.55).repeat((2, 2, 3))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.05, (3, 3))),
                   scale_atoms=True)  # triclinic
    fresh = MPNNCalculator(potential, device="cpu", dtype="float64", skin=0.0)
    skinned = MPNNCalculator(potential, device="cpu", dtype="float64", skin=0.4)
    for step in range(60):
        size = rng.choice([0.01, 0.05, 0.15])
        atoms.positions += rng.normal(0, size, atoms.positions.shape)
        if step % 3 == 0:  # NPT-like: small random strain, positions follow the cell
            strain = np.eye(3) + rng.normal(0, size / 5, (3, 3))
            atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        assert_same(results(atoms, skinned), results(atoms, fresh))
    assert 0 < skinned.neighbors.builds < 60 and skinned.neighbors.reuses > 0


def test_a_pair_entering_the_cutoff_forces_a_rebuild(potential):
    cutoff, skin = potential.cutoff, 0.5
    atoms = Atoms("CuNi", positions=[[0, 0, 0], [cutoff + skin + 0.05, 0, 0]])
    calc = MPNNCalculator(potential, device="cpu", dtype="float64", skin=skin)
    fresh = MPNNCalculator(potential, device="cpu", dtype="float64", skin=0.0)
    assert results(atoms, calc)["energy"] == pytest.approx(results(atoms, fresh)["energy"])
    for shift in (0.1, 0.2, 0.3):  # closes the gap by 2 * shift
        moved = atoms.copy()
        moved.positions[0, 0] += shift
        moved.positions[1, 0] -= shift
        assert_same(results(moved, calc), results(moved, fresh))
    assert calc.neighbors.builds == 2  # the 0.3 move (0.6 > skin) had to rebuild
    assert np.abs(results(moved, calc)["forces"]).max() > 0  # the pair is now seen


def test_changed_elements_or_pbc_rebuild():
    verlet = SkinNeighborList(4.0, 0.5, ["Cu", "Ni"])
    atoms = cu_fcc()
    verlet.structure(atoms)
    other = atoms.copy()
    other.symbols[0] = "Ni"
    assert verlet.structure(other).species[0] == 1 and verlet.builds == 2
    other.pbc = [True, True, False]
    verlet.structure(other)
    assert verlet.builds == 3 and verlet.reuses == 0


def test_skin_must_be_non_negative():
    with pytest.raises(ValueError, match="skin"):
        SkinNeighborList(4.0, -0.1, ["Cu"])
