"""The physics kit (ase_mpnn.testing) on every architecture, in float64."""

from __future__ import annotations

import pytest

from ase_mpnn import Committee, MPNNCalculator, testing
from ase_mpnn.models.presets import SMALL
from ase_mpnn.testing import rattled_triclinic_cell, small_molecule

from .conftest import SPECIES, make_potential, make_preset


@pytest.fixture(params=[*sorted(SMALL), "committee"], scope="module")
def model(request):
    """Every architecture and preset, built small and physically scaled, and a committee
    of two architectures with different cutoffs."""
    if request.param == "committee":
        return Committee([make_preset("NequIP", seed=1), make_potential(seed=2, cutoff=3.5)])
    return make_preset(request.param)


def test_forces_match_finite_differences_periodic(model):
    assert testing.check_forces_finite_difference(model, rattled_triclinic_cell(SPECIES)) < 1e-6


def test_forces_match_finite_differences_molecule(model):
    assert testing.check_forces_finite_difference(model, small_molecule(SPECIES)) < 1e-6


def test_stress_matches_strain_derivative(model):
    assert testing.check_stress_finite_difference(model, rattled_triclinic_cell(SPECIES)) < 1e-7


@pytest.mark.parametrize("atoms", [rattled_triclinic_cell(SPECIES)[:4],
                                   small_molecule(SPECIES)[:5]], ids=["periodic", "molecule"])
def test_hessian_matches_finite_differences_of_forces(model, atoms):
    """Every architecture has a double backward: H = d^2E/dx dx equals -dF/dx to 1e-6."""
    assert testing.check_hessian_finite_difference(model, atoms) < 1e-6


@pytest.mark.parametrize("make", [rattled_triclinic_cell, small_molecule])
def test_rotation_reflection_translation_permutation(model, make):
    errors = testing.check_symmetry(model, make(SPECIES))
    assert max(errors.values()) < 1e-10


def test_supercell_extensivity(model):
    assert testing.check_extensivity(model, rattled_triclinic_cell(SPECIES)) < 1e-10


@pytest.mark.parametrize("symbol", SPECIES)
def test_smooth_through_cutoff(model, symbol):
    assert testing.check_cutoff_smoothness(model, symbol) < 1e-4


def test_batch_equals_one_by_one(model):
    structures = [rattled_triclinic_cell(SPECIES, 0), small_molecule(SPECIES),
                  rattled_triclinic_cell(SPECIES, 1)[:5]]
    assert testing.check_batch_consistency(model, structures) < 1e-10


def test_float32_close_to_float64(model):
    assert testing.check_float32(model, rattled_triclinic_cell(SPECIES)) < 1e-4


def test_pickle_and_deepcopy(model):
    assert testing.check_pickle_roundtrip(model, rattled_triclinic_cell(SPECIES)) == 0.0


def test_save_load(model, tmp_path):
    assert testing.check_save_load(model, rattled_triclinic_cell(SPECIES), tmp_path) == 0.0


def test_kit_runs_end_to_end(tmp_path):
    results = testing.run_physics_checks(make_potential(n_features=16, n_interactions=1), tmp_path)
    assert set(results) >= {"forces_fd_periodic", "stress_fd", "extensivity", "save_load"}


def test_kit_catches_a_broken_model():
    """The kit must fail on a model whose forces are not the energy's gradient."""
    calc = MPNNCalculator(make_potential(n_features=16, n_interactions=1), dtype="float64")
    original = calc.potential.forward

    def wrong_forces(graph, **kwargs):
        out = original(graph, **kwargs)
        out["forces"] = out["forces"] * 1.01
        return out

    calc.potential.forward = wrong_forces
    with pytest.raises(AssertionError, match="finite differences"):
        testing.check_forces_finite_difference(calc, rattled_triclinic_cell(SPECIES))


def test_float32_keeps_the_physics_to_float32_precision(model):
    """float32 (the calculator's dtype option) gives the float64 energy, forces and stress
    to float32 precision, and symmetry and extensivity hold to the same precision."""
    import numpy as np

    cell = rattled_triclinic_cell(SPECIES)
    results = {}
    for dtype in ("float32", "float64"):
        atoms = cell.copy()
        atoms.calc = MPNNCalculator(model, device="cpu", dtype=dtype, skin=0.0)
        results[dtype] = (atoms.get_potential_energy(), atoms.get_potential_energies(),
                          atoms.get_forces(), atoms.get_stress())
    (e32, _, f32, s32), (e64, energies64, f64, s64) = results["float32"], results["float64"]
    # E_i = scale (e_i - e_iso) + ...: float32 rounds e_i and e_iso, which can be larger
    # than their difference (a model with a per-element offset, e.g. MACE's first
    # self-connection), so the bound is relative to them
    raw = _raw_energy_magnitude(model, cell)
    assert abs(e32 - e64) < 1e-5 * raw
    assert np.abs(f32 - f64).max() < 1e-4 * np.abs(f64).max()
    assert np.abs(s32 - s64).max() < 1e-4 * np.abs(s64).max()
    calc32 = MPNNCalculator(model, device="cpu", dtype="float32", skin=0.0)
    rtol = 1e-5 * max(1.0, raw / np.abs(energies64).sum())  # the same cancellation
    testing.check_symmetry(calc32, cell, rtol=rtol)
    testing.check_extensivity(calc32, cell, rtol=rtol)


def _raw_energy_magnitude(potential, atoms) -> float:
    """sum_i scale (|e_i| + |e_iso|) + |shift + E0| in float64, eV: the size of every term
    summed into the energy (e_i: the model's per-atom outputs, e_iso: an isolated atom's)."""
    import copy

    import torch

    from ase_mpnn import keys
    from ase_mpnn.graph import build_graph
    from ase_mpnn.potential import edge_geometry

    if isinstance(potential, Committee):  # its mean: bounded by its largest member's terms
        return max(_raw_energy_magnitude(member, atoms) for member in potential.members)
    potential = copy.deepcopy(potential).double()  # Module.double converts in place
    graph = build_graph(atoms, potential.cutoff, potential.species, dtype=torch.float64)
    graph = edge_geometry(graph, graph[keys.POSITIONS], graph[keys.CELL])
    species = graph[keys.SPECIES]
    with torch.no_grad():
        raw = potential.model(graph).abs() + potential.isolated_atom_outputs(
            graph[keys.POSITIONS])[species].abs()
    offsets = (potential.shift + potential.reference_energies)[species].abs()
    return float((potential.scale[species] * raw + offsets).sum())
