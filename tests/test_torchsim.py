"""torch-sim with ase-mpnn's MPNNModel: its own interface check, equality with
MPNNCalculator, its integrators and optimizer, and batched MD equal to ASE one by one."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE
from ase.stress import voigt_6_to_full_3x3_stress

from ase_mpnn import MPNNCalculator, Potential
from ase_mpnn._compat import thermalize
from ase_mpnn.errors import InvalidStructureError, UnknownElementError
from ase_mpnn.models import SchNet
from ase_mpnn.testing import rattled_triclinic_cell, small_molecule

from .conftest import SPECIES

ts = pytest.importorskip("torch_sim", reason="torch-sim not installed: "
                         "pip install 'ase-mpnn[torchsim]'")
from torch_sim.integrators.md import MDState  # noqa: E402
from torch_sim.models.interface import validate_model_outputs  # noqa: E402
from torch_sim.units import MetalUnits  # noqa: E402

from ase_mpnn.integrations.torchsim import MPNNModel  # noqa: E402

MODEL = "emt-cuni-schnet"
CPU, F64 = torch.device("cpu"), torch.float64


def cuni(repeat, seed: int, nickel: float = 0.4):
    """Cubic fcc Cu-Ni (a = 3.6 A) repeated, a random ``nickel`` fraction Ni, rattled."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.random(len(atoms)) < nickel] = "Ni"
    atoms.rattle(0.05, seed=seed)
    return atoms


