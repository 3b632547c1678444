"""The ASE integrator for each ensemble and thermostat, each with a sensible coupling time.

"nve": velocity Verlet. "nvt": "langevin" (friction 0.01 /fs), "bussi" (taut 100 fs) or
"nose-hoover" (chain, tdamp 100 fs). "npt", isotropic: "mtk" (MTK with Nose-Hoover chains,
tdamp 100 fs, pdamp 1000 fs) or "berendsen" (taut 100 fs, taup 1000 fs, compressibility
4.57e-5 /bar). The first thermostat listed for an ensemble is its default.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from ase import Atoms, units
from ase.md.bussi import Bussi
from ase.md.langevin import Langevin
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT
from ase.md.nptberendsen import NPTBerendsen
from ase.md.verlet import VelocityVerlet

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = {"nvt": ("langevin", "bussi", "nose-hoover"), "npt": ("mtk", "berendsen")}


def _langevin(atoms: Atoms, dt: float, temperature_K: float, pressure_bar: float,
              rng: np.random.Generator) -> MolecularDynamics:
    """Langevin dynamics, friction 0.01 /fs; the centre of mass is not held fixed."""
    return Langevin(atoms, dt, temperature_K=temperature_K, friction=0.01 / units.fs,
                    fixcm=False, rng=rng)


def _bussi(atoms: Atoms, dt: float, temperature_K: float, pressure_bar: float,
           rng: np.random.Generator) -> MolecularDynamics:
    """Bussi stochastic velocity rescaling, taut 100 fs."""
    return Bussi(atoms, dt, temperature_K=temperature_K, taut=100 * units.fs, rng=rng)


def _nose_hoover(atoms: Atoms, dt: float, temperature_K: float, pressure_bar: float,
                 rng: np.random.Generator) -> MolecularDynamics:
    """Nose-Hoover chain NVT, tdamp 100 fs."""
    return NoseHooverChainNVT(atoms, dt, temperature_K=temperature_K, tdamp=100 * units.fs)


def _mtk(atoms: Atoms, dt: float, temperature_K: float, pressure_bar: float,
         rng: np.random.Generator) -> MolecularDynamics:
    """Isotropic MTK barostat with Nose-Hoover chains, tdamp 100 fs, pdamp 1000 fs."""
    return IsotropicMTKNPT(atoms, dt, temperature_K=temperature_K,
                           pressure_au=pressure_bar * units.bar, tdamp=100 * units.fs,
                           pdamp=1000 * units.fs)


def _berendsen(atoms: Atoms, dt: float, temperature_K: float, pressure_bar: float,
               rng: np.random.Generator) -> MolecularDynamics:
    """Berendsen NPT, taut 100 fs, taup 1000 fs, compressibility 4.57e-5 /bar."""
    return NPTBerendsen(atoms, dt, temperature_K=temperature_K,
                        pressure_au=pressure_bar * units.bar, taut=100 * units.fs,
                        taup=1000 * units.fs, compressibility_au=4.57e-5 / units.bar,
                        fixcm=False)


#: thermostat name -> builder(atoms, timestep (ASE units), temperature K, pressure bar, rng)
BUILDERS: dict[str, Callable[..., MolecularDynamics]] = {
    "langevin": _langevin, "bussi": _bussi, "nose-hoover": _nose_hoover,
    "mtk": _mtk, "berendsen": _berendsen,
}


def integrator(atoms: Atoms, ensemble: str, thermostat: str | None, temperature_K: float,
               timestep_fs: float, pressure_bar: float,
               seed: int | None) -> MolecularDynamics:
    """The integrator for ``ensemble`` and ``thermostat`` (None: the ensemble's default).

    ``temperature_K`` (K) and ``pressure_bar`` (bar, NPT only) are the targets, the time
    step is ``timestep_fs`` (fs) and ``seed`` seeds the stochastic thermostats. Raises
    ValueError for an unknown ensemble or thermostat, or NPT without 3-D periodicity.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; choose one of {', '.join(ENSEMBLES)}")
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        return VelocityVerlet(atoms, timestep=dt)
    thermostat = thermostat or THERMOSTATS[ensemble][0]
    if thermostat not in THERMOSTATS[ensemble]:
        raise ValueError(f"unknown {ensemble} thermostat {thermostat!r}; choose one of "
                         f"{', '.join(THERMOSTATS[ensemble])}")
    if ensemble == "npt" and not atoms.pbc.all():
        raise ValueError("NPT needs a cell periodic in all three directions")
    rng = np.random.default_rng(seed)
    return BUILDERS[thermostat](atoms, dt, temperature_K, pressure_bar, rng)
