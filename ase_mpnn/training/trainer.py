"""The state of a training run and the epoch loop that advances it.

A ``Trainer`` holds everything a run changes: the potential, the optimiser (Adam/AdamW),
the ReduceLROnPlateau scheduler, the exponential moving average (EMA) of the weights, the
generator that shuffles the training set, and the ``RunState`` (epoch, best validation
loss, epochs without improvement, metrics history, seconds trained). ``snapshot()`` is
``checkpoint.pt``; ``restore()`` reads it back, so a resumed run continues exactly.

Divergence guard: a batch whose loss or gradient is not finite never reaches the
optimiser. The step is skipped and counted (``skipped_steps`` in metrics.csv); after
``config.max_skipped_steps`` skipped steps in a row the run stops with ``TrainingDiverged``,
which names the epoch, the batch and its frames (``file:index``). The weights, the EMA and
``checkpoint.pt`` are those of the last good step and epoch, and ``best.mpnn`` exists as soon
as one validation has finished.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..dispersion.labels import dispersion_record
from ..errors import ASEMPNNError
from ..modelfile import atomic_write_bytes, save_model
from ..potential import Potential
from .config import TrainConfig
from .loss import batch_loss, dataset_loss
from .metrics import error_metrics
from .samples import GraphCache

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class TrainingError(ASEMPNNError, RuntimeError):
    """A training run could not produce a model."""


class TrainingDiverged(TrainingError):
    """Too many training steps in a row had a non-finite loss or gradient."""


class EMA:
    """Exponential moving average of the weights: ema <- d_t * ema + (1 - d_t) * weights.

    The decay warms up as d_t = min(decay, (1 + t) / (10 + t)) after t updates (as in
    TensorFlow's ExponentialMovingAverage with num_updates), so the average follows the
    first steps closely instead of lagging ~1 / (1 - decay) steps behind the start: it
    matters in short runs such as fine-tuning.
    """

    def __init__(self, potential: Potential, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(potential)
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, potential: Potential) -> None:
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        self.updates += 1
        for ema, p in zip(self.shadow.parameters(), potential.parameters()):
            ema.mul_(decay).add_(p.detach(), alpha=1.0 - decay)


@dataclasses.dataclass
class RunState:
    """Where a run stands; stored as top-level entries of ``checkpoint.pt``."""

    epoch: int = 0  # epochs done
    best: float = math.inf  # lowest validation loss so far
    bad_epochs: int = 0  # epochs since it last went down
    history: list[dict] = dataclasses.field(default_factory=list)  # metrics.csv rows
    seconds: float = 0.0  # wall time trained, over all resumptions
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient, in all
    stage: int = 1  # 2 once the second stage (config.stage_two_fraction) has begun
    stage_start: float = 0.0  # fraction of the budget spent when this stage began

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> "RunState":
        fields = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: saved[name] for name in fields if name in saved})


class Trainer:
    """One training run: ``run()`` trains epochs until done, writing under ``out``.

    Args:
        config: the run's options.
        potential: the potential to train, already on ``config.device`` in its dtype.
        caches: GraphCaches "train", "valid" (and "test", unused here).
        out: folder for checkpoint.pt, best.mpnn and metrics.csv.
    """

    def __init__(self, config: TrainConfig, potential: Potential, caches: dict[str, GraphCache],
                 out: Path):
        self.config, self.potential, self.caches, self.out = config, potential, caches, out
        self.dtype: torch.dtype = getattr(torch, config.dtype)
        self.optimizer = OPTIMIZERS[config.optimizer](
            potential.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = self._new_scheduler()
        self._stage_two_config = config.stage_two_weights()  # built once, not every step
        self.ema = EMA(potential, config.ema_decay)
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.state = RunState()
        self.skipped_in_a_row = 0  # steps skipped since the last good one (across epochs)
        self.session_start = time.perf_counter()  # max_minutes counts from here

    def _new_scheduler(self) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=self.config.scheduler_factor,
            patience=self.config.scheduler_patience)

    @property
    def loss_config(self) -> TrainConfig:
        """The config whose loss weights the current stage trains and validates with."""
        return self._stage_two_config if self.state.stage == 2 else self.config

    @property
    def checkpoint(self) -> Path:
        """``out/checkpoint.pt``."""
        return self.out / "checkpoint.pt"

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, EMA, optimiser, scheduler, RNGs."""
        return {"model": self.potential.state_dict(), "ema": self.ema.shadow.state_dict(),
                "ema_updates": self.ema.updates,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "shuffle": self.shuffle.get_state(),
                "torch_rng": torch.get_rng_state(), **dataclasses.asdict(self.state)}

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a ``snapshot()`` (as loaded from checkpoint.pt)."""
        self.potential.load_state_dict(saved["model"])
        self.ema.shadow.load_state_dict(saved["ema"])
        self.ema.updates = int(saved.get("ema_updates", 10**9))  # older files: warmed up
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.shuffle.set_state(saved["shuffle"])
        torch.set_rng_state(saved["torch_rng"])
        self.state = RunState.from_checkpoint(saved)

    def save_checkpoint(self) -> None:
        """Write ``snapshot()`` to checkpoint.pt atomically (a crash leaves the previous one)."""
        buffer = io.BytesIO()
        torch.save(self.snapshot(), buffer)
        atomic_write_bytes(self.checkpoint, buffer.getvalue())

    def train_epoch(self) -> tuple[float, int]:
        """One pass over the shuffled training set.

        Returns the mean loss of the steps taken and the number of steps skipped because
        their loss or gradient was not finite; raises TrainingDiverged after
        ``config.max_skipped_steps`` skipped in a row (counted across epochs).
        """
        config, cache = self.config, self.caches["train"]
        self.potential.train()
        order = torch.randperm(len(cache), generator=self.shuffle).tolist()
        losses, skipped = [], 0
        for number, k in enumerate(range(0, len(order), config.batch_size), start=1):
            indices = order[k:k + config.batch_size]
            if config.scheduler == "cosine":
                self._anneal(self.budget_spent(k / len(order)))
            loss = self._step(indices)
            if loss is not None:
                losses.append(loss)
                self.skipped_in_a_row = 0
                continue
            skipped, self.skipped_in_a_row = skipped + 1, self.skipped_in_a_row + 1
            self.state.skipped_steps += 1
            if self.skipped_in_a_row >= config.max_skipped_steps:
                raise TrainingDiverged(self._divergence_message(number, indices))
        return (float(np.mean(losses)) if losses else math.nan), skipped

    def _step(self, indices: list[int]) -> float | None:
        """One optimiser step on the batch ``indices``; its loss, or None when the loss or
        the gradient is not finite (then nothing is changed: no step, no EMA update)."""
        config = self.config
        graph, targets = self.caches["train"].batch(indices, self.dtype, config.device)
        loss = batch_loss(self.potential, graph, targets, self.loss_config)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return None
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.potential.parameters(), config.clip_grad)
        if not torch.isfinite(norm):  # NaN/inf in any gradient makes the norm non-finite
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.ema.update(self.potential)
        return loss.item()

    def _divergence_message(self, number: int, indices: list[int]) -> str:
        frames = ", ".join(self.caches["train"].samples[i].source for i in indices)
        kept = (f"checkpoint.pt holds epoch {self.state.epoch} and best.mpnn the best model "
                f"so far" if self.state.epoch else "no epoch finished, so no model was written")
        lr = self.optimizer.param_groups[0]["lr"]
        return (f"training diverged: {self.skipped_in_a_row} steps in a row had a non-finite "
                f"loss or gradient (epoch {self.state.epoch + 1}, batch {number}; frames of "
                f"the last batch: {frames}). Check those frames' labels (ase-mpnn check-data), "
                f"or lower lr (now {lr:.3g}); {kept} in {self.out}/.")

    def validate(self) -> tuple[dict[str, Any], float]:
        """Error metrics of the EMA weights on the validation set, and its loss (the training
        loss over the whole set: energy, forces and stress terms with their weights)."""
        config = self.config
        metrics = error_metrics(self.ema.shadow, self.caches["valid"], config.batch_size,
                                self.dtype, config.device)
        return metrics, dataset_loss(metrics, self.loss_config)

    def run(self) -> RunState:
        """Epochs until ``config.epochs``, early stopping or ``max_minutes``; a checkpoint
        after every epoch and on Ctrl-C (then KeyboardInterrupt goes on up)."""
        config, seconds_before = self.config, self.state.seconds
        self.session_start = time.perf_counter()
        bar = tqdm(range(self.state.epoch, config.epochs), desc="training", unit="epoch",
                   disable=not config.progress, initial=self.state.epoch, total=config.epochs)
        try:
            for _ in bar:
                if self._stage_two_due(self.session_seconds()):
                    self._start_stage_two()
                row = self._epoch()
                self.state.seconds = seconds_before + self.session_seconds()
                row["minutes"] = self.state.seconds / 60  # wall time trained, all sessions
                self._keep_if_best(row)
                self.save_checkpoint()
                _write_metrics_csv(self.out / "metrics.csv", self.state.history)
                bar.set_postfix(loss=f"{row['train_loss']:.3g}",
                                E=f"{1e3 * row.get('valid_energy_mae', math.nan):.1f}meV/at",
                                F=f"{1e3 * row.get('valid_forces_mae', 0):.0f}meV/A")
                if self._should_stop(self.session_seconds()):
                    break
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        return self.state

    def _epoch(self) -> dict[str, Any]:
        """Train, validate, step the scheduler; returns (and records) the metrics.csv row."""
        train_loss, skipped = self.train_epoch()
        metrics, valid_loss = self.validate()
        # a NaN would make the plateau scheduler's comparisons moot
        if self.config.scheduler == "plateau" and math.isfinite(valid_loss):
            self.scheduler.step(valid_loss)
        self.state.epoch += 1
        row = {"epoch": self.state.epoch, "train_loss": train_loss, "valid_loss": valid_loss,
               "lr": self.optimizer.param_groups[0]["lr"], "skipped_steps": skipped,
               "stage": self.state.stage,
               **{f"valid_{k}": v for k, v in metrics.items() if isinstance(v, float)}}
        self.state.history.append(row)
        return row

    def _keep_if_best(self, row: dict[str, Any]) -> None:
        """Save the EMA weights as best.mpnn when the validation loss went down, and always
        after the first validation, so that a finished epoch always leaves a model file."""
        best_file = self.out / "best.mpnn"
        if row["valid_loss"] < self.state.best or not best_file.exists():
            if row["valid_loss"] < self.state.best:
                self.state.best, self.state.bad_epochs = row["valid_loss"], 0
            save_model(self.ema.shadow, best_file, training=_provenance(self.config, row),
                       **_dispersion_entry(self.config))
        else:
            self.state.bad_epochs += 1

    def _should_stop(self, seconds: float) -> bool:
        """Early stopping, or this session's wall time (``seconds``) over max_minutes.
        Early stopping in the first stage starts the second instead, when there is one."""
        config = self.config
        if self.state.bad_epochs >= config.early_stopping_patience:
            if self.state.stage == 1 and config.stage_two_fraction > 0:
                self._start_stage_two()
                return False
            return True
        return bool(config.max_minutes) and seconds > 60 * config.max_minutes

    def _stage_two_due(self, seconds: float) -> bool:
        """Whether the second stage should begin before the next epoch: the run is in its
        first stage and past 1 - stage_two_fraction of its epochs or of max_minutes
        (``seconds``: this session's wall time)."""
        config = self.config
        if self.state.stage != 1 or config.stage_two_fraction <= 0:
            return False
        first = 1.0 - config.stage_two_fraction
        by_minutes = bool(config.max_minutes) and seconds >= first * 60 * config.max_minutes
        return self.state.epoch >= first * config.epochs or by_minutes

    def _start_stage_two(self) -> None:
        """Switch to the second stage's loss weights and learning rate. The validation loss
        changes meaning, so the best loss, the early-stopping count and the scheduler start
        afresh: best.mpnn is replaced by the first second-stage validation."""
        self.state.stage, self.state.stage_start = 2, self.budget_spent()
        self.state.best, self.state.bad_epochs = math.inf, 0
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.stage_two_lr
        self.scheduler = self._new_scheduler()
        tqdm.write(f"epoch {self.state.epoch}: second stage, lr {self.config.stage_two_lr:g}, "
                   f"loss weights E {self.loss_config.energy_weight:g}, F "
                   f"{self.loss_config.forces_weight:g}, S {self.loss_config.stress_weight:g}")

    def session_seconds(self) -> float:
        """Wall time since this session's ``run()`` began (the clock of ``max_minutes``)."""
        return time.perf_counter() - self.session_start

    def budget_spent(self, epoch_fraction: float = 0.0) -> float:
        """The fraction of the run's budget spent, in [0, 1]: the larger of the epochs done
        (plus ``epoch_fraction`` of the current one) over ``epochs`` and this session's wall
        time over ``max_minutes`` (the clock ``max_minutes`` stops on)."""
        config = self.config
        spent = (self.state.epoch + epoch_fraction) / config.epochs
        if config.max_minutes:
            spent = max(spent, self.session_seconds() / (60.0 * config.max_minutes))
        return min(1.0, spent)

    def _anneal(self, spent: float) -> None:
        """Set the cosine schedule's lr for the budget fraction ``spent``: half a cosine from
        the stage's first lr (``lr``, or ``stage_two_lr``) down to ``lr_final_factor`` times
        it, over the stage's share of the budget (the first stage ends where the second is
        due, the second at the end of the budget)."""
        config = self.config
        if self.state.stage == 1:
            first, begin, end = config.learning_rate, 0.0, 1.0 - config.stage_two_fraction
        else:
            first, begin, end = config.stage_two_lr, self.state.stage_start, 1.0
        progress = min(1.0, max(0.0, (spent - begin) / max(end - begin, 1e-12)))
        final = config.lr_final_factor
        lr = first * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def _dispersion_entry(config: TrainConfig) -> dict:
    """{"dispersion": record} for a model trained on D3-subtracted labels, else {}."""
    if not config.subtract_dispersion:
        return {}
    return {"dispersion": dispersion_record(config.subtract_dispersion)}


def _provenance(config: TrainConfig, row: dict) -> dict:
    return {"config": {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"},
            "epoch": row["epoch"], "valid_loss": row["valid_loss"]}


def _write_metrics_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    columns = list(dict.fromkeys(name for row in history for name in row))  # all, in order
    lines = [",".join(columns)] + [",".join(_csv_value(row.get(c, "")) for c in columns)
                                   for row in history]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def _csv_value(value: Any) -> str:
    return f"{value:.8g}" if isinstance(value, float) else str(value)
