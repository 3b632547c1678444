"""ZBL repulsion: the analytic formula, the C2 switch, forces, files and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from ase_mpnn import MPNNCalculator, Potential, build_graph, load_model, save_model, testing
from ase_mpnn.modelfile import FORMAT_VERSION, read_manifest
from ase_mpnn.potential import edge_geometry
from ase_mpnn.repulsion import ZBL, repulsion_from_config  # ZBL is also ase_mpnn.ZBL
from ase_mpnn.testing import rattled_triclinic_cell, small_molecule
from ase_mpnn.training import TrainConfig, train
from ase_mpnn.training.emt_data import emt_dataset

from .conftest import SPECIES, make_potential


def zbl_reference(r: float, z1: int, z2: int) -> float:
    """ZBL (1985) with the published constants, written out independently, eV."""
    a = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / a
    phi = (0.18175 * np.exp(-3.19980 * x) + 0.50986 * np.exp(-0.94229 * x)
           + 0.28022 * np.exp(-0.40290 * x) + 0.02817 * np.exp(-0.20162 * x))
    return 14.399645 * z1 * z2 / r * phi


def smootherstep_off(r: float, r_in: float, r_out: float) -> float:
    t = min(max((r - r_in) / (r_out - r_in), 0.0), 1.0)
    return 1 - 10 * t**3 + 15 * t**4 - 6 * t**5


def dimer_repulsion(zbl: ZBL, symbols: str, r: float, species: list[str]) -> np.ndarray:
    """Per-atom ZBL energies of a dimer at distance r (float64)."""
    graph = build_graph(Atoms(symbols, positions=[[0, 0, 0], [r, 0, 0]]), 4.0, species,
                        dtype=torch.float64)
    graph = edge_geometry(graph, graph["positions"], graph["cell"])
    return zbl(graph).numpy()


@pytest.mark.parametrize("symbols, z, species", [("CuNi", (29, 28), SPECIES),
                                                 ("HO", (1, 8), ["H", "O"])])
def test_pair_energy_is_the_zbl_formula_half_to_each_atom(symbols, z, species):
    zbl = ZBL(0.6, 1.6)
    for r in (0.2, 0.5, 0.6, 0.9, 1.3, 1.59):
        energies = dimer_repulsion(zbl, symbols, r, species)
        expected = zbl_reference(r, *z) * smootherstep_off(r, 0.6, 1.6)
        assert energies.sum() == pytest.approx(expected, rel=1e-6)  # 14.399645: 7 digits
        assert energies[0] == pytest.approx(energies[1], rel=1e-14)
    # below r_inner the switch is 1: the bare formula
    assert dimer_repulsion(zbl, symbols, 0.3, species).sum() == pytest.approx(
        zbl_reference(0.3, *z), rel=1e-6)


def test_switch_is_c2_and_zero_beyond_r_outer():
    zbl = ZBL(0.5, 1.5)
    z = torch.tensor([29.0], dtype=torch.float64)

    def derivatives(r: float) -> tuple[float, float, float]:
        x = torch.tensor([r], dtype=torch.float64, requires_grad=True)
        e = zbl.pair_energy(x, z, z).sum()
        (d1,) = torch.autograd.grad(e, x, create_graph=True)
        (d2,) = torch.autograd.grad(d1.sum(), x)
        return float(e.detach()), float(d1.detach()), float(d2)

    for edge in (0.5, 1.5):
        below, above = derivatives(edge - 1e-7), derivatives(edge + 1e-7)
        scale = np.abs(derivatives(edge - 0.05)).max()
        # value, first and second derivative continuous (C2): jumps of O(1e-7) only
        assert np.abs(np.subtract(below, above)).max() < 1e-5 * scale
    for r in (1.5 + 1e-9, 1.7, 3.0):
        assert derivatives(r) == (0.0, 0.0, 0.0)
    r = torch.linspace(0.0, 2.0, 201, dtype=torch.float64)
    s = zbl.switch(r)
    assert torch.all(s[r <= 0.5] == 1) and torch.all(s[r >= 1.5] == 0)
    assert torch.all(s[1:] <= s[:-1])  # monotonic


@pytest.fixture(scope="module")
def walled():
    """A random SchNet (Cu/Ni, 4 A cutoff) with ZBL under it, float64."""
    potential = make_potential(n_features=16, n_interactions=2)
    return Potential(potential.model, potential.scale, potential.shift, repulsion=ZBL(0.8, 1.8))


def compressed_cell() -> Atoms:
    """The kit's rattled triclinic cell squeezed so that several pairs are within 1.8 A."""
    atoms = rattled_triclinic_cell(SPECIES)
    atoms.set_cell(atoms.cell * 0.62, scale_atoms=True)
    return atoms


