"""The training loop: energies, forces and stress of labelled structures.

``train(config)`` fits a potential and writes, under ``config.output``: ``checkpoint.pt``
(model, optimiser, scheduler, EMA, epoch, RNG: written atomically every epoch and on
Ctrl-C, so ``resume=True`` continues exactly), ``best.mpnn`` (the EMA weights with the
lowest validation loss, an ordinary model file), ``metrics.csv`` (one row per epoch),
``learning_curve.png`` and parity plots of the test set.

Loss per batch = w_E * mean((dE / N)^2) + w_F * mean(dF^2) + w_S * mean(dsigma^2), in eV
per atom, eV/A and eV/A^3.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .. import keys
from ..modelfile import atomic_write_bytes, save_model
from ..models import build_model
from ..potential import Potential
from .samples import (GraphCache, Sample, energy_statistics, fit_atomic_energies, read_samples,
                   species_of, split_samples)
from ..loading import load_model
from .metrics import error_metrics, format_metrics, parity_plots


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (read from YAML by ``ase-mpnn train``)."""

    data: str = ""  # file with all frames (split below) or the training frames
    valid_data: str | None = None  # optional separate validation file
    test_data: str | None = None  # optional separate test file
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    keys: dict[str, str] = dataclasses.field(default_factory=dict)  # label keys
    architecture: str = "SchNet"
    species: list[str] | None = None  # default: the elements in the data
    cutoff: float = 5.0
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    atomic_energies: dict[str, float] | None = None  # E0; default: least-squares fit
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 0.0
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    clip_grad: float = 10.0
    scheduler_patience: int = 5
    scheduler_factor: float = 0.5
    ema_decay: float = 0.99
    early_stopping_patience: int = 30
    max_minutes: float | None = None  # stop (with a checkpoint) after this wall time
    dtype: str = "float32"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    output: str = "training"
    resume: bool = False
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; valid: {sorted(known)}")
        return cls(**values)


def build_potential(config: TrainConfig, train_samples: Sequence[Sample]) -> Potential:
    """A fresh potential whose E0, shift and scale come from the training data."""
    species = config.species or species_of(train_samples)
    model = build_model(config.architecture, species, config.cutoff, **config.hyperparameters)
    e0 = config.atomic_energies or fit_atomic_energies(train_samples, species)
    shift, scale = energy_statistics(train_samples, e0)
    return Potential(model, scale=scale, shift=shift, atomic_energies=e0)


def batch_loss(potential: Potential, graph: dict, targets: dict, config: TrainConfig) -> torch.Tensor:
    """Weighted energy-per-atom, force and stress mean-squared errors of one batch."""
    wants_stress = config.stress_weight > 0 and bool(targets["stress_mask"].any())
    out = potential(graph, forces=config.forces_weight > 0, stress=wants_stress, create_graph=True)
    n_atoms = graph[keys.N_ATOMS].to(out[keys.ENERGY].dtype)
    loss = config.energy_weight * (((out[keys.ENERGY] - targets["energy"]) / n_atoms) ** 2).mean()
    if config.forces_weight > 0 and bool(targets["forces_mask"].any()):
        mask = targets["forces_mask"]
        loss = loss + config.forces_weight * ((out[keys.FORCES][mask] - targets["forces"][mask]) ** 2).mean()
    if wants_stress:
        mask = targets["stress_mask"]
        loss = loss + config.stress_weight * ((out[keys.STRESS][mask] - targets["stress"][mask]) ** 2).mean()
    return loss


class EMA:
    """Exponential moving average of the weights: ema <- d * ema + (1 - d) * weights."""

    def __init__(self, potential: Potential, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(potential)
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, potential: Potential) -> None:
        for ema, p in zip(self.shadow.parameters(), potential.parameters()):
            ema.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)


def _load_splits(config: TrainConfig) -> tuple[list[Sample], list[Sample], list[Sample]]:
    samples = read_samples(config.data, config.keys)
    fractions = [1.0 - config.valid_fraction - config.test_fraction, config.valid_fraction,
                 config.test_fraction]
    train, valid, test = split_samples(samples, fractions, config.seed)
    if config.valid_data:
        train, valid = train + valid, read_samples(config.valid_data, config.keys)
    if config.test_data:
        train, test = train + test, read_samples(config.test_data, config.keys)
    if not train or not valid:
        raise ValueError(f"need training and validation frames; got {len(train)} and {len(valid)}")
    return train, valid, test


