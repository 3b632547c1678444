"""Everyday simulations with any ASE calculator: relax, MD, equation of state, phonons.

Used by the ``ase-mpnn relax|md|eos|phonons`` commands and the scripts in workflows/; no
logic lives only in a script. Structures may be ase.Atoms or pymatgen Structures.
Units: eV, Angstrom, fs, K, GPa (bulk modulus), THz (phonon frequencies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.io import Trajectory
from tqdm import tqdm

from .._compat import thermalize
from ..errors import ASEMPNNError
from ..graph import neighbor_list, to_atoms
from ..results import attach_results

OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")
ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = {"nvt": ("langevin", "bussi", "nose-hoover"), "npt": ("mtk", "berendsen")}


class SimulationError(ASEMPNNError, RuntimeError):
    """A simulation blew up (NaN energy, runaway temperature, atoms collapsing)."""


def read_structure(path: str | Path) -> Atoms:
    """The (last) structure in any file ase.io reads, with a clear error when it cannot."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"structure file {path} does not exist")
    try:
        atoms = read(path)
    except Exception as exc:  # ase raises many types for unreadable files
        raise ValueError(f"cannot read a structure from {path}: {exc}") from exc
    if len(atoms) == 0:
        raise ValueError(f"{path} holds a structure with no atoms")
    return atoms


def _prepared(structure: Any, calc: Calculator) -> Atoms:
    atoms = to_atoms(structure).copy()
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    atoms.calc = calc
    atoms.get_potential_energy()  # bad elements or geometry fail here, before any step
    return atoms


def _optimizer_class(name: str):
    from ase import optimize

    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return getattr(optimize, name)


