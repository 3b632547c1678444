"""Batched relaxation: ASE's FIRE (+ FrechetCellFilter) on many structures, one graph.

Each structure keeps its own ASE optimizer, filter and convergence test, so its path is
the one ``FIRE(FrechetCellFilter(atoms)).run(fmax, steps)`` takes one-by-one (the filter's
3x3 matrix functions are replaced by equal but much faster ones, ``ase_mpnn.frechet``);
only the force evaluations are pooled: every iteration evaluates all structures still relaxing
in one batched model call (``ase_mpnn.highthroughput``). A structure that converges (or runs
out of steps) leaves the batch and the next waiting one enters, so the batch stays full.

    >>> from ase_mpnn.batch_relax import relax_batch
    >>> results = relax_batch(structures, "emt-cuni-schnet", fmax=0.02)  # doctest: +SKIP
    >>> results[0]["atoms"].get_potential_energy(), results[0]["converged"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from tqdm import tqdm

from .calculator import ModelSource, MPNNCalculator
from .frechet import accelerate
from .graph import MIN_DISTANCE, to_atoms
from .highthroughput import MAX_ATOMS, attach_results, evaluate_parts, load_potential, prepare


class _Relaxation:
    """One structure's optimizer state: its Atoms, filter, FIRE and step count."""

    def __init__(self, index: int, atoms: Atoms, cell_filter: bool, optimizer_kwargs: dict):
        self.index, self.atoms, self.start = index, atoms, time.perf_counter()
        self.relax_cell = cell_filter and bool(atoms.pbc.all())
        target = atoms
        if self.relax_cell:
            target = FrechetCellFilter(atoms)
            accelerate(target)  # scipy's 3x3 logm/expm_frechet would dominate the run time
        self.optimizer = FIRE(target, logfile=None, **optimizer_kwargs)
        self.steps = 0
        self.is_converged = False
        self.result: dict[str, Any] = {}

    def receive(self, result: dict[str, Any]) -> None:
        """Forces and stress at the current geometry, from the batched evaluation."""
        properties = {k: result[k] for k in ("energy", "free_energy", "forces", "stress")
                      if k in result}
        self.atoms.calc = SinglePointCalculator(self.atoms, **properties)
        self.result = result

    def converged(self, fmax: float) -> bool:
        self.optimizer.fmax = fmax
        return self.optimizer.gradient_converged(self.optimizer.optimizable.get_gradient())

    def step(self) -> None:
        self.optimizer.step()
        self.steps += 1


def relax_batch(
    structures: Sequence[Atoms],
    model: ModelSource | MPNNCalculator,
    *,
    fmax: float = 0.05,
    steps: int = 500,
    cell_filter: bool = True,
    device: str = "auto",
    dtype: str = "float64",
    max_atoms: int = MAX_ATOMS,
    min_distance: float = MIN_DISTANCE,
    optimizer_kwargs: dict | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Relax many structures at once with FIRE, positions and (for 3-D periodic cells when
    ``cell_filter``) the cell through ASE's FrechetCellFilter.

    Args:
        structures: ase.Atoms to relax (copied; the inputs are not changed).
        model: model object, file, built-in name or MPNNCalculator.
        fmax: convergence threshold on the largest (generalised) force, eV/A.
        steps: most FIRE steps per structure.
        cell_filter: relax the cell too (3-D periodic structures only).
        max_atoms: atoms kept relaxing together in one graph (structures wait for room; an
            out-of-memory error splits the graph).
        optimizer_kwargs: passed to ase.optimize.FIRE (e.g. maxstep, dt).

    Returns:
        One dict per structure in input order: ``atoms`` (relaxed, with its final results
        as a SinglePointCalculator), ``energy``, ``forces``, ``stress`` (periodic), ``steps``,
        ``converged`` and ``seconds`` (wall time from entering to leaving the batch); a
        structure that fails its checks or whose forces turn non-finite gets ``error``.
    """
    potential = load_potential(model, device, dtype)
    weights = next(potential.parameters())
    copies = [to_atoms(s).copy() for s in structures]
    checked = prepare(copies, potential, min_distance, errors="store")
    results: list[dict[str, Any] | None] = [
        {"error": c, "atoms": a, "converged": False, "steps": 0} if isinstance(c, str) else None
        for c, a in zip(checked, copies)]
    waiting = deque(i for i, r in enumerate(results) if r is None)
    active: list[_Relaxation] = []
    bar = tqdm(total=len(waiting), desc="relax", unit="structure", disable=not progress)

    def finish(job: _Relaxation, error: str | None = None) -> None:
        result = {"atoms": attach_results(job.atoms, job.result) if error is None else job.atoms,
                  "steps": job.steps, "converged": error is None and job.is_converged,
                  "seconds": time.perf_counter() - job.start}
        if error is None:
            result.update({k: v for k, v in job.result.items() if k != "energies"})
        else:
            result["error"] = error
        results[job.index] = result
        bar.update(1)

    while waiting or active:
        n_atoms = sum(len(job.atoms) for job in active)
        while waiting and (not active or n_atoms + len(copies[waiting[0]]) <= max_atoms):
            index = waiting.popleft()
            active.append(_Relaxation(index, copies[index], cell_filter, optimizer_kwargs or {}))
            n_atoms += len(copies[index])
        # a structure's first evaluation reuses the arrays of the up-front checks
        parts = [checked[job.index] if job.steps == 0 and not job.result
                 else prepare([job.atoms], potential, min_distance, errors="store")[0]
                 for job in active]
        still = []
        for job, part in zip(active, parts):
            if isinstance(part, str):  # e.g. atoms driven on top of each other
                finish(job, part)
            else:
                still.append((job, part))
        evaluated = evaluate_parts(potential, [p for _, p in still], weights.dtype, weights.device) \
            if still else []
        active = []
        for (job, _), result in zip(still, evaluated):
            job.receive(result)
            if not all(map(_finite, result.values())):
                finish(job, "non-finite energy, forces or stress")
                continue
            job.is_converged = job.converged(fmax)
            if job.is_converged or job.steps >= steps:
                finish(job)
                continue
            job.step()
            active.append(job)
    bar.close()
    return results  # type: ignore[return-value]


def _finite(value: Any) -> bool:
    return bool(np.all(np.isfinite(value)))