def test_forces_stress_and_hessian_match_finite_differences(walled):
    atoms = compressed_cell()
    calc = MPNNCalculator(walled, device="cpu", dtype="float64", skin=0.0)
    distances = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
    assert (distances < 1.8).sum() >= 3  # the wall is on
    plain = MPNNCalculator(Potential(walled.model, walled.scale, walled.shift), device="cpu",
                           dtype="float64", skin=0.0)
    atoms.calc = calc
    e_walled = atoms.get_potential_energy()
    atoms.calc = plain
    assert e_walled - atoms.get_potential_energy() > 1.0  # eV: the repulsion is in
    assert testing.check_forces_finite_difference(calc, atoms) < 1e-6
    assert testing.check_stress_finite_difference(calc, atoms) < 1e-7  # per-atom sums too
    assert testing.check_hessian_finite_difference(calc, atoms[:4]) < 1e-6


def test_collision_meets_the_wall(walled):
    """Two atoms at 0.3 A: the energy is ZBL's (tens of keV... here ~1 keV) and pushes apart."""
    calc = MPNNCalculator(walled, device="cpu", dtype="float64")
    dimer = Atoms("Cu2", positions=[[0, 0, 0], [0.3, 0, 0]])
    dimer.calc = calc
    energy, forces = dimer.get_potential_energy(), dimer.get_forces()
    assert energy > 0.9 * zbl_reference(0.3, 29, 29)
    assert forces[1, 0] > 1000 and forces[0, 0] == pytest.approx(-forces[1, 0])


def test_model_file_round_trip_keeps_the_repulsion(walled, tmp_path):
    path = save_model(walled, tmp_path / "walled.mpnn")
    manifest = read_manifest(path)
    assert manifest["repulsion"] == {"type": "ZBL", "r_inner": 0.8, "r_outer": 1.8}
    assert manifest["format_version"] == FORMAT_VERSION
    loaded = load_model(path)
    assert (loaded.repulsion.r_inner, loaded.repulsion.r_outer) == (0.8, 1.8)
    atoms = compressed_cell()
    results = []
    for model in (walled, loaded):
        atoms.calc = MPNNCalculator(model, device="cpu", dtype="float64")
        results.append((atoms.get_potential_energy(), atoms.get_forces()))
    assert results[0][0] == results[1][0] and np.array_equal(results[0][1], results[1][1])
    assert testing.check_save_load(walled, small_molecule(SPECIES), tmp_path) == 0.0


def test_bad_radii_are_named():
    with pytest.raises(ValueError, match="below r_outer"):
        ZBL(1.5, 1.0)
    with pytest.raises(ValueError, match="r_inner must be a finite distance"):
        ZBL(-0.1, 1.0)
    with pytest.raises(ValueError, match="beyond the model's cutoff"):
        Potential(make_potential(n_features=8, n_interactions=1).model, repulsion=ZBL(1, 4.5))
    with pytest.raises(ValueError, match="knows type 'ZBL'"):
        repulsion_from_config({"type": "Morse"})
    assert repulsion_from_config(None) is None


def test_training_option_puts_the_network_on_top_of_zbl(tmp_path):
    with pytest.raises(ValueError, match="unknown zbl option"):
        TrainConfig(zbl={"r_in": 0.5})
    with pytest.raises(ValueError, match="beyond the cutoff"):
        TrainConfig(zbl={"r_inner": 0.5, "r_outer": 6.0}, cutoff=4.0)
    data = emt_dataset(["Cu", "Ni"], 8, tmp_path / "cuni.extxyz", seed=1, progress=False)
    config = TrainConfig.from_dict({
        "data": str(data), "valid_fraction": 0.25, "test_fraction": 0.0, "cutoff": 4.0,
        "hyperparameters": {"n_features": 8, "n_interactions": 1, "n_basis": 8},
        "epochs": 1, "batch_size": 4, "output": str(tmp_path / "run"), "progress": False,
        "zbl": {"r_inner": 0.6, "r_outer": 1.6}})
    train(config)
    model = load_model(tmp_path / "run" / "best.mpnn")
    assert (model.repulsion.r_inner, model.repulsion.r_outer) == (0.6, 1.6)


def test_fine_tuning_keeps_or_replaces_the_repulsion(walled, tmp_path):
    from ase_mpnn.training.finetune import extend_species, initial_potential

    extended = extend_species(walled, ["Cu", "Ni", "Al"])
    assert extended.repulsion.config() == walled.repulsion.config()
    path = save_model(walled, tmp_path / "walled.mpnn")
    common = dict(data="unused.xyz", init=str(path), species=["Cu", "Ni"], cutoff=4.0)
    kept = initial_potential(TrainConfig(**common), [])
    assert kept.repulsion.config() == walled.repulsion.config()
    replaced = initial_potential(TrainConfig(**common, zbl={"r_inner": 0.3, "r_outer": 1.0}), [])
    assert (replaced.repulsion.r_inner, replaced.repulsion.r_outer) == (0.3, 1.0)
