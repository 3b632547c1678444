"""Hessians by autograd: calculator and potential, vibrations, phonons from one Hessian."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from ase.vibrations import Vibrations

from ase_mpnn import (
    Committee,
    InvalidStructureError,
    MPNNCalculator,
    UnknownElementError,
    build_graph,
    keys,
    save_model,
    testing,
)
from ase_mpnn.cli import main
from ase_mpnn.nn import scatter_sum
from ase_mpnn.potential import EnergyTerm, hessian_of_terms
from ase_mpnn.simulate import phonons, vibrations
from ase_mpnn.simulate.phonon_spectrum import force_constants
from ase_mpnn.testing import rattled_triclinic_cell, small_molecule

from .conftest import SPECIES, make_potential


@pytest.fixture(scope="module")
def small_potential():
    return make_potential(n_features=16, n_interactions=2)


def _calc(model, **kwargs) -> MPNNCalculator:
    return MPNNCalculator(model, device="cpu", dtype=kwargs.pop("dtype", "float64"), **kwargs)


def test_hessian_matches_finite_differences_with_and_without_skin(small_potential):
    atoms = rattled_triclinic_cell(SPECIES)[:5]
    with_skin = _calc(small_potential).get_hessian(atoms)
    fresh = _calc(small_potential, skin=0.0).get_hessian(atoms)
    # the Verlet-skin list holds pairs beyond the cutoff: they must be dropped exactly
    assert np.abs(with_skin - fresh).max() < 1e-12
    assert testing.check_hessian_finite_difference(_calc(small_potential), atoms) < 1e-6
    assert np.abs(with_skin - with_skin.T).max() < 1e-12 * np.abs(with_skin).max()


def test_pairs_beyond_the_cutoff_are_dropped():
    """A Verlet-skin graph holds pairs beyond the cutoff: the Hessian drops them, as the
    energy does (a term without an envelope, E = sum over pairs of r^2 / 2, would see them)."""
    atoms = rattled_triclinic_cell(SPECIES)[:3]

    def springs(graph):
        per_edge = 0.5 * graph[keys.EDGE_LENGTHS] ** 2
        return scatter_sum(per_edge, graph[keys.EDGE_INDEX][0], len(graph[keys.POSITIONS]))

    term = EnergyTerm(springs, 3.0, False)
    skin = build_graph(atoms, 4.5, SPECIES, dtype=torch.float64)
    skin[keys.LIST_CUTOFF] = torch.tensor(4.5)
    exact = build_graph(atoms, 3.0, SPECIES, dtype=torch.float64)
    assert skin[keys.EDGE_INDEX].shape[1] > exact[keys.EDGE_INDEX].shape[1]
    assert torch.allclose(hessian_of_terms(skin, [term]), hessian_of_terms(exact, [term]),
                          rtol=0, atol=1e-12)


def test_batched_rows_equal_row_by_row(small_potential):
    calc = _calc(small_potential)
    atoms = small_molecule(SPECIES)
    graph = calc._graph(atoms)
    n = 3 * len(atoms)
    one = calc.potential.hessian(graph, rows_per_pass=1).numpy()
    for rows in (4, n):  # passes that do not divide 3N, and all rows in one pass
        batched = calc.potential.hessian(graph, rows_per_pass=rows).numpy()
        assert np.abs(batched - one).max() < 1e-12 * np.abs(one).max()
    assert np.allclose(calc.get_hessian(atoms), one, rtol=0, atol=1e-12)
    # the rows of some atoms only, in the order asked (negative indices from the end)
    rows = calc.get_hessian(atoms, indices=[4, -1])
    assert rows.shape == (6, n)
    assert np.allclose(rows, one[[12, 13, 14, n - 3, n - 2, n - 1]], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="indices must be atom indices"):
        calc.get_hessian(atoms, indices=[len(atoms)])
    with pytest.raises(ValueError, match="rows_per_pass"):
        calc.potential.hessian(graph, rows_per_pass=0)


def test_committee_hessian_is_the_members_mean():
    members = [make_potential(seed=1, n_features=16, n_interactions=1),
               make_potential(seed=2, n_features=16, n_interactions=1, cutoff=3.5)]
    atoms = rattled_triclinic_cell(SPECIES)[:4]
    mean = np.mean([_calc(m).get_hessian(atoms) for m in members], axis=0)
    assert np.abs(_calc(Committee(members)).get_hessian(atoms) - mean).max() < 1e-12


def test_get_hessian_checks_its_input_and_returns_float64(small_potential):
    calc = _calc(small_potential, dtype="float32")
    with pytest.raises(ValueError, match="none given"):
        calc.get_hessian()
    with pytest.raises(UnknownElementError):
        calc.get_hessian(Atoms("Au2", positions=[[0, 0, 0], [2.5, 0, 0]]))
    with pytest.raises(InvalidStructureError):
        calc.get_hessian(Atoms("Cu2", positions=[[0, 0, 0], [0.01, 0, 0]]))
    atoms = small_molecule(SPECIES)
    atoms.calc = calc
    atoms.get_forces()
    hessian = calc.get_hessian()  # the last structure calculated
    assert hessian.dtype == np.float64 and hessian.shape == (27, 27)
    exact = _calc(small_potential).get_hessian(atoms)
    assert np.abs(hessian - exact).max() < 1e-4 * np.abs(exact).max()


def test_kit_catches_a_wrong_hessian(small_potential):
    calc = _calc(small_potential)
    original = calc.potential.hessian
    calc.potential.hessian = lambda graph, **kwargs: 1.001 * original(graph, **kwargs)
    with pytest.raises(AssertionError, match="finite differences"):
        testing.check_hessian_finite_difference(calc, rattled_triclinic_cell(SPECIES)[:3])


def test_vibrations_equal_ase_finite_differences(small_potential, tmp_path):
    calc = _calc(small_potential)
    atoms = small_molecule(SPECIES)[:4]
    for indices in (None, [0, 2]):
        ours = vibrations(atoms, calc, indices=indices)
        probe = atoms.copy()
        probe.calc = calc
        reference = Vibrations(probe, indices=indices, delta=1e-4,
                               name=str(tmp_path / f"vib{indices}"))
        reference.run()
        theirs = reference.get_vibrations()
        assert np.abs(ours.get_hessian_2d() - theirs.get_hessian_2d()).max() < 1e-5
        energies = ours.get_energies()
        assert np.abs(energies - theirs.get_energies()).max() < 1e-5 * np.abs(energies).max()
        assert ours.get_modes().shape == theirs.get_modes().shape
    with pytest.raises(ValueError, match="get_hessian"):
        vibrations(atoms, EMT())
    with pytest.raises(ValueError, match="indices"):
        vibrations(atoms, calc, indices=[0, 0])


def test_phonon_force_constants_from_one_hessian_equal_displacements(small_potential):
    calc = _calc(small_potential)
    crystal = bulk("Cu", "fcc", a=3.6)
    by_hessian = force_constants(crystal, calc, (2, 2, 2), method="hessian").force_constants
    by_displacement = force_constants(crystal, calc, (2, 2, 2), 1e-4).force_constants
    # compact force constants: the unit cell's one atom (supercell atom 0) against all 8
    assert by_hessian.shape == (1, 8, 3, 3) and by_displacement.shape == (8, 8, 3, 3)
    assert np.abs(by_hessian - by_displacement[:1]).max() < 1e-6 * np.abs(by_hessian).max()
    # no symmetry: every atom displaced both ways along x, y, z, and blocks Phi_ij != Phi_ji
    skewed = rattled_triclinic_cell(SPECIES)[:3]
    phonon = force_constants(skewed, calc, (2, 1, 1), method="hessian")
    by_hessian = phonon.force_constants
    by_displacement = force_constants(skewed, calc, (2, 1, 1), 1e-4).force_constants
    assert by_hessian.shape == (3, 6, 3, 3)
    by_displacement = by_displacement[phonon.primitive.p2s_map]
    assert np.abs(by_hessian - by_hessian.transpose(0, 1, 3, 2)).max() > 1e-3
    assert np.abs(by_hessian - by_displacement).max() < 1e-6 * np.abs(by_hessian).max()
    both = [phonons(crystal, calc, supercell=(2, 2, 2), mesh=(2, 2, 2), method=m,
                    displacement=1e-4) for m in ("hessian", "displacement")]
    for label, frequencies in both[0]["frequencies_THz_at"].items():
        assert np.allclose(frequencies, both[1]["frequencies_THz_at"][label], atol=1e-5)
    with pytest.raises(ValueError, match="get_hessian"):
        phonons(crystal, EMT(), supercell=(2, 2, 2), method="hessian")
    with pytest.raises(ValueError, match="method"):
        phonons(crystal, calc, supercell=(2, 2, 2), method="frozen")


def test_cli_phonons_by_hessian(small_potential, tmp_path):
    structure = tmp_path / "cu.cif"
    write(structure, bulk("Cu", "fcc", a=3.6))
    model = save_model(small_potential, tmp_path / "m.mpnn")
    out = tmp_path / "ph"
    assert main(["phonons", str(structure), "--model", str(model), "--supercell", "2", "2",
                 "2", "--mesh", "2", "2", "2", "--method", "hessian", "--out", str(out)]) == 0
    assert "Gamma" in json.loads((out / "summary.json").read_text())["frequencies_THz_at"]


def test_cli_vibrations(small_potential, tmp_path):
    molecule = small_molecule(SPECIES)[:4]
    structure = tmp_path / "cluster.xyz"
    write(structure, molecule)
    model = save_model(small_potential, tmp_path / "m.mpnn")
    out = tmp_path / "vib"
    assert main(["vibrations", str(structure), "--model", str(model), "--indices", "0", "1",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["frequencies_cm-1"]) == 6 and summary["atoms_vibrating"] == [0, 1]
    expected = vibrations(molecule, _calc(small_potential), indices=[0, 1]).get_frequencies()
    signed = [f.real if abs(f.imag) <= abs(f.real) else -abs(f.imag) for f in expected]
    assert np.allclose(summary["frequencies_cm-1"], signed, rtol=1e-6)  # xyz file digits
    assert (out / "vibrations.json").exists() and (out / "modes.xyz").exists()


def test_hessian_of_a_compiled_calculator_runs_the_model_eagerly(small_potential):
    """A compiled model's backward cannot be differentiated again: the Hessian bypasses it
    (and so never waits for a compilation)."""
    atoms = small_molecule(SPECIES)[:3]
    exact = _calc(small_potential).get_hessian(atoms)
    assert np.array_equal(_calc(small_potential, compile=True).get_hessian(atoms), exact)
    committee = Committee([small_potential, make_potential(seed=3, n_features=8,
                                                           n_interactions=1)])
    compiled = _calc(committee, compile=True)
    assert np.array_equal(compiled.get_hessian(atoms), _calc(committee).get_hessian(atoms))


def test_hessian_includes_the_dispersion_add_on(small_potential):
    """MPNNCalculator(model, dispersion=...) wraps the potential with D3 (WithAddOns): its
    Hessian is that of model + D3, not of the model alone (the image sums' hand-written
    backward must itself be differentiable)."""
    atoms = rattled_triclinic_cell(SPECIES)[:5]
    atoms.pbc = False  # a cluster: D3's 60 Bohr image sums of a small cell are slow
    calc = _calc(small_potential, dispersion="pbe", skin=0.0)
    with_d3 = calc.get_hessian(atoms)
    bare = _calc(small_potential, dispersion=False, skin=0.0).get_hessian(atoms)
    assert np.abs(with_d3 - bare).max() > 1e-3  # D3 adds curvature at these distances
    assert np.abs(with_d3 - testing.numerical_hessian(calc, atoms, 1e-5)).max() < 1e-6


def test_hessian_of_periodic_dispersion_matches_finite_differences(small_potential):
    """The dense image sums' backward, differentiated again, over many translations of a
    small triclinic cell (shorter D3 cutoffs keep the test fast)."""
    atoms = rattled_triclinic_cell(SPECIES)[:5]
    assert atoms.pbc.all()
    calc = _calc(small_potential, dispersion="pbe", skin=0.0)
    (d3,) = calc.potential.addons
    d3.cutoff, d3.cn_cutoff = 12.0, 9.0
    bare = _calc(small_potential, skin=0.0).get_hessian(atoms)
    with_d3 = calc.get_hessian(atoms)
    assert np.abs(with_d3 - bare).max() > 1e-3
    assert np.abs(with_d3 - testing.numerical_hessian(calc, atoms, 1e-5)).max() < 1e-6
