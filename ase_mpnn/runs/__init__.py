"""``ase-mpnn run``: static, relax and MD tasks on many structures, over Dask, into an
ase.db results database that a rerun resumes."""

from .distributed import TASKS, run
from .results_db import ResultsDB, read_inputs, summary

__all__ = ["TASKS", "ResultsDB", "read_inputs", "run", "summary"]
