"""Training never sees NaN: mixed periodicities give finite, batch-consistent gradients.

A graph that is not periodic in three directions has no volume and no stress. The loss
selects the stress of labelled 3-D periodic frames only, but the backward pass multiplies
the (zero) gradient of every masked entry by what the forward pass computed there, so a
NaN or inf anywhere in a masked branch makes every gradient of the batch NaN.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc100, molecule
from ase.calculators.emt import EMT

from ase_mpnn.models.presets import SMALL
from ase_mpnn.training.config import TrainConfig
from ase_mpnn.training.loss import batch_loss
from ase_mpnn.training.samples import GraphCache, Sample

from .conftest import make_preset

KINDS = ("bulk", "slab", "wire", "molecule")


def _labelled(atoms: Atoms, kind: str) -> Sample:
    """A Sample with EMT energy and forces (and stress for the 3-D periodic bulk cell)."""
    atoms.calc = EMT()
    stress = atoms.get_stress(voigt=False) if atoms.pbc.all() else None
    clean = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    return Sample(clean, atoms.get_potential_energy(), atoms.get_forces(), stress, kind)


def mixed_samples() -> list[Sample]:
    """Bulk (3-D, stress), slab (T, T, F), wire (T, F, F) and molecule (no pbc), Cu/Ni."""
    rng = np.random.default_rng(3)
    bulk_cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    bulk_cell.symbols[::3] = "Ni"
    bulk_cell.set_cell(bulk_cell.cell.array @ (np.eye(3) + 0.02 * rng.normal(size=(3, 3))),
                       scale_atoms=True)
    slab = fcc100("Cu", size=(2, 2, 2), a=3.6, vacuum=4.0)
    slab.symbols[1] = "Ni"
    wire = Atoms("Cu3Ni", positions=[[0, 0, 0], [1.8, 0, 0.3], [3.6, 0.2, 0], [5.4, 0, -0.2]],
                 cell=[7.2, 12.0, 12.0], pbc=(True, False, False))
    cluster = molecule("H2O")  # a shape to borrow; relabel as a metal trimer
    cluster.set_chemical_symbols(["Cu", "Ni", "Cu"])
    cluster.positions *= 2.4
    frames = [bulk_cell, slab, wire, cluster]
    for atoms in frames:
        atoms.rattle(0.05, seed=int(rng.integers(1000)))
    return [_labelled(atoms, kind) for atoms, kind in zip(frames, KINDS)]


def _gradients(potential, cache: GraphCache, indices: list[int], config: TrainConfig):
    """Loss of the batch ``indices`` and d(loss)/d(parameter) for every parameter."""
    graph, targets = cache.batch(indices, torch.float64)
    loss = batch_loss(potential, graph, targets, config)
    params = [p for p in potential.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _term_size(cache: GraphCache, indices: list[int], term: str) -> int:
    """How many squared errors the mean of one loss term runs over for a batch."""
    samples = [cache.samples[i] for i in indices]
    if term == "energy":
        return len(samples)
    if term == "forces":
        return sum(3 * len(s.atoms) for s in samples if s.forces is not None)
    return sum(9 for s in samples if s.stress is not None and s.atoms.pbc.all())


TERMS = {"energy": dict(energy_weight=1.0, forces_weight=0.0, stress_weight=0.0),
         "forces": dict(energy_weight=0.0, forces_weight=10.0, stress_weight=0.0),
         "stress": dict(energy_weight=0.0, forces_weight=0.0, stress_weight=100.0)}


@pytest.mark.parametrize("preset", sorted(SMALL))
def test_mixed_periodicity_gradients_are_finite_and_split_consistently(preset):
    """For each loss term, the gradient of one mixed batch is finite and equals the sum of
    the gradients of the same frames batched by periodicity, each weighted by its share of
    the term's mean (the loss is a mean over squared errors), to 1e-10."""
    potential = make_preset(preset).double()
    samples = mixed_samples()
    cache = GraphCache(samples, potential.cutoff, potential.species)
    everything = list(range(len(samples)))
    for term, weights in TERMS.items():
        config = TrainConfig(**weights)
        loss, combined = _gradients(potential, cache, everything, config)
        assert torch.isfinite(loss), (preset, term)
        assert all(torch.isfinite(g).all() for g in combined), (preset, term)
        total = _term_size(cache, everything, term)
        summed = [torch.zeros_like(g) for g in combined]
        for k in everything:  # one batch per periodicity kind
            share = _term_size(cache, [k], term) / total
            if share == 0:
                continue
            _, part = _gradients(potential, cache, [k], config)
            summed = [s + share * g for s, g in zip(summed, part)]
        for g, s in zip(combined, summed):
            torch.testing.assert_close(g, s, rtol=1e-10, atol=1e-10, msg=f"{preset} {term}")


