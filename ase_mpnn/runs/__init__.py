"""``ase-mpnn run``: static, relax and MD tasks on many structures, over Dask, into an
ase.db results database that a rerun resumes."""

from .distributed import TASKS, run
from .inputs import InputFrame, UnreadableInput, read_inputs, structure_sha
from .results_db import ResultsDB, summary

__all__ = ["TASKS", "InputFrame", "ResultsDB", "UnreadableInput", "read_inputs", "run",
           "structure_sha", "summary"]
