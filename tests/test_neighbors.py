"""The neighbour list equals ASE's on every kind of periodicity and cell shape."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from ase_mpnn import MPNNCalculator
from ase_mpnn.graph import neighbors
from ase_mpnn.graph.neighbors import neighbor_list


def triclinic() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    atoms.set_cell(atoms.cell.array + [[0, 0, 0], [0.3, 0, 0], [0.5, 0.7, 0]], scale_atoms=True)
    atoms.rattle(0.1, seed=0)
    return atoms


def slab() -> Atoms:
    atoms = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    atoms.pbc = (True, True, False)
    return atoms


CASES = {
    "fcc_cubic": (lambda: bulk("Cu", "fcc", a=3.6, cubic=True), 5.0),
    "fcc_primitive_rc6": (lambda: bulk("Cu", "fcc", a=3.6), 6.0),
    "triclinic": (triclinic, 5.0),
    "slab": (slab, 5.0),
    "molecule": (lambda: molecule("CH3CH2OH"), 3.0),
    "molecule_far_from_origin": (lambda: _shifted(molecule("CH3CH2OH"), [120.0, -40.0, 15.0]),
                                 3.0),
    "wire": (lambda: Atoms("Cu2", positions=[[0, 0, 0], [1.3, 1.2, 0.4]], cell=[2.5, 0, 0],
                           pbc=[True, False, False]), 5.0),
}


def _shifted(atoms: Atoms, by) -> Atoms:
    atoms.positions += by
    return atoms


@pytest.fixture(params=neighbors.BACKENDS)
def backend(request, monkeypatch):
    if request.param == "vesin" and not neighbors.vesin_available():
        pytest.skip("vesin is not installed")
    if request.param == "native":
        request.getfixturevalue("native_kernels")  # skipped where not built, except in CI
    monkeypatch.setattr(neighbors, "_backend", neighbors._backend)  # restored afterwards
    neighbors.set_neighbor_backend(request.param)
    return request.param


def as_set(i, j, shifts) -> set:
    shifts = map(tuple, np.asarray(shifts).tolist())
    return set(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), shifts))


@pytest.mark.parametrize("name", CASES)
def test_equals_ase_neighbor_list(name, backend):
    atoms, cutoff = CASES[name][0](), CASES[name][1]
    nl = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    i, j, shifts, d = ase_neighbor_list("ijSd", atoms, cutoff)
    assert as_set(nl.centers, nl.neighbors, nl.shifts) == as_set(i, j, shifts)
    assert len(nl.centers) == len(i)  # no duplicates
    assert (np.diff(nl.centers) >= 0).all()  # sorted by centre (the models' edge chunks)
    vectors = (atoms.positions[nl.neighbors] - atoms.positions[nl.centers]
               + nl.shifts @ atoms.cell.array)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), nl.distances, rtol=1e-12)


def test_unknown_backend_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="matscipy"):
        neighbors.set_neighbor_backend("cellist9000")
    monkeypatch.setattr(neighbors, "_backend", "cellist9000")  # as ASE_MPNN_NEIGHBORS set it
    with pytest.raises(ValueError, match="ASE_MPNN_NEIGHBORS"):
        neighbor_list(np.zeros((2, 3)), np.eye(3) * 5.0, np.array([True] * 3), 2.0)


def test_native_backend_without_kernels_says_how_to_build_them(monkeypatch):
    monkeypatch.setattr(neighbors, "_backend", "native")
    monkeypatch.setenv("ASE_MPNN_KERNELS", "off")
    with pytest.raises(ImportError, match="kernels --build"):
        neighbors.get_neighbor_backend()


def test_small_cell_has_self_images(backend):
    atoms = bulk("Cu", "fcc", a=3.6)  # one atom, cutoff 6 A: 78 images of itself
    nl = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 6.0)
    assert (nl.centers == 0).all() and (nl.neighbors == 0).all()
    assert len(nl.centers) == 78 and not (nl.shifts == 0).all(axis=1).any()


def test_wrapping_does_not_change_energy(calc):
    atoms = triclinic()
    atoms.calc = calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    moved = atoms.copy()
    moved.positions += atoms.cell.array[0] * 2 - atoms.cell.array[2]  # whole lattice vectors
    moved.positions[0] += atoms.cell.array[1]
    moved.calc = calc
    assert moved.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(moved.get_forces(), forces, atol=1e-10)
    wrapped = atoms.copy()
    wrapped.wrap()
    wrapped.calc = calc
    assert wrapped.get_potential_energy() == pytest.approx(energy, rel=1e-12)


def test_molecule_far_from_origin_same_pairs_and_energy(calc):
    atoms = molecule("CH3CH2OH")
    atoms.set_chemical_symbols(["Cu"] * 3 + ["Ni"] * 6)
    atoms.positions *= 1.6
    far = atoms.copy()
    far.positions += [1e5, -3e4, 7e4]
    near_nl = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.0)
    far_nl = neighbor_list(far.positions, far.cell.array, far.pbc, 4.0)
    assert as_set(near_nl.centers, near_nl.neighbors, near_nl.shifts) == as_set(
        far_nl.centers, far_nl.neighbors, far_nl.shifts)
    atoms.calc, far.calc = calc, MPNNCalculator(calc.potential, dtype="float64")
    assert far.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), rel=1e-9)


def test_slab_atoms_outside_nominal_cell():
    atoms = slab()
    atoms.positions[:, 2] += 40.0  # far above the cell's c range
    nl = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    i, j, shifts = ase_neighbor_list("ijS", atoms, 5.0)
    assert as_set(nl.centers, nl.neighbors, nl.shifts) == as_set(i, j, shifts)


def test_shifts_after_wrap_keeps_every_pair_vector():
    """Pairs of wrapped positions restated for the given ones (and back, with -wraps) keep
    x_j - x_i + S @ cell exactly; with no atom wrapped the shifts are returned as they are."""
    rng = np.random.default_rng(4)
    cell = np.array([[4.0, 0.3, 0.0], [0.5, 3.5, 0.2], [0.1, -0.4, 5.0]])
    positions = rng.normal(scale=12.0, size=(9, 3))  # many cells away
    wrapped, wraps = neighbors.wrap_into_cell(positions, cell, np.array([True] * 3))
    i, j = rng.integers(0, 9, size=(2, 40))
    shifts = rng.integers(-2, 3, size=(40, 3))
    ours = neighbors.shifts_after_wrap(shifts, wraps, i, j)
    np.testing.assert_allclose(positions[j] - positions[i] + ours @ cell,
                               wrapped[j] - wrapped[i] + shifts @ cell, atol=1e-12)
    np.testing.assert_array_equal(neighbors.shifts_after_wrap(ours, -wraps, i, j), shifts)
    assert neighbors.shifts_after_wrap(shifts, np.zeros_like(wraps), i, j) is shifts


def _random_structures(count: int, seed: int = 0):
    """Sheared, rattled Cu cells of 1-27 conventional cells, many cells away from the
    origin, a third with random periodic directions, each with a cutoff of 2-9 A (up to
    several times the cell: many images of each atom)."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        atoms = bulk("Cu", "fcc", a=3.6).repeat(tuple(int(r) for r in rng.integers(1, 4, 3)))
        atoms.set_cell(atoms.cell.array + rng.normal(scale=0.8, size=(3, 3)), scale_atoms=True)
        atoms.rattle(0.2, seed=k)
        atoms.pbc = rng.integers(0, 2, 3).astype(bool) if k % 3 == 0 else True
        atoms.positions += rng.normal(scale=20.0, size=3)
        yield atoms, float(rng.uniform(2.0, 9.0))