def _save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _write_metrics_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    columns = list(history[0])
    lines = [",".join(columns)] + [",".join(f"{row[c]:.8g}" if isinstance(row[c], float)
                                            else str(row[c]) for c in columns) for row in history]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) a training; returns a summary with the test-set metrics."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, config.dtype)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    train_samples, valid_samples, test_samples = _load_splits(config)
    potential = build_potential(config, train_samples).to(device=config.device, dtype=dtype)
    species, cutoff = potential.species, potential.cutoff
    caches = {name: GraphCache(s, cutoff, species) for name, s in
              [("train", train_samples), ("valid", valid_samples), ("test", test_samples)] if s}
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    optimizer = optimizer_class(potential.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.scheduler_factor, patience=config.scheduler_patience)
    ema = EMA(potential, config.ema_decay)
    shuffle = torch.Generator().manual_seed(config.seed)
    state = {"epoch": 0, "best": math.inf, "bad_epochs": 0, "history": [], "seconds": 0.0}
    checkpoint = out / "checkpoint.pt"
    if config.resume and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)
        potential.load_state_dict(saved["model"])
        ema.shadow.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        shuffle.set_state(saved["shuffle"])
        torch.set_rng_state(saved["torch_rng"])
        state = {k: saved.get(k, v) for k, v in state.items()}
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))

    def snapshot() -> dict:
        return {"model": potential.state_dict(), "ema": ema.shadow.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "shuffle": shuffle.get_state(), "torch_rng": torch.get_rng_state(), **state}

    start, seconds_before = time.perf_counter(), state["seconds"]
    bar = tqdm(range(state["epoch"], config.epochs), desc="training", unit="epoch",
               disable=not config.progress, initial=state["epoch"], total=config.epochs)
    try:
        for epoch in bar:
            potential.train()
            order = torch.randperm(len(caches["train"]), generator=shuffle).tolist()
            losses = []
            for k in range(0, len(order), config.batch_size):
                graph, targets = caches["train"].batch(order[k:k + config.batch_size], dtype, config.device)
                loss = batch_loss(potential, graph, targets, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(potential.parameters(), config.clip_grad)
                optimizer.step()
                ema.update(potential)
                losses.append(loss.item())
            metrics = error_metrics(ema.shadow, caches["valid"], config.batch_size, dtype, config.device)
            valid_loss = (config.energy_weight * metrics["energy_rmse"] ** 2
                          + config.forces_weight * metrics.get("forces_rmse", 0.0) ** 2)
            scheduler.step(valid_loss)
            state["epoch"] = epoch + 1
            state["seconds"] = seconds_before + time.perf_counter() - start
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "valid_loss": valid_loss,
                   "lr": optimizer.param_groups[0]["lr"],
                   **{f"valid_{k}": v for k, v in metrics.items() if isinstance(v, float)}}
            state["history"].append(row)
            if valid_loss < state["best"]:
                state["best"], state["bad_epochs"] = valid_loss, 0
                save_model(ema.shadow, out / "best.mpnn", training=_provenance(config, row))
            else:
                state["bad_epochs"] += 1
            _save_checkpoint(checkpoint, snapshot())
            _write_metrics_csv(out / "metrics.csv", state["history"])
            bar.set_postfix(loss=f"{row['train_loss']:.3g}",
                            E=f"{1e3 * metrics['energy_mae']:.1f}meV/at",
                            F=f"{1e3 * metrics.get('forces_mae', 0):.0f}meV/A")
            if state["bad_epochs"] >= config.early_stopping_patience:
                break
            if config.max_minutes and time.perf_counter() - start > 60 * config.max_minutes:
                break
    except KeyboardInterrupt:
        _save_checkpoint(checkpoint, snapshot())
        raise
    return _finish(config, out, caches, dtype, state)


def _provenance(config: TrainConfig, row: dict) -> dict:
    return {"config": {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"},
            "epoch": row["epoch"], "valid_loss": row["valid_loss"]}


def _finish(config: TrainConfig, out: Path, caches: dict, dtype: torch.dtype, state: dict) -> dict:
    """Test-set metrics of the best model, plots, and the summary."""
    best = load_model(out / "best.mpnn", device=config.device, dtype=dtype)
    summary = {"epochs": state["epoch"], "best_valid_loss": state["best"],
               "training_minutes": round(state["seconds"] / 60, 2),
               "n_parameters": sum(p.numel() for p in best.parameters())}
    if "test" in caches:
        metrics = error_metrics(best, caches["test"], config.batch_size, dtype, config.device,
                           keep_predictions=True)
        parity_plots(metrics.pop("predictions"), out, title=f"{config.architecture} test set")
        summary["test"] = metrics
        print(format_metrics(metrics, "test set"))
    learning_curve(state["history"], out / "learning_curve.png")
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
