"""Everyday simulations with any ASE calculator: relax, MD, equation of state, phonons.

Used by the ``ase-mpnn relax|md|eos|phonons`` commands and the scripts in workflows/; no
logic lives only in a script. Structures may be ase.Atoms or pymatgen Structures.
Units: eV, Angstrom, fs, K, GPa (bulk modulus), THz (phonon frequencies).

Modules: structures (read_structure, prepare, SimulationError), relaxation (relax),
integrators (ENSEMBLES, THERMOSTATS), molecular_dynamics (md), md_output (log rows, CSV
log, trajectory frames), uncertainty (a committee's largest per-atom force std, per step:
recorded, and a threshold that stops or flags a run), equation_of_state (eos),
phonon_spectrum (phonons, by displacements or from one Hessian), vibrations (frequencies and
modes from one Hessian, as ase's VibrationsData).
"""

from .equation_of_state import eos
from .integrators import ENSEMBLES, THERMOSTATS
from .molecular_dynamics import md
from .phonon_spectrum import phonons
from .relaxation import OPTIMIZERS, relax
from .structures import SimulationError, read_structure
from .vibrations import vibrations

__all__ = ["ENSEMBLES", "OPTIMIZERS", "THERMOSTATS", "SimulationError", "eos", "md", "phonons",
           "read_structure", "relax", "vibrations"]
