"""Everyday simulations with any ASE calculator: relax, MD, equation of state, phonons."""

from .tasks import (ENSEMBLES, OPTIMIZERS, THERMOSTATS, SimulationError, eos, md, phonons,
                    read_structure, relax)

__all__ = ["ENSEMBLES", "OPTIMIZERS", "THERMOSTATS", "SimulationError", "eos", "md", "phonons",
           "read_structure", "relax"]
