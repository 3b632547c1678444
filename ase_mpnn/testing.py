"""Physics checks for any ase-mpnn model: the kit our tests run on every architecture.

Each ``check_*`` function measures one physical property of a calculator or potential,
raises AssertionError with the measured numbers when it misses its tolerance, and returns
the measured error so callers can report it. Use them on your own models::

    from ase_mpnn import MPNNCalculator
    from ase_mpnn.testing import run_physics_checks
    run_physics_checks(my_model)          # raises if a check fails, returns the errors

The structures are small, so every check runs in a second or two in float64.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from scipy.spatial.transform import Rotation

from . import keys
from .calculator import MPNNCalculator
from .graph import build_graph, unbatch
from .loading import load_model
from .modelfile import save_model
from .models.base import AtomisticModel
from .potential import Potential, as_potential


# --- structures ------------------------------------------------------------------------
def rattled_triclinic_cell(species: Sequence[str], seed: int = 0, rattle: float = 0.1) -> Atoms:
    """An 8-atom triclinic, fully periodic cell with the given species mixed, rattled.

    Its cell is smaller than a typical 5 A cutoff in some directions, so atoms also
    neighbour their own periodic images.
    """
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms = atoms.repeat((2, 1, 1))
    cell = atoms.cell.array + np.array([[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [0.3, -0.5, 0.0]])
    atoms.set_cell(cell, scale_atoms=True)
    symbols = [species[k % len(species)] for k in range(len(atoms))]
    atoms.set_chemical_symbols(list(rng.permutation(symbols)))
    atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    return atoms


def small_molecule(species: Sequence[str], seed: int = 0) -> Atoms:
    """A 9-atom non-periodic cluster (ethanol's geometry) with the given species."""
    atoms = molecule("CH3CH2OH")
    atoms.positions *= 1.6  # metal-like bond lengths for metal species
    rng = np.random.default_rng(seed)
    atoms.set_chemical_symbols([species[k] for k in rng.integers(0, len(species), len(atoms))])
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def scale_to_force_rms(model: AtomisticModel | Potential, atoms: Atoms,
                       force_rms: float = 1.0) -> Potential:
    """Rescale a (random-weight) potential's energies so forces on ``atoms`` have this RMS.

    Random weights give arbitrary energy scales; physics checks and MD tests are only
    meaningful when forces have a physical size (~1 eV/A on a rattled cell). Returns the
    potential (a bare model is wrapped), modified in place.
    """
    potential = as_potential(model)
    forces = _evaluate(_calculator(potential), atoms, ["forces"])[0]
    rms = float(np.sqrt((forces**2).mean()))
    if rms == 0.0:
        raise ValueError("the model gives zero forces on this structure; nothing to scale")
    with torch.no_grad():
        potential.scale.mul_(force_rms / rms)
    return potential


def _calculator(model: Any, dtype: str = "float64") -> MPNNCalculator:
    if isinstance(model, Calculator):
        return model
    return MPNNCalculator(model, device="cpu", dtype=dtype)


def _evaluate(calc: Calculator, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")):
    atoms = atoms.copy()
    atoms.calc = calc
    return [atoms.calc.get_property(p, atoms) for p in properties]


def _fail(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# --- checks ----------------------------------------------------------------------------
def check_forces_finite_difference(model: Any, atoms: Atoms, d: float = 1e-4,
                                   atol: float = 1e-6) -> float:
    """Forces equal central finite differences of the energy. Returns max |error|, eV/A."""
    calc = _calculator(model)
    forces = _evaluate(calc, atoms, ["forces"])[0]
    probe = atoms.copy()
    probe.calc = calc
    numerical = calculate_numerical_forces(probe, eps=d)
    error = float(np.abs(forces - numerical).max())
    _fail(error < atol, f"forces differ from finite differences by {error:.3g} eV/A (> {atol})")
    return error


def check_stress_finite_difference(model: Any, atoms: Atoms, d: float = 1e-6,
                                   atol: float = 1e-7) -> float:
    """Stress equals the numerical strain derivative; per-atom stresses and energies sum up.

    Returns max |stress error| in eV/A^3.
    """
    calc = _calculator(model)
    probe = atoms.copy()
    probe.calc = calc
    stress = probe.get_stress()
    numerical = calculate_numerical_stress(probe, eps=d)
    error = float(np.abs(stress - numerical).max())
    _fail(error < atol, f"stress differs from finite differences by {error:.3g} eV/A^3 (> {atol})")
    stresses = probe.get_stresses()
    _fail(np.allclose(stresses.sum(axis=0), stress, atol=1e-10, rtol=1e-8),
          "per-atom stresses do not sum to the stress")
    _fail(np.isclose(probe.get_potential_energies().sum(), probe.get_potential_energy(),
                     atol=1e-9, rtol=1e-12), "per-atom energies do not sum to the energy")
    return error


def numerical_hessian(calc: Calculator, atoms: Atoms, d: float = 1e-5) -> np.ndarray:
    """(3N, 3N) central finite differences of the forces, eV/A^2: row 3 i + a is
    -(F(x + d e_ia) - F(x - d e_ia)) / 2d, flattened (6N force calls)."""
    probe = atoms.copy()
    probe.calc = calc
    rows = []
    for index in range(3 * len(atoms)):
        forces = []
        for sign in (1.0, -1.0):
            probe.positions = atoms.positions
            probe.positions[index // 3, index % 3] += sign * d
            forces.append(probe.get_forces())
        rows.append(-(forces[0] - forces[1]).ravel() / (2 * d))
    return np.array(rows)


def check_hessian_finite_difference(model: Any, atoms: Atoms, d: float = 1e-5,
                                    atol: float = 1e-6) -> float:
    """The calculator's Hessian equals central finite differences of its forces and is
    symmetric. Returns max |error| in eV/A^2."""
    calc = _calculator(model)
    hessian = calc.get_hessian(atoms)
    _fail(hessian.shape == (3 * len(atoms),) * 2 and hessian.dtype == np.float64,
          f"Hessian of {len(atoms)} atoms has shape {hessian.shape}, dtype {hessian.dtype}")
    asymmetry = float(np.abs(hessian - hessian.T).max())
    _fail(asymmetry < atol, f"Hessian is not symmetric: max |H - H^T| = {asymmetry:.3g}")
    error = float(np.abs(hessian - numerical_hessian(calc, atoms, d)).max())
    _fail(error < atol,
          f"Hessian differs from finite differences of forces by {error:.3g} eV/A^2 (> {atol})")
    return error


def _compare(name: str, reference: tuple, other: tuple, rtol: float) -> float:
    (e0, f0), (e1, f1) = reference, other
    scale = max(abs(e0), np.abs(f0).max(), 1e-3)
    error = max(abs(e1 - e0), float(np.abs(f1 - f0).max(initial=0.0))) / scale
    _fail(error < rtol, f"{name}: relative change {error:.3g} (> {rtol})")
    return error


def check_symmetry(model: Any, atoms: Atoms, rtol: float = 1e-10,
                   seed: int = 0) -> dict[str, float]:
    """Energy invariant, forces equivariant under rotation, reflection, translation, permutation.

    Returns the relative error of each operation.
    """
    calc = _calculator(model)
    rng = np.random.default_rng(seed)
    e0, f0 = _evaluate(calc, atoms)
    errors = {}
    for name, matrix in [("rotation", Rotation.random(random_state=seed).as_matrix()),
                         ("reflection", np.diag([-1.0, 1.0, 1.0]))]:
        moved = atoms.copy()
        moved.positions = atoms.positions @ matrix.T
        moved.set_cell(atoms.cell.array @ matrix.T, scale_atoms=False)
        e1, f1 = _evaluate(calc, moved)
        errors[name] = _compare(name, (e0, f0 @ matrix.T), (e1, f1), rtol)
    moved = atoms.copy()
    moved.positions += rng.normal(scale=3.0, size=3)
    errors["translation"] = _compare("translation", (e0, f0), tuple(_evaluate(calc, moved)), rtol)
    order = rng.permutation(len(atoms))
    e1, f1 = _evaluate(calc, atoms[order])
    errors["permutation"] = _compare("permutation", (e0, f0[order]), (e1, f1), rtol)
    return errors


def check_extensivity(model: Any, atoms: Atoms, repeat: tuple[int, int, int] = (2, 2, 2),
                      rtol: float = 1e-10) -> float:
    """A supercell has N times the energy, the same forces on each image and the same stress."""
    calc = _calculator(model)
    e0, f0, s0 = _evaluate(calc, atoms, ["energy", "forces", "stress"])
    big = atoms.repeat(repeat)
    e1, f1, s1 = _evaluate(calc, big, ["energy", "forces", "stress"])
    n = int(np.prod(repeat))
    scale = max(abs(e0), 1e-3)
    error = max(abs(e1 / n - e0) / scale, float(np.abs(f1 - np.tile(f0, (n, 1))).max()) / scale,
                float(np.abs(s1 - s0).max()) / scale)
    _fail(error < rtol, f"supercell {repeat}: relative deviation {error:.3g} from extensivity")
    return error


def check_cutoff_smoothness(model: Any, species: str | None = None, points: int = 201,
                            tol: float = 1e-8) -> float:
    """Scan a dimer through the cutoff: energy continuous, force -> 0 at and beyond r_c.

    Returns |force| at r_c - 1e-6 A relative to the largest |force| of the scan.
    """
    calc = _calculator(model)
    symbol = species or calc.potential.species[0]
    rc = calc.potential.cutoff
    distances = np.concatenate([np.linspace(0.5 * rc, rc - 1e-3, points),
                                [rc - 1e-6, rc + 1e-6, rc + 0.5]])
    energies, forces = [], []
    for r in distances:
        e, f = _evaluate(calc, Atoms(f"{symbol}2", positions=[[0, 0, 0], [r, 0, 0]]))
        energies.append(e)
        forces.append(f[1, 0])
    energies, forces = np.array(energies), np.abs(forces)
    far = energies[-1]
    _fail(abs(energies[-3] - far) < tol and abs(energies[-2] - far) < tol,
          f"energy jumps at the cutoff: E(rc - 1e-6)={energies[-3]!r}, E(rc+)={far!r}")
    steps = np.abs(np.diff(energies[:points]))
    _fail(steps.max() < 50 * np.median(steps) + tol, "energy has a jump inside the scan")
    relative = float(forces[-3] / max(forces[:points].max(), 1e-12))
    _fail(relative < 1e-4 and forces[-2] == 0.0 and forces[-1] == 0.0,
          f"force does not vanish at the cutoff: |F(rc - 1e-6)| = {forces[-3]:.3g} eV/A, "
          f"{relative:.3g} of the scan's largest")
    return relative


def check_batch_consistency(model: Any, structures: Sequence[Atoms], atol: float = 1e-10) -> float:
    """Evaluating several structures in one batched graph equals evaluating them one by one."""
    potential = as_potential(model.potential if isinstance(model, MPNNCalculator) else model)
    potential = copy.deepcopy(potential).to(torch.float64)
    species, rc = potential.species, potential.cutoff

    def evaluate(structures: Sequence[Atoms]) -> list[dict[str, np.ndarray]]:
        out = potential(build_graph(structures, rc, species), forces=True)
        return unbatch(out, [len(s) for s in structures])

    batched = evaluate(structures)
    error = 0.0
    for atoms, together in zip(structures, batched):
        alone = evaluate([atoms])[0]
        error = max(error, float(abs(together[keys.ENERGY] - alone[keys.ENERGY])),
                    float(np.abs(together[keys.FORCES] - alone[keys.FORCES]).max(initial=0.0)))
    _fail(error < atol, f"batched and one-by-one results differ by {error:.3g}")
    return error


def check_save_load(model: Any, atoms: Atoms, directory: str | Path) -> float:
    """save_model -> load_model gives identical energies and forces."""
    potential = as_potential(model)
    path = save_model(potential, Path(directory) / "check.mpnn")
    e0, f0 = _evaluate(_calculator(potential), atoms)
    e1, f1 = _evaluate(_calculator(load_model(path)), atoms)
    error = max(abs(e1 - e0), float(np.abs(f1 - f0).max()))
    _fail(error == 0.0, f"save -> load changed the results by {error:.3g}")
    return error


def check_pickle_roundtrip(model: Any, atoms: Atoms) -> float:
    """pickle and deepcopy of the calculator give identical results."""
    calc = _calculator(model)
    e0, f0 = _evaluate(calc, atoms)
    error = 0.0
    for clone in (pickle.loads(pickle.dumps(calc)), copy.deepcopy(calc)):
        e1, f1 = _evaluate(clone, atoms)
        error = max(error, abs(e1 - e0), float(np.abs(f1 - f0).max()))
    _fail(error == 0.0, f"a pickled/deep-copied calculator changed the results by {error:.3g}")
    return error


def check_float32(model: Any, atoms: Atoms, rtol: float = 1e-4) -> float:
    """float32 energies agree with float64 to rtol (relative to the sum of |atomic energies|)."""
    e64, energies64 = _evaluate(_calculator(model, "float64"), atoms, ["energy", "energies"])
    e32 = _evaluate(_calculator(model, "float32"), atoms, ["energy"])[0]
    error = abs(e32 - e64) / max(abs(e64), np.abs(energies64).sum(), 1e-6)
    _fail(error < rtol, f"float32 energy {e32} vs float64 {e64}: relative {error:.3g} (> {rtol})")
    return error


def run_physics_checks(model: AtomisticModel | Potential,
                       directory: str | Path | None = None) -> dict[str, Any]:
    """Run every check on ``model``; returns {check name: measured error}."""
    import tempfile

    species = as_potential(model).species
    cell, mol = rattled_triclinic_cell(species), small_molecule(species)
    checks: dict[str, Callable[[], Any]] = {
        "forces_fd_periodic": lambda: check_forces_finite_difference(model, cell),
        "forces_fd_molecule": lambda: check_forces_finite_difference(model, mol),
        "stress_fd": lambda: check_stress_finite_difference(model, cell),
        "hessian_fd": lambda: check_hessian_finite_difference(model, cell[:4]),
        "symmetry_periodic": lambda: check_symmetry(model, cell),
        "symmetry_molecule": lambda: check_symmetry(model, mol),
        "extensivity": lambda: check_extensivity(model, cell),
        "cutoff_smoothness": lambda: check_cutoff_smoothness(model),
        "batch": lambda: check_batch_consistency(
            model, [cell, mol, rattled_triclinic_cell(species, 1)]),
        "pickle": lambda: check_pickle_roundtrip(model, cell),
        "float32": lambda: check_float32(model, cell),
    }
    results = {name: check() for name, check in checks.items()}
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        results["save_load"] = check_save_load(model, cell, tmp)
    return results
