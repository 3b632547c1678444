"""``train(config)``: fit a potential to energies, forces and stress of labelled structures.

Writes, under ``config.output``:

- ``config.json``: the options of the run;
- ``checkpoint.pt``: model, optimiser, scheduler, EMA, epoch, RNGs and history, written
  atomically every epoch and on Ctrl-C, so ``resume=True`` continues exactly;
- ``best.mpnn``: the EMA weights with the lowest validation loss, an ordinary model file;
- ``metrics.csv``: one row per epoch: ``epoch``, ``train_loss`` (mean batch loss of the
  epoch), ``valid_loss``, ``lr``, ``skipped_steps`` (non-finite batches), ``minutes`` (wall
  time trained so far), then the validation errors ``valid_energy_mae``/``_rmse``
  (eV/atom), ``valid_forces_mae``/``_rmse`` (eV/A, also per element) and
  ``valid_stress_mae``/``_rmse`` (eV/A^3);
- ``learning_curve.png``, parity plots of the test set, and ``summary.json``.

The loss (``training.loss``) is w_E * MSE(E/N) + w_F * MSE(F) + w_S * MSE(sigma) in eV/atom,
eV/A and eV/A^3, each mean over the labelled frames weighted by ``config_type_weights``.
``valid_loss`` is the same loss of the EMA weights over the whole validation set (with all
weights 1: w_E * energy_rmse^2 + w_F * forces_rmse^2 + w_S * stress_rmse^2, stress of
labelled 3-D periodic frames only); it drives the LR scheduler, early stopping and the
choice of ``best.mpnn``.

The first step prints the ``check-data`` table of every data file and stops on label
errors. With ``init`` the run fine-tunes a model (``training.finetune``). A batch with a
non-finite loss or gradient is skipped (``training.trainer``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..dispersion.labels import subtract_dispersion
from ..loading import load_model
from ..models import architecture_class, build_model
from ..potential import Potential
from .config import TrainConfig
from .datacheck import check_data, format_report
from .finetune import initial_potential
from .metrics import error_metrics, format_metrics, parity_plots
from .samples import (
    GraphCache,
    Sample,
    apply_config_type_weights,
    as_paths,
    check_global_inputs_taken,
    energy_scale,
    fit_reference_energies,
    mean_neighbor_count,
    read_samples,
    species_of,
    split_isolated_atoms,
    split_samples,
)
from .trainer import RunState, Trainer, TrainingError

VALID_LOSS = ("energy_weight * MSE(E/N) + forces_weight * MSE(F) + stress_weight * MSE(stress) "
              "of the EMA weights on the validation set, each mean weighted by "
              "config_type_weights (the training loss over the whole set; with all weights 1, "
              "the squared valid_*_rmse)")


def build_potential(config: TrainConfig, train_samples: Sequence[Sample],
                    isolated_atoms: dict[str, float] | None = None) -> Potential:
    """A fresh potential whose E0 and scale come from the training data, with no shift.

    E0 (eV) per element: ``config.reference_energies`` first, then ``isolated_atoms`` (from
    the data's IsolatedAtom frames), the other elements fitted by least squares to the
    training frames with an energy, the given ones held fixed. The scale is the RMS force
    (``energy_scale``); the shift is 0, so an atom with no neighbours gets exactly its E0.
    ``config.zbl`` adds the ZBL repulsion under the network.
    """
    species = config.species or species_of(train_samples)
    model = build_model(config.architecture, species, config.cutoff,
                        **model_hyperparameters(config, train_samples))
    given = {x: e for x, e in (isolated_atoms or {}).items() if x in species}
    given.update(config.reference_energies or {})
    e0 = {**fit_reference_energies(train_samples, species, fixed=given),
          **(config.reference_energies or {})}
    return Potential(model, scale=energy_scale(train_samples, e0), reference_energies=e0,
                     repulsion=config.repulsion())


def model_hyperparameters(config: TrainConfig, train_samples: Sequence[Sample]
                          ) -> dict[str, Any]:
    """``config.hyperparameters``, plus, for architectures that divide neighbour sums by
    ``avg_num_neighbors`` (MACE, NequIP) when it is not given, its value measured on the
    training frames at ``config.cutoff``, as mace-torch and nequip do."""
    hyperparameters = dict(config.hyperparameters)
    accepted = inspect.signature(architecture_class(config.architecture).__init__).parameters
    if "avg_num_neighbors" in accepted and "avg_num_neighbors" not in hyperparameters:
        hyperparameters["avg_num_neighbors"] = round(
            mean_neighbor_count(train_samples, config.cutoff), 4)
    return hyperparameters


def _load_splits(config: TrainConfig, read: dict[str, list[Sample]] | None = None
                 ) -> tuple[dict[str, list[Sample]], dict[str, float]]:
    """Training, validation and test frames ("train", "valid", "test", possibly empty), and
    the E0s {element: eV} of the IsolatedAtom frames of all files, which are in no split.

    ``read``: samples already read per path (``DataReport.samples``); other files are read.
    Each frame gets its loss weight from ``config.config_type_weights``.
    """
    keys = config.label_keys()

    def load(paths) -> list[Sample]:
        paths = [str(p) for p in as_paths(paths)]
        if read is not None and all(p in read for p in paths):
            samples = [s for p in paths for s in read[p]]
        else:
            samples = read_samples(paths, keys, require_forces=False)
        if config.subtract_dispersion:  # the model learns the labels minus D3(BJ)
            samples = subtract_dispersion(samples, config.subtract_dispersion)
        return samples

    isolated: list[Sample] = []

    def without_isolated(samples: list[Sample]) -> list[Sample]:
        isolated.extend(s for s in samples if s.is_isolated_atom)
        return [s for s in samples if not s.is_isolated_atom]

    samples = without_isolated(load(config.data))
    fractions = [1.0 - config.valid_fraction - config.test_fraction, config.valid_fraction,
                 config.test_fraction]
    split_seed = config.seed if config.split_seed is None else config.split_seed
    train, valid, test = split_samples(samples, fractions, split_seed)
    if config.valid_data:
        train, valid = train + valid, without_isolated(load(config.valid_data))
    if config.test_data:
        train, test = train + test, without_isolated(load(config.test_data))
    if config.bootstrap:  # as many frames, drawn with replacement
        draw = np.random.default_rng(config.seed).integers(0, len(train), len(train))
        train = [train[i] for i in draw]
    if not train or not valid:
        raise ValueError(f"need training and validation frames; got {len(train)} and {len(valid)}")
    for part in (train, valid, test):
        apply_config_type_weights(part, config.config_type_weights)
    e0, _ = split_isolated_atoms(isolated)
    return {"train": train, "valid": valid, "test": test}, e0


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) a training; returns the summary (also written to summary.json)."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # the model's initial weights
    report = check_data(config.data_paths(), config.label_keys())  # first: the data table
    print(format_report(report))
    report.raise_errors()
    splits, isolated_atoms = _load_splits(config, report.samples)
    if config.init:  # fine-tuning: the model's weights, new elements added, E0 refitted
        potential = initial_potential(config, splits["train"], isolated_atoms)
    else:
        potential = build_potential(config, splits["train"], isolated_atoms)
    for samples in splits.values():  # before any batch: a clear message, not a failed step
        check_global_inputs_taken(samples, potential.global_inputs)
    potential = potential.to(device=config.device, dtype=getattr(torch, config.dtype))
    caches = {name: GraphCache(samples, potential.cutoff, potential.species)
              for name, samples in splits.items() if samples}
    trainer = Trainer(config, potential, caches, out)
    if config.resume and trainer.checkpoint.exists():
        trainer.restore(torch.load(trainer.checkpoint, weights_only=True))
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    return _finish(config, out, caches, trainer.run())


def _finish(config: TrainConfig, out: Path, caches: dict[str, GraphCache], state: RunState
            ) -> dict[str, Any]:
    """Test-set metrics of the best model, plots, and the summary."""
    dtype = getattr(torch, config.dtype)
    if not (out / "best.mpnn").exists():  # e.g. epochs=0: say so, not "no model file"
        raise TrainingError(f"no training epoch finished in {out} (epochs={config.epochs}, "
                            f"{state.epoch} done), so there is no best.mpnn to test")
    best = load_model(out / "best.mpnn", device=config.device, dtype=dtype)
    summary = {"epochs": state.epoch, "best_valid_loss": state.best,
               "valid_loss_definition": VALID_LOSS,
               "training_minutes": round(state.seconds / 60, 2),
               "n_parameters": sum(p.numel() for p in best.parameters())}
    if "test" in caches:
        metrics = error_metrics(best, caches["test"], config.batch_size, dtype, config.device,
                                keep_predictions=True)
        parity_plots(metrics.pop("predictions"), out, title=f"{config.architecture} test set")
        summary["test"] = metrics
        print(format_metrics(metrics, "test set"))
    learning_curve(state.history, out / "learning_curve.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def learning_curve(history: list[dict], path: Path) -> None:
    """Plot training and validation loss per epoch (log scale) to a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(epochs, [row["train_loss"] for row in history], label="train loss")
    ax.semilogy(epochs, [row["valid_loss"] for row in history], label="validation loss (EMA)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