def triclinic(seed: int = 5):
    """27 atoms of a sheared primitive fcc cell, 3 x 3 x 3."""
    atoms = bulk("Cu", "fcc", a=3.6).repeat(3)
    shear = np.array([[1.0, 0.04, -0.02], [0.03, 0.98, 0.05], [-0.01, 0.02, 1.03]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.symbols[::4] = "Ni"
    atoms.rattle(0.05, seed=seed)
    return atoms


def systems():
    """Periodic Cu-Ni cells of 32, 48, 4 (smaller than the cutoff), 8 and 27 atoms, the
    last two triclinic."""
    return [cuni(2, 0), cuni((3, 2, 2), 1), cuni(1, 2, nickel=0.5),
            rattled_triclinic_cell(SPECIES, seed=3), triclinic()]


@pytest.fixture(scope="module")
def model():
    return MPNNModel(MODEL, device="cpu", dtype=F64)


@pytest.fixture(scope="module")
def calc():
    return MPNNCalculator(MODEL, device="cpu", dtype="float64")


def reference(calc, atoms):
    """Energy (eV), forces (eV/A) and 3x3 stress (eV/A^3) from the ASE calculator."""
    atoms = atoms.copy()
    atoms.calc = calc
    return (atoms.get_potential_energy(), atoms.get_forces(),
            voigt_6_to_full_3x3_stress(atoms.get_stress()))


def state_of(structures, momenta=None):
    """A torch-sim state of ``structures``; an MDState when momenta are given."""
    state = ts.io.atoms_to_state(structures, CPU, F64)
    if momenta is None:
        return state
    fields = {name: getattr(state, name) for name in
              ("positions", "masses", "cell", "pbc", "atomic_numbers", "system_idx")}
    return MDState(**fields, momenta=torch.as_tensor(np.concatenate(momenta), dtype=F64),
                   energy=torch.zeros(state.n_systems, dtype=F64),
                   forces=torch.zeros_like(state.positions))


def test_torch_sims_own_interface_check():
    """validate_model_outputs builds Si and Fe cells: a random SchNet over those elements."""
    torch.manual_seed(0)
    potential = Potential(SchNet(["Si", "Fe", "Cu", "Ni"], cutoff=4.0, n_features=16,
                                 n_interactions=2))
    wrapped = MPNNModel(potential, device="cpu")
    validate_model_outputs(wrapped, CPU, F64)
    assert wrapped.memory_scales_with == "n_atoms_x_density"
    assert (wrapped.device, wrapped.dtype) == (CPU, F64)


def test_batch_equals_the_calculator(model, calc):
    structures = systems()
    out = model(state_of(structures))
    bounds = np.cumsum([0] + [len(a) for a in structures])
    assert out["energy"].shape == (len(structures),)
    for k, atoms in enumerate(structures):
        energy, forces, stress = reference(calc, atoms)
        assert abs(out["energy"][k].item() - energy) < 1e-8
        np.testing.assert_allclose(out["forces"][bounds[k]:bounds[k + 1]].numpy(), forces,
                                   rtol=0, atol=1e-8)
        np.testing.assert_allclose(out["stress"][k].numpy(), stress, rtol=0, atol=1e-8)


def test_dispersion_option_equals_the_calculator_s():
    """MPNNModel(dispersion=...) takes what MPNNCalculator takes (a name, a dict with
    cutoffs) and adds the same D3; a bad option is refused by name."""
    structures = systems()[:2]
    options = {"functional": "pbe", "cutoff": 15.0, "cn_cutoff": 10.0}
    for option in ("pbe", options):
        wrapped = MPNNModel(MODEL, device="cpu", dtype=F64, dispersion=option)
        out = wrapped(state_of(structures))
        calc = MPNNCalculator(MODEL, device="cpu", dtype="float64", dispersion=option)
        for k, atoms in enumerate(structures):
            energy, _, stress = reference(calc, atoms)
            assert abs(out["energy"][k].item() - energy) < 1e-8
            np.testing.assert_allclose(out["stress"][k].numpy(), stress, rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match="pbx"):
        MPNNModel(MODEL, device="cpu", dtype=F64, dispersion="pbx")


def test_one_system_at_a_time_and_a_cluster(model, calc):
    """Each system alone (a new batch rebuilds the lists) and a non-periodic cluster, whose
    stress is NaN (it has no volume)."""
    for atoms in [*systems()[2:4], small_molecule(SPECIES, seed=1)]:
        out = model(state_of([atoms]))
        expected = reference(calc, atoms) if atoms.pbc.all() else None
        if expected is None:
            probe = atoms.copy()
            probe.calc = calc
            expected = (probe.get_potential_energy(), probe.get_forces(), None)
            assert torch.isnan(out["stress"]).all()
        else:
            np.testing.assert_allclose(out["stress"][0].numpy(), expected[2], atol=1e-8)
        assert abs(out["energy"][0].item() - expected[0]) < 1e-8
        np.testing.assert_allclose(out["forces"].numpy(), expected[1], rtol=0, atol=1e-8)


def test_float32_and_switches(calc):
    """float32 agrees with float64 to float32 precision; forces and stress can be off."""
    structures = systems()[:2]
    single = MPNNModel(MODEL, device="cpu", dtype=torch.float32, compute_stress=False)
    out = single(ts.io.atoms_to_state(structures, CPU, torch.float32))
    assert set(out) == {"energy", "forces"} and out["energy"].dtype == torch.float32
    energy, forces, _ = reference(calc, structures[0])
    assert abs(out["energy"][0].item() - energy) < 1e-3
    np.testing.assert_allclose(out["forces"][:32].numpy(), forces, atol=1e-4)
    single.compute_forces = False
    assert set(single(ts.io.atoms_to_state(structures, CPU, torch.float32))) == {"energy"}


def test_bad_input_is_reported(model):
    far_off = cuni(1, 3)
    far_off[0].symbol = "Fe"
    with pytest.raises(UnknownElementError, match="structure 1 of the batch.*Fe"):
        model(state_of([cuni(1, 4), far_off]))
    squashed = cuni(1, 5)
    squashed.positions[1] = squashed.positions[0] + 0.05
    with pytest.raises(InvalidStructureError, match="structure 0 of the batch: atoms 0 and 1"):
        model(state_of([squashed]))


def test_missing_torch_sim_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_sim.models.interface", None)
    monkeypatch.delitem(sys.modules, "ase_mpnn.integrations.torchsim", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'ase-mpnn\[torchsim\]'"):
        importlib.import_module("ase_mpnn.integrations.torchsim")


def total_energy(model, state) -> torch.Tensor:
    """Potential plus kinetic energy of each system, eV."""
    kinetic = ts.calc_kinetic_energy(momenta=state.momenta, masses=state.masses,
                                     system_idx=state.system_idx)
    return model(state)["energy"] + kinetic


@pytest.mark.slow
def test_integrate_nve_conserves_energy(model):
    structures = [cuni(2, 6), triclinic(7)]
    momenta = []
    for k, atoms in enumerate(structures):
        thermalize(atoms, 600, seed=k)
        momenta.append(atoms.get_momenta())
    start = state_of(structures, momenta)
    before = total_energy(model, start)
    final = ts.integrate(system=start, model=model, integrator=ts.nve, n_steps=200,
                         temperature=600, timestep=0.001)  # ps
    after = total_energy(model, final)
    kinetic = ts.calc_kinetic_energy(momenta=final.momenta, masses=final.masses,
                                     system_idx=final.system_idx)
    assert (kinetic > 0.5 * 1.5 * 31 * units.kB * 600).all()  # it moved, and stayed hot
    # measured 6e-5 eV for 32 and 27 atoms over 200 fs; a wrong force would drift by eV
    assert (after - before).abs().max() < 1e-3
    assert model.neighbors.reuses > 10 * model.neighbors.builds


def test_integrate_nvt_langevin_runs(model):
    final = ts.integrate(system=[cuni(2, 8), cuni(2, 9)], model=model,
                         integrator=ts.nvt_langevin, n_steps=50, temperature=900,
                         timestep=0.002, seed=1)
    kinetic = ts.calc_kinetic_energy(momenta=final.momenta, masses=final.masses,
                                     system_idx=final.system_idx)
    temperature = kinetic / (1.5 * 32 * units.kB)
    assert torch.isfinite(final.energy).all() and (temperature > 300).all()


@pytest.mark.slow
def test_optimize_fire_frechet_equals_ase(model, calc):
    """torch-sim's FIRE with a Frechet cell filter reaches the minimum ASE's
    FIRE(FrechetCellFilter) reaches one by one (different paths, the same minimum)."""
    structures = [cuni(2, 10), triclinic(11)]
    for atoms in structures:
        atoms.set_cell(atoms.cell.array * 1.03, scale_atoms=True)
    relaxed = ts.optimize(system=structures, model=model, optimizer=ts.frechet_cell_fire,
                          max_steps=2000,
                          convergence_fn=ts.generate_force_convergence_fn(force_tol=0.001))
    out = model(relaxed)
    # converged on atom forces and cell forces (virial / atoms) below 0.001 eV/A
    assert out["forces"].abs().max() < 0.001 and out["stress"].abs().max() < 1e-4
    for k, atoms in enumerate(structures):
        atoms = atoms.copy()
        atoms.calc = calc
        FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.001, steps=2000)
        assert abs(out["energy"][k].item() - atoms.get_potential_energy()) < 1e-4
        np.testing.assert_allclose(abs(np.linalg.det(relaxed.cell[k].numpy())),
                                   atoms.get_volume(), rtol=1e-3)


def minimum_image(difference: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """(n, 3) position differences with whole lattice vectors taken off."""
    fractional = difference @ np.linalg.inv(cell)
    return difference - np.round(fractional) @ cell


@pytest.mark.slow
def test_batched_nve_equals_ase_one_by_one(model, calc):
    """Issue 17 part 4: five systems in one torch-sim NVE run follow the trajectories of
    ASE's VelocityVerlet run on each alone, to 1e-8 over 100 steps of 1 fs.

    Both are velocity Verlet (half kick, drift, force, half kick). torch-sim takes the time
    step in ps and multiplies by its metal time unit; it is given 1 fs of ASE's internal
    time divided by that unit, so both step the same dt (to the last bit or so). torch-sim
    wraps atoms into the cell after every drift, ASE does not: positions are compared
    modulo lattice vectors.
    """
    structures = systems()
    for k, atoms in enumerate(structures):
        thermalize(atoms, 800, seed=20 + k)
    start = state_of(structures, [a.get_momenta() for a in structures])
    dt = 1.0 * units.fs
    final = ts.integrate(system=start, model=model, integrator=ts.nve, n_steps=100,
                         temperature=800, timestep=dt / MetalUnits.time)
    bounds = np.cumsum([0] + [len(a) for a in structures])
    for k, atoms in enumerate(structures):
        atoms.calc = calc
        VelocityVerlet(atoms, timestep=dt, logfile=None).run(100)
        part = slice(bounds[k], bounds[k + 1])
        moved = minimum_image(final.positions[part].numpy() - atoms.positions,
                              atoms.cell.array)
        assert np.abs(moved).max() < 1e-8
        np.testing.assert_allclose(final.momenta[part].numpy(), atoms.get_momenta(),
                                   rtol=0, atol=1e-8)
        assert np.abs(atoms.positions - start.positions[part].numpy()).max() > 0.05


def temperatures(momenta: np.ndarray, masses: np.ndarray) -> float:
    """Kinetic temperature (K) with 3N degrees of freedom."""
    return float((momenta**2 / masses[:, None]).sum() / (3 * len(masses) * units.kB))


@pytest.mark.slow
def test_batched_langevin_samples_the_temperature_of_ase_one_by_one(model, calc):
    """Issue 17 part 4: six 32-atom systems under torch-sim's Langevin (BAOAB) in one batch
    and under ASE's Langevin one by one, started at 300 K, held at 600 K: the same mean
    temperature within the statistical error, and both at the target.

    The friction is the same number (0.02 per fs, in ASE's time unit for both). ASE's
    Langevin by default removes centre-of-mass motion (3N - 3 degrees of freedom, a mean
    3N-temperature of T (N - 1) / N); torch-sim does not, so ASE runs with fixcm=False.
    """
    n_systems, steps, burn_in, target = 6, 250, 100, 600.0
    structures = [cuni(2, 30 + k) for k in range(n_systems)]
    for k, atoms in enumerate(structures):
        thermalize(atoms, 300, seed=40 + k)
    dt, friction = 2.0 * units.fs, 0.02 / units.fs
    state = state_of(structures, [a.get_momenta() for a in structures])
    torch.manual_seed(0)
    init, update = ts.nvt_langevin(model=model, dt=torch.tensor(dt, dtype=F64),
                                   kT=torch.tensor(target * units.kB, dtype=F64),
                                   gamma=torch.tensor(friction, dtype=F64))
    state = init(state)
    ours = np.zeros((steps, n_systems))
    for step in range(steps):
        state = update(state)
        for k in range(n_systems):
            part = slice(32 * k, 32 * (k + 1))
            ours[step, k] = temperatures(state.momenta[part].numpy(),
                                         state.masses[part].numpy())
    theirs = np.zeros((steps, n_systems))
    for k, atoms in enumerate(structures):
        atoms.calc = calc
        dynamics = Langevin(atoms, timestep=dt, temperature_K=target, friction=friction,
                            fixcm=False, rng=np.random.default_rng(50 + k), logfile=None)
        for step in range(steps):
            dynamics.run(1)
            theirs[step, k] = temperatures(atoms.get_momenta(), atoms.get_masses())
    means = []
    for series in (ours, theirs):
        per_system = series[burn_in:].mean(axis=0)  # systems are independent samples
        means.append((per_system.mean(), per_system.std(ddof=1) / np.sqrt(n_systems)))
    (mean_ours, error_ours), (mean_ase, error_ase) = means
    assert abs(mean_ours - mean_ase) < 4 * np.hypot(error_ours, error_ase)
    for mean, error in means:
        assert abs(mean - target) < max(4 * error, 0.03 * target)
