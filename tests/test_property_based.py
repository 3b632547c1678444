"""Property-based tests (hypothesis): random structures, random sequences of changes.

Structures: cells from tiny (1.5 A) to large, skewed and left-handed, any periodicity,
offsets up to 1e6 A, close pairs, Cu/Ni mixes. Changes: rattles, strains, swaps, added and
deleted atoms, big translations. After every change, the calculator that reuses its
Verlet list (default skin) must agree with a fresh ``skin=0`` calculator, or both must
raise the same named error. The example budget is fixed (``derandomize``), so CI runs the
same cases every time.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ase_mpnn import MPNNCalculator
from ase_mpnn.errors import ASEMPNNError

from .conftest import make_potential

POTENTIAL = make_potential()  # random SchNet over Cu/Ni, cutoff 4 A
BUDGET = settings(max_examples=150, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

lengths = st.floats(1.5, 12.0)
shear = st.floats(-0.6, 0.6)
offsets = st.sampled_from([0.0, 7.3, 1e3, 1e4, 1e6])


@st.composite
def structures(draw) -> Atoms:
    """A random structure: 1-10 atoms, random cell and periodicity, maybe a close pair."""
    n_atoms = draw(st.integers(1, 10))
    pbc = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    cell = np.diag([draw(lengths) for _ in range(3)])
    cell = cell @ (np.eye(3) + np.array([[0, draw(shear), draw(shear)], [0, 0, draw(shear)],
                                         [0, 0, 0]]))
    if draw(st.booleans()):
        cell[2] *= -1  # left-handed
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    positions = rng.random((n_atoms, 3)) @ cell
    if n_atoms > 1 and draw(st.booleans()):  # a close pair, maybe closer than 0.1 A
        positions[1] = positions[0] + rng.normal(size=3) * draw(st.floats(0.02, 0.8))
    if n_atoms > 2 and draw(st.booleans()):  # one atom very far away
        positions[2] += rng.normal(size=3) * draw(st.sampled_from([1e3, 1e5, 1e6]))
    positions += draw(offsets) * rng.normal(size=3)
    symbols = draw(st.lists(st.sampled_from(["Cu", "Ni"]), min_size=n_atoms, max_size=n_atoms))
    return Atoms(symbols, positions=positions, cell=cell, pbc=pbc)


changes = st.lists(st.tuples(st.sampled_from(["rattle", "strain", "swap", "add", "delete",
                                              "translate", "small"]),
                             st.integers(0, 2**31)), min_size=1, max_size=8)


def apply(atoms: Atoms, change: str, seed: int) -> Atoms:
    """``atoms`` after one change (a new object when atoms are added or deleted)."""
    rng = np.random.default_rng(seed)
    if change == "rattle":
        atoms.positions += rng.normal(0, rng.choice([0.05, 0.3, 1.0]), atoms.positions.shape)
    elif change == "small":
        atoms.positions += rng.normal(0, 0.01, atoms.positions.shape)
    elif change == "strain":
        strain = np.eye(3) + rng.normal(0, rng.choice([0.005, 0.05]), (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    elif change == "swap" and len(atoms) > 1:
        i, j = rng.choice(len(atoms), 2, replace=False)
        atoms.numbers[[i, j]] = atoms.numbers[[j, i]]
    elif change == "add":
        atoms = atoms + Atoms(rng.choice(["Cu", "Ni"]),
                              positions=[atoms.positions[rng.integers(len(atoms))]
                                         + rng.normal(0, 1.5, 3)])
    elif change == "delete" and len(atoms) > 1:
        del atoms[int(rng.integers(len(atoms)))]
    elif change == "translate":
        atoms.positions += rng.normal(0, 1e4, 3)
    return atoms


def outcome(calc: MPNNCalculator, atoms: Atoms) -> dict | type:
    """Energy, forces (and stress) of ``atoms``, or the type of the named error raised."""
    try:
        calc.calculate(atoms, ["energy", "forces"] + (["stress"] if atoms.pbc.all() else []))
    except ASEMPNNError as exc:
        return type(exc)
    return dict(calc.results)


def assert_agree(reused, fresh, label: str) -> None:
    if isinstance(fresh, type) or isinstance(reused, type):
        assert reused == fresh, f"{label}: {reused} != {fresh}"
        return
    assert reused["energy"] == pytest.approx(fresh["energy"], abs=1e-8), label
    np.testing.assert_allclose(reused["forces"], fresh["forces"], atol=1e-8, err_msg=label)
    if "stress" in fresh:
        np.testing.assert_allclose(reused["stress"], fresh["stress"], atol=1e-8, err_msg=label)


@BUDGET
@given(structures(), changes)
def test_reused_lists_agree_with_fresh_lists_or_raise_the_same_error(atoms, steps):
    reusing = MPNNCalculator(POTENTIAL, device="cpu", dtype="float64")  # default skin
    fresh = MPNNCalculator(POTENTIAL, device="cpu", dtype="float64", skin=0.0)
    assert_agree(outcome(reusing, atoms), outcome(fresh, atoms), "start")
    for k, (change, seed) in enumerate(steps):
        atoms = apply(atoms, change, seed)
        assert_agree(outcome(reusing, atoms), outcome(fresh, atoms), f"step {k} ({change})")


@BUDGET
@given(structures())
def test_translations_and_lattice_wraps_change_nothing(atoms):
    """Moving the whole structure, or one atom by a lattice vector, keeps every result
    (float64, to the precision of the coordinates)."""
    calc = MPNNCalculator(POTENTIAL, device="cpu", dtype="float64", skin=0.0)
    before = outcome(calc, atoms)
    moved = atoms.copy()
    moved.positions += [123.25, -4.5, 1e3]
    if atoms.pbc.any():
        axis = int(np.flatnonzero(atoms.pbc)[0])
        moved.positions[0] += 3 * atoms.cell.array[axis]
    after = outcome(calc, moved)
    if isinstance(before, type) or isinstance(after, type):
        assert before == after
        return
    scale = 1e-9 * max(1.0, np.abs(atoms.positions).max() / 1e3)
    assert after["energy"] == pytest.approx(before["energy"], abs=100 * scale)
    np.testing.assert_allclose(after["forces"], before["forces"], atol=100 * scale)
