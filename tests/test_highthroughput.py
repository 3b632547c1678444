"""Batched evaluation and batched relaxation equal their one-by-one ASE counterparts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from ase_mpnn import MPNNCalculator
from ase_mpnn.batch import chunks_by_budget, evaluate, relax_batch
from ase_mpnn.potential import Potential

MODEL = "emt-cuni-schnet"


def small_cells(n: int, seed: int = 0) -> list[Atoms]:
    """Rattled, strained Cu-Ni cells of 1-12 atoms, some triclinic."""
    rng = np.random.default_rng(seed)
    cells = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.55 + 0.1 * rng.random(), cubic=bool(k % 2))
        atoms = atoms.repeat((1, 1, 1 + k % 3))
        atoms.symbols[rng.random(len(atoms)) < 0.4] = "Ni"
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))),
                       scale_atoms=True)
        atoms.rattle(0.05, seed=k)
        cells.append(atoms)
    return cells


def mixed_structures() -> list[Atoms]:
    """Bulk cells, a slab (2-D periodic) and a free cluster (no stress for the last two)."""
    slab = fcc111("Ni", size=(2, 2, 3), vacuum=5.0)
    slab.rattle(0.05, seed=3)
    cluster = Atoms("Cu3Ni", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [1.3, 1.3, 2.0]])
    return [*small_cells(6), slab, cluster]


def one_by_one(structures, calc):
    results = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        result = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            result["stress"] = atoms.get_stress()
        results.append(result)
    return results


def float64_calculator() -> MPNNCalculator:
    return MPNNCalculator(MODEL, device="cpu", dtype="float64")


def assert_same(batched, single, atol=1e-8):
    assert len(batched) == len(single)
    for b, s in zip(batched, single):
        assert b["energy"] == pytest.approx(s["energy"], abs=atol)
        np.testing.assert_allclose(b["forces"], s["forces"], atol=atol, rtol=0)
        assert ("stress" in b) == ("stress" in s)
        if "stress" in s:
            np.testing.assert_allclose(b["stress"], s["stress"], atol=atol, rtol=0)


@pytest.mark.parametrize("max_atoms", [4096, 10])  # one graph; many small chunks
def test_batched_evaluation_equals_one_by_one(max_atoms):
    structures = mixed_structures()
    batched = evaluate(structures, MODEL, device="cpu", dtype="float64", max_atoms=max_atoms)
    assert_same(batched, one_by_one(structures, float64_calculator()))
    assert all(r["forces"].dtype == np.float64 for r in batched)


def test_calculate_batch_and_model_objects_agree(calc):
    structures = small_cells(4)
    expected = one_by_one(structures, calc)
    assert_same(calc.calculate_batch(structures), expected)
    assert_same(evaluate(structures, calc.potential, device="cpu"), expected)
    # the calculator itself stands for its potential (the weights are shared, not reloaded)
    assert_same(evaluate(structures, calc), expected)
    relaxed = relax_batch(structures[:2], calc, fmax=0.5, steps=3)
    assert [r["energy"] for r in relaxed] == [
        r["energy"] for r in relax_batch(structures[:2], calc.potential, fmax=0.5, steps=3)]


def test_chunks_respect_atom_and_edge_budgets():
    chunks = list(chunks_by_budget([4, 4, 4, 9, 1], [10, 10, 50, 10, 10], max_atoms=8,
                                   max_edges=40))
    assert chunks == [[0, 1], [2], [3], [4]]  # 9 atoms alone: over budget on its own


def test_out_of_memory_halves_the_chunk_and_retries(monkeypatch):
    structures = small_cells(8)
    real = Potential.forward
    sizes = []

    def forward(self, graph, *args, **kwargs):
        sizes.append(int(graph["n_atoms"].shape[0]))
        if sizes[-1] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, graph, *args, **kwargs)

    monkeypatch.setattr(Potential, "forward", forward)
    batched = evaluate(structures, MODEL, device="cpu", dtype="float64")
    monkeypatch.setattr(Potential, "forward", real)
    assert sizes[:3] == [8, 4, 2] and max(s for s in sizes if s <= 2) == 2
    assert_same(batched, one_by_one(structures, float64_calculator()))


def test_bad_structures_are_reported_and_the_rest_evaluated():
    structures = small_cells(3)
    structures[1] = structures[1].copy()
    structures[1].positions[0, 0] = np.nan
    structures.append(Atoms("Au", cell=np.eye(3) * 4, pbc=True))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(structures, MODEL, device="cpu", dtype="float64")
    results = evaluate(structures, MODEL, device="cpu", dtype="float64", errors="store")
    assert "NaN" in results[1]["error"] and "Au" in results[3]["error"]
    good = [structures[0], structures[2]]
    assert_same([results[0], results[2]], one_by_one(good, float64_calculator()))


def ase_fire(atoms, calc, fmax, steps):
    atoms = atoms.copy()
    atoms.calc = calc
    target = FrechetCellFilter(atoms) if atoms.pbc.all() else atoms
    optimizer = FIRE(target, logfile=None)
    converged = optimizer.run(fmax=fmax, steps=steps)
    return atoms, optimizer.nsteps, converged


def test_batched_fire_follows_ase_fire_with_the_cell_filter():
    structures = [*small_cells(5, seed=1), mixed_structures()[-1]]
    calc = MPNNCalculator(MODEL, device="cpu", dtype="float64")
    results = relax_batch(structures, MODEL, fmax=0.01, steps=200, device="cpu", dtype="float64",
                          max_atoms=20)
    for atoms, result in zip(structures, results):
        reference, n_steps, converged = ase_fire(atoms, calc, 0.01, 200)
        assert result["converged"] == converged and result["steps"] == n_steps
        assert result["energy"] == pytest.approx(reference.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(result["atoms"].positions, reference.positions, atol=1e-6)
        np.testing.assert_allclose(result["atoms"].cell.array, reference.cell.array, atol=1e-6)
        assert result["atoms"].get_potential_energy() == result["energy"]
    assert all(np.abs(r["forces"]).max() < 0.01 for r in results)


def test_batch_stays_full_and_within_its_budget(monkeypatch):
    from ase_mpnn.batch import relax as batch_relax

    structures = small_cells(10, seed=2)
    real, batches = batch_relax.evaluate_records, []

    def spy(potential, records):
        batches.append(sum(r.n_atoms for r in records))
        return real(potential, records)

    monkeypatch.setattr(batch_relax, "evaluate_records", spy)
    results = relax_batch(structures, MODEL, fmax=0.02, steps=300, device="cpu", dtype="float64",
                          max_atoms=16)
    assert all(r["converged"] for r in results)
    assert max(batches) <= 16
    # structures enter as others converge: far fewer model calls than one-by-one steps
    assert len(batches) < 0.6 * sum(r["steps"] + 1 for r in results)


def test_relaxation_records_a_bad_structure_and_finishes_the_rest():
    structures = small_cells(3, seed=4)
    structures.insert(1, Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0.1]], cell=np.eye(3) * 5,
                               pbc=True))
    results = relax_batch(structures, MODEL, fmax=0.05, device="cpu", dtype="float64")
    assert "closer than" in results[1]["error"] or "apart" in results[1]["error"]
    assert not results[1]["converged"]
    assert all(results[i]["converged"] for i in (0, 2, 3))
