"""Batched relaxation: ASE's FIRE (+ FrechetCellFilter) on many structures, one graph.

Each structure keeps its own ASE optimizer, filter and convergence test, so its path is
the one ``FIRE(FrechetCellFilter(atoms)).run(fmax, steps)`` takes one-by-one (the filter's
3x3 matrix functions are replaced by equal but much faster ones, ``ase_mpnn.batch.frechet``);
only the force evaluations are pooled: every iteration evaluates all structures still
relaxing in one batched model call (``ase_mpnn.batch.evaluate``). A structure that converges
(or runs out of steps) leaves the batch and the next waiting one enters, so the batch
stays full.

    >>> from ase_mpnn.batch import relax_batch
    >>> results = relax_batch(structures, "emt-cuni-schnet", fmax=0.02)  # doctest: +SKIP
    >>> results[0]["atoms"].get_potential_energy(), results[0]["converged"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from tqdm import tqdm

from ..graph import MIN_DISTANCE, Structure, to_atoms
from ..loading import ModelSource, potential_for
from ..potential import Potential
from ..results import attach_results, is_finite
from .evaluate import MAX_ATOMS, evaluate_records, prepare
from .frechet import accelerate


class Relaxation:
    """One structure's optimizer state: its Atoms, filter, FIRE, step count and results."""

    def __init__(self, index: int, atoms: Atoms, record: Structure, cell_filter: bool,
                 optimizer_kwargs: dict):
        self.index, self.atoms, self.start = index, atoms, time.perf_counter()
        self.record: Structure | None = record  # the up-front checks' record, for step 0
        target = atoms
        if cell_filter and bool(atoms.pbc.all()):
            target = FrechetCellFilter(atoms)
            accelerate(target)  # scipy's 3x3 logm/expm_frechet would dominate the run time
        self.optimizer = FIRE(target, logfile=None, **optimizer_kwargs)
        self.steps = 0
        self.converged = False
        self.results: dict[str, Any] = {}
        self.max_force_stds: list[float] = []  # a committee's, one per evaluated step, eV/A

    def receive(self, results: dict[str, Any], fmax: float) -> None:
        """Energy, forces and stress at the current geometry, from the batched evaluation."""
        attach_results(self.atoms, results, copy=False)
        self.results = results
        if "forces_std" in results:  # a committee: how far this geometry extrapolates
            self.max_force_stds.append(float(np.max(results["forces_std"])))
        self.optimizer.fmax = fmax
        self.converged = bool(self.optimizer.gradient_converged(
            self.optimizer.optimizable.get_gradient()))

    def step(self) -> None:
        self.optimizer.step()
        self.steps += 1
        self.record = None  # the geometry moved: its neighbour list must be built again

    def outcome(self, error: str | None = None) -> dict[str, Any]:
        """The result dict ``relax_batch`` returns for this structure."""
        result = {"atoms": self.atoms if error else attach_results(self.atoms, self.results),
                  "steps": self.steps, "converged": error is None and self.converged,
                  "seconds": time.perf_counter() - self.start}
        if error:
            return {**result, "error": error}
        result.update({k: v for k, v in self.results.items() if k != "energies"})
        if "forces_std" in self.results:
            result.update(self._uncertainty(result["atoms"]))
        return result

    def _uncertainty(self, atoms: Atoms) -> dict[str, Any]:
        """A committee's largest per-atom force std (eV/A) of the final geometry and the
        index of its atom (also put into ``atoms.info``), and that std of every step."""
        std = self.results["forces_std"]
        fields = {"max_force_std": float(np.max(std)), "uncertain_atom": int(np.argmax(std))}
        atoms.info.update(fields)
        return {**fields, "max_force_std_per_step": list(self.max_force_stds)}


