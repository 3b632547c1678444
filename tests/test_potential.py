"""Energy reference, scale and shift; edge cases with no atoms or no pairs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from ase_mpnn import MPNNCalculator, Potential, build_graph, keys
from ase_mpnn.models import SchNet

E0 = {"Cu": -3.71, "Ni": -5.02}


@pytest.fixture()
def referenced(potential):
    """The shared random SchNet with isolated-atom energies E0."""
    scaled = Potential(potential.model, scale=potential.scale, reference_energies=E0)
    return MPNNCalculator(scaled, device="cpu", dtype="float64")


def test_isolated_atom_has_energy_e0(referenced):
    for symbol, e0 in E0.items():
        atoms = Atoms(symbol, positions=[[1.0, 2.0, 3.0]])
        atoms.calc = referenced
        assert atoms.get_potential_energy() == pytest.approx(e0, abs=1e-12)
        np.testing.assert_array_equal(atoms.get_forces(), np.zeros((1, 3)))


def test_molecule_without_pairs_is_sum_of_e0(referenced):
    atoms = Atoms("CuNiCu", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0]])
    atoms.calc = referenced
    assert atoms.get_potential_energy() == pytest.approx(2 * E0["Cu"] + E0["Ni"], abs=1e-12)
    np.testing.assert_array_equal(atoms.get_forces(), np.zeros((3, 3)))
    np.testing.assert_allclose(atoms.get_potential_energies(), [E0["Cu"], E0["Ni"], E0["Cu"]])


def test_empty_atoms(referenced):
    atoms = Atoms()
    atoms.calc = referenced
    assert atoms.get_potential_energy() == 0.0
    assert atoms.get_forces().shape == (0, 3)
    periodic = Atoms(cell=np.eye(3) * 4, pbc=True)
    periodic.calc = referenced
    assert periodic.get_potential_energy() == 0.0
    np.testing.assert_array_equal(periodic.get_stress(), np.zeros(6))


def test_single_periodic_atom_sees_its_images(referenced):
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = referenced
    assert atoms.get_potential_energy() != pytest.approx(E0["Cu"])
    np.testing.assert_allclose(atoms.get_forces(), 0.0, atol=1e-12)  # inversion symmetry


def test_scale_shift_and_e0_enter_linearly(potential, cu_cell):
    model = copy.deepcopy(potential.model).double()
    base = Potential(model)
    shifted = Potential(model, scale=[2.0, 3.0], shift=[0.5, -0.25],
                        reference_energies=[1.0, 2.0])
    cell = cu_cell.copy()
    cell.symbols[:2] = "Ni"
    graph = build_graph(cell, model.cutoff, model.species)
    out0, out1 = base(graph), shifted(graph)
    species = graph[keys.SPECIES]
    scale = torch.tensor([2.0, 3.0], dtype=torch.float64)[species]
    offset = torch.tensor([1.5, 1.75], dtype=torch.float64)[species]
    torch.testing.assert_close(out1[keys.ATOMIC_ENERGIES],
                               scale * out0[keys.ATOMIC_ENERGIES] + offset)


def test_per_species_values_validated(potential):
    with pytest.raises(ValueError, match="one value per species"):
        Potential(potential.model, scale=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="Zn"):
        Potential(potential.model, reference_energies={"Zn": 1.0})


def test_state_dict_with_the_old_e0_key_loads_strictly(potential):
    """Model files written before the rename store E0 under "atomic_energies"."""
    source = Potential(potential.model, scale=potential.scale, reference_energies=E0)
    old = {("atomic_energies" if k == "reference_energies" else k): v
           for k, v in source.state_dict().items()}
    assert "atomic_energies" in old and "reference_energies" not in old
    loaded = Potential(copy.deepcopy(potential.model))
    loaded.load_state_dict(old, strict=True)
    torch.testing.assert_close(loaded.reference_energies, source.reference_energies)
    nested = torch.nn.ModuleDict({"p": Potential(copy.deepcopy(potential.model))})
    nested.load_state_dict({f"p.{k}": v for k, v in old.items()}, strict=True)
    torch.testing.assert_close(nested["p"].reference_energies, source.reference_energies)
    assert "reference_energies" in loaded.state_dict()


def test_stress_of_non_periodic_graph_is_nan(potential):
    graph = build_graph(Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]), 4.0, ["Cu", "Ni"],
                        dtype=torch.float32)
    out = potential(graph, stress=True)
    assert torch.isnan(out[keys.STRESS]).all()


def test_model_arguments_validated():
    with pytest.raises(ValueError, match="element symbols"):
        SchNet(species=["Cu", "Qq"])
    with pytest.raises(ValueError, match="element symbols"):
        SchNet(species=["Cu", "Cu"])
    with pytest.raises(ValueError, match="cutoff"):
        SchNet(species=["Cu"], cutoff=-1.0)
    with pytest.raises(ValueError, match="n_interactions"):
        SchNet(species=["Cu"], n_interactions=0)
    with pytest.raises(ValueError, match="envelope.*choose one of"):
        SchNet(species=["Cu"], envelope="hard")