def test_all_terms_together_give_finite_gradients_in_float32():
    """The case that trained on NaN: a slab and a bulk cell with stress, one batch, float32."""
    potential = make_preset("MACE")
    samples = mixed_samples()
    cache = GraphCache(samples, potential.cutoff, potential.species)
    graph, targets = cache.batch(list(range(len(samples))), torch.float32)
    loss = batch_loss(potential, graph, targets, TrainConfig(stress_weight=10.0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in potential.parameters()
               if p.grad is not None)


def test_stress_outputs_of_non_periodic_graphs_are_marked_but_differentiable():
    """NaN marks "no stress" in the output; a loss on the periodic rows has finite grads."""
    potential = make_preset("SchNet").double()
    samples = mixed_samples()
    cache = GraphCache(samples, potential.cutoff, potential.species)
    graph, _ = cache.batch(list(range(len(samples))), torch.float64)
    out = potential(graph, forces=True, stress=True, atomic_stresses=True, create_graph=True)
    periodic = graph["pbc"].all(dim=1)
    assert torch.isnan(out["stress"][~periodic]).all()
    assert torch.isfinite(out["stress"][periodic]).all()
    (out["stress"][periodic] ** 2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in potential.parameters()
               if p.grad is not None)


# --- the divergence guard ---------------------------------------------------------------

TINY = dict(n_features=8, n_interactions=1)


@pytest.fixture(scope="module")
def cuni_file(tmp_path_factory):
    from ase_mpnn.training.emt_data import emt_dataset

    return emt_dataset(["Cu", "Ni"], 16, tmp_path_factory.mktemp("data") / "cuni.extxyz",
                       seed=2, progress=False)


def _config(data, out, **options) -> TrainConfig:
    values = dict(data=str(data), valid_fraction=0.25, test_fraction=0.0, hyperparameters=TINY,
                  cutoff=4.0, batch_size=4, epochs=3, lr=1e-3, progress=False,
                  output=str(out))
    return TrainConfig(**{**values, **options})


def _poison_after(monkeypatch, first_bad_epoch: int, frames: set[int] | None = None):
    """Make the loss NaN from epoch ``first_bad_epoch`` (0-based), for every batch or only
    for batches holding one of ``frames`` (indices of the shuffled training cache)."""
    import ase_mpnn.training.trainer as trainer_module

    real_loss = trainer_module.batch_loss
    real_epoch = trainer_module.Trainer.train_epoch
    state = {"epoch": 0, "indices": None}

    def counting_epoch(self):
        state["epoch"] = self.state.epoch
        return real_epoch(self)

    def real_batch(self, indices):
        state["indices"] = indices
        return real_step(self, indices)

    real_step = trainer_module.Trainer._step

    def poisoned(potential, graph, targets, config):
        loss = real_loss(potential, graph, targets, config)
        hit = frames is None or bool(set(state["indices"]) & frames)
        return loss * torch.nan if state["epoch"] >= first_bad_epoch and hit else loss

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", counting_epoch)
    monkeypatch.setattr(trainer_module.Trainer, "_step", real_batch)
    monkeypatch.setattr(trainer_module, "batch_loss", poisoned)


def test_divergence_stops_with_the_epoch_batch_and_frames_and_keeps_the_last_good_model(
        cuni_file, tmp_path, monkeypatch):
    from ase_mpnn.loading import load_model
    from ase_mpnn.training import train
    from ase_mpnn.training.trainer import TrainingDiverged

    _poison_after(monkeypatch, first_bad_epoch=1)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"epoch 2, batch \d.*cuni\.extxyz:\d+") as info:
        train(_config(cuni_file, out, max_skipped_steps=2))
    assert "best.mpnn" in str(info.value)
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["skipped_steps"] == 0  # the last good epoch
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    best = load_model(out / "best.mpnn")
    assert all(torch.isfinite(p).all() for p in best.parameters())