class RelaxationBatch:
    """Admits waiting structures while the batch has room (``max_atoms``) and evaluates
    every active one in one graph."""

    def __init__(self, potential: Potential, max_atoms: int, min_distance: float,
                 cell_filter: bool, optimizer_kwargs: dict):
        self.potential, self.max_atoms, self.min_distance = potential, max_atoms, min_distance
        self.cell_filter, self.optimizer_kwargs = cell_filter, optimizer_kwargs
        self.waiting: deque[tuple[int, Atoms, Structure]] = deque()
        self.active: list[Relaxation] = []

    def admit(self) -> None:
        """Move waiting structures into the batch while their atoms fit (at least one)."""
        n_atoms = sum(len(job.atoms) for job in self.active)
        while self.waiting and (not self.active
                                or n_atoms + len(self.waiting[0][1]) <= self.max_atoms):
            index, atoms, record = self.waiting.popleft()
            self.active.append(Relaxation(index, atoms, record, self.cell_filter,
                                          self.optimizer_kwargs))
            n_atoms += len(atoms)

    def evaluate(self) -> list[tuple[Relaxation, dict[str, Any] | str]]:
        """(job, ASE results or an error message) for every active job; clears ``active``."""
        jobs, self.active = self.active, []
        records = [job.record or prepare([job.atoms], self.potential, self.min_distance,
                                         errors="store")[0] for job in jobs]
        good = [k for k, r in enumerate(records) if not isinstance(r, str)]
        results: list[dict[str, Any] | str] = list(records)  # error messages stay
        if good:
            evaluated = evaluate_records(self.potential, [records[k] for k in good])
            for k, result in zip(good, evaluated):
                results[k] = result
        return list(zip(jobs, results))


def relax_batch(
    structures: Sequence[Atoms],
    model: ModelSource,
    *,
    fmax: float = 0.05,
    steps: int = 500,
    cell_filter: bool = True,
    device: str | None = None,
    dtype: str | None = None,
    max_atoms: int = MAX_ATOMS,
    min_distance: float = MIN_DISTANCE,
    optimizer_kwargs: dict | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Relax many structures at once with FIRE, positions and (for 3-D periodic cells when
    ``cell_filter``) the cell through ASE's FrechetCellFilter.

    Args:
        structures: ase.Atoms to relax (copied; the inputs are not changed).
        model: model file, built-in name, model object, loaded Potential or an
            MPNNCalculator (its potential).
        fmax: convergence threshold on the largest (generalised) force, eV/A.
        steps: most FIRE steps per structure.
        cell_filter: relax the cell too (3-D periodic structures only).
        device: as for ``ase_mpnn.batch.evaluate``.
        dtype: as for ``ase_mpnn.batch.evaluate``.
        max_atoms: atoms kept relaxing together in one graph (structures wait for room; an
            out-of-memory error splits the graph).
        optimizer_kwargs: passed to ase.optimize.FIRE (e.g. maxstep, dt).

    Returns:
        One dict per structure in input order: ``atoms`` (relaxed, with its final results
        as a SinglePointCalculator), ``energy``, ``forces``, ``stress`` (periodic), ``steps``,
        ``converged`` and ``seconds`` (wall time from entering to leaving the batch); a
        structure that fails its checks or whose forces turn non-finite gets ``error``.
        With a committee, also its results (``forces_std``, ``energy_std``, ...) and
        ``max_force_std`` (the final geometry's largest per-atom force std over the
        members, eV/A; also in the atoms' info, with ``uncertain_atom``, that atom's
        index) and ``max_force_std_per_step`` (that std at each evaluated step, the start
        first).
    """
    potential = potential_for(model, device, dtype)
    copies = [to_atoms(s).copy() for s in structures]
    records = prepare(copies, potential, min_distance, errors="store")
    results: list[dict[str, Any] | None] = [None] * len(copies)
    batch = RelaxationBatch(potential, max_atoms, min_distance, cell_filter,
                            optimizer_kwargs or {})
    for index, (atoms, record) in enumerate(zip(copies, records)):
        if isinstance(record, str):
            results[index] = {"error": record, "atoms": atoms, "converged": False, "steps": 0}
        else:
            batch.waiting.append((index, atoms, record))
    with tqdm(total=len(batch.waiting), desc="relax", unit="structure",
              disable=not progress) as bar:
        while batch.waiting or batch.active:
            batch.admit()
            for job, result in batch.evaluate():
                outcome = _advance(job, result, fmax, steps)
                if outcome is None:
                    batch.active.append(job)
                else:
                    results[job.index] = outcome
                    bar.update(1)
    return results  # type: ignore[return-value]


def _advance(job: Relaxation, result: dict[str, Any] | str, fmax: float,
             steps: int) -> dict[str, Any] | None:
    """Give a job its forces and take one FIRE step; its outcome when it is finished."""
    if isinstance(result, str):  # e.g. atoms driven on top of each other
        return job.outcome(result)
    if not is_finite(result):
        job.results = result
        return job.outcome("non-finite energy, forces or stress")
    job.receive(result, fmax)
    if job.converged or job.steps >= steps:
        return job.outcome()
    job.step()
    return None