def test_native_cell_list_equals_the_other_backends(native_kernels, monkeypatch):
    """The C++ cell list finds exactly vesin's and matscipy's pairs (triclinic cells,
    mixed periodicity, cutoffs beyond the cell), sorted by centre, each once, with the
    same distances."""
    monkeypatch.setattr(neighbors, "_backend", neighbors._backend)
    for atoms, cutoff in [*_random_structures(30), (molecule("C6H6"), 3.0)]:
        lists = {}
        for name in ("native", "matscipy", "vesin"):
            neighbors.set_neighbor_backend(name)
            lists[name] = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        ours = lists["native"]
        assert (np.diff(ours.centers) >= 0).all()
        pairs = as_set(ours.centers, ours.neighbors, ours.shifts)
        assert len(pairs) == len(ours.centers)
        for name in ("matscipy", "vesin"):
            other = lists[name]
            assert pairs == as_set(other.centers, other.neighbors, other.shifts), name
        vectors = (atoms.positions[ours.neighbors] - atoms.positions[ours.centers]
                   + ours.shifts @ atoms.cell.array)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), ours.distances, atol=1e-9)
        assert ours.distances.max(initial=0.0) < cutoff


def test_native_cell_list_refuses_bad_arguments(native_kernels):
    import torch

    positions = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="singular"):
        torch.ops.ase_mpnn.cell_list(positions, torch.zeros(3, 3, dtype=torch.float64),
                                     [1, 1, 1], 3.0)
    with pytest.raises(RuntimeError, match="cutoff"):
        torch.ops.ase_mpnn.cell_list(positions, torch.eye(3, dtype=torch.float64) * 5,
                                     [1, 1, 1], -1.0)


def test_default_backend_is_native_where_built(native_kernels, monkeypatch):
    monkeypatch.setattr(neighbors, "_backend", "auto")
    assert neighbors.get_neighbor_backend() == "native"
    monkeypatch.setenv("ASE_MPNN_KERNELS", "off")  # kernels off: vesin takes over
    assert neighbors.get_neighbor_backend() == ("vesin" if neighbors.vesin_available()
                                                else "matscipy")