def relax(structure: Any, calc: Calculator, fmax: float = 0.01, steps: int = 500,
          cell: bool = True, optimizer: str = "FIRE", fix_symmetry: bool = False,
          trajectory: str | Path | None = None, logfile: str | None = None) -> tuple[Atoms, dict]:
    """Relax positions and, for cells periodic in 3-D with ``cell=True``, the cell.

    The cell moves through ase.filters.FrechetCellFilter; constraints on the input (e.g.
    FixAtoms) are kept. Returns the relaxed Atoms and a summary (energy eV, max force eV/A,
    stress eV/A^3, steps, converged).
    """
    optimizer_class = _optimizer_class(optimizer)
    atoms = _prepared(structure, calc)
    if fix_symmetry:
        from ase.constraints import FixSymmetry

        atoms.set_constraint([*atoms.constraints, FixSymmetry(atoms)])
    movable: Any = atoms
    if cell and atoms.pbc.all():
        from ase.filters import FrechetCellFilter

        movable = FrechetCellFilter(atoms)
    opt = optimizer_class(movable, logfile=logfile,
                          trajectory=str(trajectory) if trajectory else None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    summary = {"energy_eV": atoms.get_potential_energy(), "converged": converged,
               "steps": opt.nsteps, "max_force_eV_per_A": float(np.abs(atoms.get_forces()).max()),
               "volume_A3": atoms.get_volume() if atoms.pbc.all() else None}
    if atoms.pbc.all():
        summary["stress_eV_per_A3"] = atoms.get_stress().tolist()
    return attach_results(atoms, copy=False), summary


def _dynamics(atoms: Atoms, ensemble: str, thermostat: str | None, temperature_K: float,
              timestep_fs: float, pressure_bar: float, seed: int | None):
    """The ASE integrator for an ensemble and thermostat (each with a sensible coupling time)."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; choose one of {', '.join(ENSEMBLES)}")
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    thermostat = thermostat or THERMOSTATS[ensemble][0]
    if thermostat not in THERMOSTATS[ensemble]:
        raise ValueError(f"unknown {ensemble} thermostat {thermostat!r}; choose one of "
                         f"{', '.join(THERMOSTATS[ensemble])}")
    rng = np.random.default_rng(seed)
    if ensemble == "npt" and not atoms.pbc.all():
        raise ValueError("NPT needs a cell periodic in all three directions")
    builders: dict[str, Callable] = {
        "langevin": lambda: __import__("ase.md.langevin", fromlist=["Langevin"]).Langevin(
            atoms, dt, temperature_K=temperature_K, friction=0.01 / units.fs, fixcm=False, rng=rng),
        "bussi": lambda: __import__("ase.md.bussi", fromlist=["Bussi"]).Bussi(
            atoms, dt, temperature_K=temperature_K, taut=100 * units.fs, rng=rng),
        "nose-hoover": lambda: __import__("ase.md.nose_hoover_chain", fromlist=["x"]).NoseHooverChainNVT(
            atoms, dt, temperature_K=temperature_K, tdamp=100 * units.fs),
        "mtk": lambda: __import__("ase.md.nose_hoover_chain", fromlist=["x"]).IsotropicMTKNPT(
            atoms, dt, temperature_K=temperature_K, pressure_au=pressure_bar * units.bar,
            tdamp=100 * units.fs, pdamp=1000 * units.fs),
        "berendsen": lambda: __import__("ase.md.nptberendsen", fromlist=["x"]).NPTBerendsen(
            atoms, dt, temperature_K=temperature_K, pressure_au=pressure_bar * units.bar,
            taut=100 * units.fs, taup=1000 * units.fs, compressibility_au=4.57e-5 / units.bar,
            fixcm=False),
    }
    return builders[thermostat]()


def _check_sane(atoms: Atoms, temperature_K: float, step: int) -> None:
    """Stop a run that has blown up, saying how."""
    energy = atoms.get_potential_energy()
    if not np.isfinite(energy):
        raise SimulationError(f"step {step}: the energy is {energy}")
    temperature = atoms.get_temperature()
    if temperature > 10 * max(temperature_K, 30.0):
        raise SimulationError(f"step {step}: temperature {temperature:.0f} K is over 10x the "
                              f"target {temperature_K} K: the dynamics blew up")
    nl = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 0.5)
    if len(nl.distances):
        raise SimulationError(f"step {step}: atoms {nl.centers[0]} and {nl.neighbors[0]} are "
                              f"{nl.distances[0]:.3f} A apart (< 0.5 A): the structure collapsed")


def md(structure: Any, calc: Calculator, ensemble: str = "nvt", temperature_K: float = 300.0,
       timestep_fs: float = 1.0, steps: int = 1000, thermostat: str | None = None,
       pressure_bar: float = 1.0, seed: int | None = 0, trajectory: str | Path | None = None,
       log_interval: int = 10, progress: bool = True,
       log_file: str | Path | None = None) -> tuple[Atoms, dict]:
    """Molecular dynamics from a Maxwell-Boltzmann start at ``temperature_K``.

    Ensembles: "nve" (velocity Verlet), "nvt" (thermostat "langevin", "bussi" or
    "nose-hoover"), "npt" (isotropic "mtk" or "berendsen"). Every ``log_interval`` steps the
    frame goes to ``trajectory`` (.traj or .extxyz) and a log row (time fs, potential,
    kinetic and total energy eV, temperature K, pressure GPa) to the summary's "log" and,
    line by line as the run goes, to ``log_file`` (CSV). A blow-up raises SimulationError;
    the frames and log rows written so far are kept.
    """
    atoms = _prepared(structure, calc)
    if len(atoms) < 2:
        raise ValueError("MD needs at least two atoms: repeat the cell (atoms.repeat)")
    thermalize(atoms, temperature_K, seed=seed)  # before the integrator: Bussi needs momenta
    dynamics = _dynamics(atoms, ensemble, thermostat, temperature_K, timestep_fs, pressure_bar, seed)
    log: list[dict] = []
    writer = _trajectory_writer(trajectory, atoms)
    try:
        for step in tqdm(range(0, steps + 1), desc=f"{ensemble.upper()} MD", unit="step",
                         disable=not progress):
            if step:
                dynamics.run(1)
            if step % log_interval == 0 or step == steps:
                _check_sane(atoms, temperature_K, step)
                log.append(_log_row(atoms, step * timestep_fs))
                writer(atoms)
                _append_csv(log_file, log[-1], header=len(log) == 1)
    finally:
        writer(None)
    totals = np.array([row["total_eV"] for row in log])
    summary = {"ensemble": ensemble, "steps": steps, "timestep_fs": timestep_fs,
               "mean_temperature_K": float(np.mean([r["temperature_K"] for r in log[1:] or log]))}
    if ensemble == "nve":  # only NVE conserves the total energy
        summary["energy_drift_eV_per_atom"] = float(np.abs(totals - totals[0]).max() / len(atoms))
    if atoms.pbc.all():
        summary["final_volume_A3"] = atoms.get_volume()
    summary["log"] = log
    atoms.get_forces()
    return attach_results(atoms, copy=False), summary


def _log_row(atoms: Atoms, time_fs: float) -> dict:
    epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
    row = {"time_fs": time_fs, "potential_eV": epot, "kinetic_eV": ekin, "total_eV": epot + ekin,
           "temperature_K": atoms.get_temperature()}
    if atoms.pbc.all():
        row["pressure_GPa"] = float(-np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True))
                                    / 3 / units.GPa)
    return row


def _append_csv(path: str | Path | None, row: dict, header: bool) -> None:
    if path is None:
        return
    with open(path, "w" if header else "a") as handle:
        if header:
            handle.write(",".join(row) + "\n")
        handle.write(",".join(f"{value:.10g}" for value in row.values()) + "\n")


def _trajectory_writer(path: str | Path | None, atoms: Atoms) -> Callable:
    """write(atoms) appends a frame; write(None) closes. Frames are flushed as they come."""
    if path is None:
        return lambda a: None
    path = Path(path)
    if path.suffix == ".traj":
        handle = Trajectory(path, "w", atoms)
        return lambda a: handle.close() if a is None else handle.write(a)
    from ase.io import write

    path.unlink(missing_ok=True)
    return lambda a: None if a is None else write(path, a, format="extxyz", append=True)


def eos(structure: Any, calc: Calculator, strain: float = 0.06, points: int = 11,
        kind: str = "birchmurnaghan", plot: str | Path | None = None) -> dict:
    """Energy over an isotropic volume scan of +-``strain`` in lattice constant, fit by ase.eos.

    Returns V0 (A^3), E0 (eV), B0 (GPa), the lattice scale factor at V0 and the scan.
    """
    from ase.eos import EquationOfState

    atoms = _prepared(structure, calc)
    if not atoms.pbc.all():
        raise ValueError("an equation of state needs a cell periodic in all three directions")
    cell = atoms.cell.array.copy()
    volumes, energies = [], []
    for scale in np.linspace(1 - strain, 1 + strain, points):
        atoms.set_cell(cell * scale, scale_atoms=True)
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    fit = EquationOfState(volumes, energies, eos=kind)
    v0, e0, b0 = fit.fit()
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        ax = fit.plot(show=False)
        ax.figure.savefig(plot, dpi=120)
        import matplotlib.pyplot as plt

        plt.close(ax.figure)
    return {"V0_A3": float(v0), "E0_eV": float(e0), "B0_GPa": float(b0 / units.GPa),
            "scale_at_V0": float((v0 / np.linalg.det(cell)) ** (1 / 3)),
            "volumes_A3": volumes, "energies_eV": energies}


def phonons(structure: Any, calc: Calculator, supercell: tuple[int, int, int] = (3, 3, 3),
            mesh: tuple[int, int, int] = (16, 16, 16), displacement: float = 0.01,
            plot: str | Path | None = None) -> dict:
    """Phonons by finite displacements with phonopy: band structure, DOS, frequencies (THz).

    Returns frequencies at the high-symmetry points of the standard band path, the lowest
    frequency on the mesh, and ``imaginary_modes`` (True when a mode below -0.05 THz exists).
    """
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    atoms = _prepared(structure, calc)
    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions())
    # primitive_matrix="P": the given cell is the unit cell the band path refers to
    phonon = Phonopy(unit, supercell_matrix=np.diag(supercell), primitive_matrix="P")
    phonon.generate_displacements(distance=displacement)
    forces = []
    for displaced in phonon.supercells_with_displacements:
        cell = Atoms(displaced.symbols, cell=displaced.cell, pbc=True,
                     scaled_positions=displaced.scaled_positions)
        cell.calc = calc
        forces.append(cell.get_forces())
    phonon.forces = forces
    phonon.produce_force_constants()
    special, paths, connections, labels = _band_path(atoms)
    phonon.run_band_structure(paths, path_connections=connections, labels=labels)
    phonon.run_mesh(list(mesh), is_gamma_center=True)
    phonon.run_total_dos()
    lowest = float(np.min(phonon.mesh.frequencies))
    if plot:
        figure = phonon.plot_band_structure_and_dos()
        figure.savefig(plot, dpi=120)
        figure.close()
    labels = list(special)
    phonon.run_qpoints([special[label] for label in labels])
    frequencies = phonon.qpoints.frequencies
    at_points = {label: np.sort(f).tolist() for label, f in zip(labels, frequencies)}
    return {"frequencies_THz_at": at_points, "lowest_mesh_frequency_THz": lowest,
            "imaginary_modes": lowest < -0.05}


def _band_path(atoms: Atoms, points_per_segment: int = 31):
    """ASE's standard band path (Setyawan-Curtarolo) in phonopy's format.

    Returns (special points {label: scaled q}, q-point segments, path connections, labels).
    """
    from ase.dft.kpoints import parse_path_string

    path = atoms.cell.bandpath(npoints=0)
    special = {("Gamma" if k == "G" else k): np.asarray(q) for k, q in path.special_points.items()}
    segments, connections, labels = [], [], []
    for run in parse_path_string(path.path):
        run = ["Gamma" if k == "G" else k for k in run]
        for start, end in zip(run[:-1], run[1:]):
            segments.append(np.linspace(special[start], special[end], points_per_segment))
            connections.append(True)
        connections[-1] = False
        labels += run
    return special, segments, connections, labels