def test_divergence_in_the_first_epoch_says_no_model_was_written(cuni_file, tmp_path,
                                                                   monkeypatch, capsys):
    """The CLI ends with the divergence, never with a message about a missing model file."""
    from ase_mpnn.cli import main

    _poison_after(monkeypatch, first_bad_epoch=0)
    out = tmp_path / "run"
    code = main(["train", "--data", str(cuni_file), "--output", str(out), "--epochs", "2",
                 "--set", "progress=false", "--set", "hyperparameters={\"n_features\": 8}",
                 "--set", "test_fraction=0", "--set", "max_skipped_steps=2",
                 "--set", "batch_size=2"])
    assert code == 2
    message = capsys.readouterr().err
    assert "training diverged" in message and "epoch 1, batch 2" in message
    assert "no epoch finished, so no model was written" in message
    assert "no model file" not in message
    assert not (out / "best.mpnn").exists()


def test_a_bad_batch_now_and_then_is_skipped_and_counted(cuni_file, tmp_path, monkeypatch):
    """One poisoned frame: its batch is skipped every epoch, training goes on and finishes."""
    from ase_mpnn.training import train

    _poison_after(monkeypatch, first_bad_epoch=0, frames={0})
    out = tmp_path / "run"
    summary = train(_config(cuni_file, out, epochs=3))
    assert summary["epochs"] == 3
    header, *rows = (out / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("skipped_steps")
    assert [int(row.split(",")[column]) for row in rows] == [1, 1, 1]
    assert (out / "best.mpnn").exists()


def test_best_model_exists_after_the_first_validation_even_if_it_is_not_finite(
        cuni_file, tmp_path, monkeypatch):
    """A validation loss of NaN (here forced) still leaves best.mpnn after epoch 1."""
    import ase_mpnn.training.trainer as trainer_module
    from ase_mpnn.training import train

    monkeypatch.setattr(trainer_module, "dataset_loss", lambda metrics, config: float("nan"))
    out = tmp_path / "run"
    summary = train(_config(cuni_file, out, epochs=1))
    assert summary["epochs"] == 1
    assert (out / "best.mpnn").exists()


def test_zero_epochs_is_refused_before_training(cuni_file, tmp_path):
    with pytest.raises(ValueError, match="epochs = 0: need an integer >= 1"):
        _config(cuni_file, tmp_path / "run", epochs=0)
    assert not (tmp_path / "run").exists()


def test_ema_decay_warms_up_and_resumes():
    """d_t = min(decay, (1 + t) / (10 + t)): the first update moves the average 90 % of the
    way to the weights; after many updates the configured decay holds."""
    from ase_mpnn.training.trainer import EMA

    potential = make_preset("SchNet").double()
    ema = EMA(potential, decay=0.99)
    start = [p.detach().clone() for p in potential.parameters()]
    with torch.no_grad():
        for p in potential.parameters():
            p.add_(1.0)
    ema.update(potential)
    for average, before in zip(ema.shadow.parameters(), start):
        torch.testing.assert_close(average, before + 0.9)
    ema.updates = 10**6
    ema.update(potential)
    for average, before in zip(ema.shadow.parameters(), start):
        torch.testing.assert_close(average, before + 0.9 + 0.01 * 0.1)
