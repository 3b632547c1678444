"""Reference calculators for the active-learning tests (``reference: tests.al_reference:X``):
EMT that records each call in a file, and can fail or be "killed" on cue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT


class Killed(BaseException):
    """Stands for the process being killed: no ``except Exception`` catches it."""


class CountingEMT(EMT):
    """EMT that appends a line to ``counter`` per calculation.

    Args:
        counter: the file that counts calls (one line each).
        kill_after: raise Killed instead of the call that would be call number
            ``kill_after + 1`` (counted over every process that shares ``counter``).
        fail_every: raise RuntimeError on every ``fail_every``-th call (a failure; counted).
        nan_every: return a NaN energy on every ``nan_every``-th call (counted).
    """

    def __init__(self, counter: str, kill_after: int | None = None, fail_every: int = 0,
                 nan_every: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.counter = Path(counter)
        self.kill_after, self.fail_every, self.nan_every = kill_after, fail_every, nan_every

    def calls(self) -> int:
        return len(self.counter.read_text().splitlines()) if self.counter.exists() else 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        done = self.calls()
        if self.kill_after is not None and done >= self.kill_after:
            raise Killed(f"killed after {done} calls")
        with open(self.counter, "a") as handle:
            handle.write(f"{atoms.get_chemical_formula()}\n")
        call = done + 1
        if self.fail_every and call % self.fail_every == 0:
            raise RuntimeError(f"reference failed on call {call}")
        super().calculate(atoms, list(properties), system_changes)
        if self.nan_every and call % self.nan_every == 0:
            self.results["energy"] = np.nan
