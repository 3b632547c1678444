"""NVE molecular dynamics conserves energy with autograd forces."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from ase_mpnn import MPNNCalculator
from ase_mpnn._compat import thermalize
from ase_mpnn.testing import scale_to_force_rms

from .conftest import make_potential


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nve_energy_drift_below_1e_4_ev_per_atom(dtype):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)  # 32 atoms
    atoms.symbols[::4] = "Ni"
    atoms.rattle(0.05, seed=3)
    # forces of a physical size: RMS 0.5 eV/A on the rattled cell
    potential = scale_to_force_rms(make_potential(seed=1, cutoff=5.0), atoms, 0.5)
    atoms.calc = MPNNCalculator(potential, dtype=dtype)
    thermalize(atoms, 300, seed=0)
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    totals, forces = [], []
    for _ in range(500):
        dynamics.run(1)
        totals.append(atoms.get_total_energy())
        forces.append(np.abs(atoms.get_forces()).max())
    drift = np.abs(np.array(totals) - totals[0]).max() / len(atoms)
    assert 0.05 < np.mean(forces) < 5.0  # the test is meaningful: forces of physical size
    assert atoms.get_temperature() > 50
    assert drift < 1e-4, f"NVE drift {drift:.2e} eV/atom"
