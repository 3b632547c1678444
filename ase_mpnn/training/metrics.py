"""Errors of a potential on labelled structures: MAE/RMSE tables (pooled, per element and per
config type), predictions, parity plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import keys
from ..graph import unbatch
from ..potential import Potential
from .samples import GraphCache, Sample


def predict(potential: Potential, cache: GraphCache, batch_size: int, dtype: torch.dtype,
            device: str | torch.device = "cpu") -> list[dict[str, np.ndarray | float]]:
    """Energy (eV), forces (n, 3) eV/A and, for 3-D periodic cells, stress (3, 3) eV/A^3 of
    every sample."""
    was_training = potential.training
    potential.eval()
    results = []
    for k in range(0, len(cache), batch_size):
        indices = list(range(k, min(k + batch_size, len(cache))))
        graph, _ = cache.batch(indices, dtype, device)
        out = potential(graph, forces=True, stress=bool(graph[keys.PBC].all(dim=1).any()))
        parts = unbatch(out, [len(cache.samples[i].atoms) for i in indices])
        for i, part in zip(indices, parts):
            row = {"energy": float(part[keys.ENERGY]), "forces": part[keys.FORCES]}
            if keys.STRESS in part and cache.samples[i].atoms.pbc.all():
                row["stress"] = part[keys.STRESS]
            results.append(row)
    potential.train(was_training)
    return results


def mae_rmse(errors: list[np.ndarray]) -> tuple[float, float]:
    """(MAE, RMSE) over every component of ``errors`` (any shapes); NaN, NaN when empty."""
    flat = np.concatenate([np.ravel(e) for e in errors]) if errors else np.zeros(0)
    if not len(flat):
        return float("nan"), float("nan")
    return float(np.abs(flat).mean()), float(np.sqrt((flat**2).mean()))


def _errors(pairs: list[tuple[dict, Sample]]) -> dict[str, list[tuple[np.ndarray, Sample]]]:
    """Per label, (error, sample) of the frames that have it: energy per atom (eV/atom),
    forces (n, 3) eV/A, stress (3, 3) eV/A^3 (3-D periodic frames)."""
    return {
        "energy": [(np.array((p["energy"] - s.energy) / len(s.atoms)), s) for p, s in pairs
                   if s.energy is not None],
        "forces": [(p["forces"] - s.forces, s) for p, s in pairs if s.forces is not None],
        "stress": [(p["stress"] - s.stress, s) for p, s in pairs
                   if s.stress is not None and "stress" in p],
    }


def _pooled(errors: dict[str, list[tuple[np.ndarray, Sample]]], n_structures: int
            ) -> dict[str, Any]:
    """n_structures, energy_mae/_rmse (NaN without energies), forces_ and stress_mae/_rmse
    (only when labelled)."""
    metrics: dict[str, Any] = {"n_structures": n_structures}
    metrics["energy_mae"], metrics["energy_rmse"] = mae_rmse([e for e, _ in errors["energy"]])
    for name in ("forces", "stress"):
        if errors[name]:
            metrics[f"{name}_mae"], metrics[f"{name}_rmse"] = mae_rmse(
                [e for e, _ in errors[name]])
    return metrics


def _weighted_mse(errors: list[tuple[np.ndarray, Sample]]) -> float:
    """sum_frames w |e|^2 / sum_frames w n_components, w the frames' config-type weights
    (``loss.weighted_mean_square`` pooled over the set); 0 without labels or weight."""
    total = sum(s.weight * e.size for e, s in errors)
    return float(sum(s.weight * np.sum(e**2) for e, s in errors) / total) if total > 0 else 0.0


def error_metrics(potential: Potential, cache: GraphCache, batch_size: int = 8,
                  dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                  keep_predictions: bool = False) -> dict[str, Any]:
    """MAE and RMSE of energy per atom (eV/atom), forces (eV/A, also per element) and stress
    (eV/A^3, labelled 3-D periodic frames), each over the frames that have the label:
    "energy_mae", "energy_rmse", "forces_mae_Cu", ... ("energy_mae" is NaN without energies;
    forces_ and stress_ entries are absent without labels).

    Also "by_config_type": {config_type: {"n_structures", "energy_mae", ...}} and
    "weighted_mse": {"energy", "forces", "stress"}, the mean squared errors weighted by the
    frames' config-type weights that the loss uses (``loss.py``); with all weights 1 they are
    the squared RMSEs.
    """
    predictions = predict(potential, cache, batch_size, dtype, device)
    pairs = list(zip(predictions, cache.samples))
    errors = _errors(pairs)
    metrics = _pooled(errors, len(pairs))
    if errors["forces"]:
        for symbol in sorted({x for _, s in errors["forces"] for x in s.atoms.symbols}):
            by_element = [e[s.atoms.symbols == symbol] for e, s in errors["forces"]]
            metrics[f"forces_mae_{symbol}"], metrics[f"forces_rmse_{symbol}"] = mae_rmse(
                by_element)
    metrics["weighted_mse"] = {name: _weighted_mse(errors[name]) for name in errors}
    types = sorted({s.config_type for s in cache.samples})
    metrics["by_config_type"] = {
        kind: _pooled(_errors([(p, s) for p, s in pairs if s.config_type == kind]),
                      sum(s.config_type == kind for s in cache.samples))
        for kind in types}
    if keep_predictions:
        metrics["predictions"] = pairs
    return metrics


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """A small table in meV/atom, meV/A and meV/A^3; with more than one config type, a
    per-type table of MAE (and RMSE) follows the pooled rows."""
    rows = [f"{title} ({metrics['n_structures']} structures)" if title else ""]
    units = {"energy": "meV/atom", "forces": "meV/A", "stress": "meV/A^3"}
    for name, value in metrics.items():
        if not name.endswith("_mae"):
            continue
        base = name[:-4]
        kind = base.split("_")[0]
        rmse = metrics[base + "_rmse"]
        rows.append(f"  {base:14s} MAE {1e3 * value:10.3f}  RMSE {1e3 * rmse:10.3f}"
                    f"  {units.get(kind, '')}")
    for name, value in metrics.items():
        if "_mae_" in name:
            base = name.replace("_mae", "")
            rows.append(f"  {base:14s} MAE {1e3 * value:10.3f}  RMSE "
                        f"{1e3 * metrics[name.replace('_mae_', '_rmse_')]:10.3f}  meV/A")
    by_type = metrics.get("by_config_type", {})
    if len(by_type) > 1:
        rows += _config_type_table(by_type)
    return "\n".join(r for r in rows if r)


def _config_type_table(by_type: dict[str, dict[str, Any]]) -> list[str]:
    """Rows of MAE and RMSE per config type (meV/atom, meV/A, meV/A^3; "-": no labels)."""
    columns = [(f"{kind[0].upper()} {stat.upper()}", f"{kind}_{stat}")
               for kind in ("energy", "forces", "stress") for stat in ("mae", "rmse")]
    width = max(12, *(len(kind) for kind in by_type))
    rows = ["  per config type (energy meV/atom, forces meV/A, stress meV/A^3)",
            f"  {'config type':{width}s} {'frames':>6s}"
            + "".join(f" {title:>10s}" for title, _ in columns)]
    for kind, values in by_type.items():
        cells = [values.get(name) for _, name in columns]
        rows.append(f"  {kind:{width}s} {values['n_structures']:6d}" + "".join(
            f" {1e3 * v:10.3f}" if v is not None and np.isfinite(v) else f" {'-':>10s}"
            for v in cells))
    return rows


def parity_plots(pairs: list, out: str | Path, title: str = "") -> list[Path]:
    """Predicted vs reference energy per atom and force components, as PNGs
    ``parity_energy.png`` and ``parity_forces.png`` in ``out``; returns their paths.

    ``pairs``: (prediction, Sample) as ``error_metrics(..., keep_predictions=True)`` keeps them.
    """
    out = Path(out)
    with_forces = [(p, s) for p, s in pairs if s.forces is not None]
    with_energy = [(p, s) for p, s in pairs if s.energy is not None]
    panels = [
        ("energy", "eV/atom", [s.energy / len(s.atoms) for _, s in with_energy],
         [p["energy"] / len(s.atoms) for p, s in with_energy]),
        ("forces", "eV/A", np.concatenate([s.forces.ravel() for _, s in with_forces] or [[]]),
         np.concatenate([p["forces"].ravel() for p, _ in with_forces] or [[]])),
    ]
    return [_parity_plot(np.asarray(ref), np.asarray(pred), name, unit, title,
                         out / f"parity_{name}.png")
            for name, unit, ref, pred in panels if len(ref)]


def _parity_plot(ref: np.ndarray, pred: np.ndarray, name: str, unit: str, title: str,
                 path: Path) -> Path:
    """One scatter plot of ``pred`` against ``ref`` with the diagonal and the MAE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(ref, pred, s=6, alpha=0.6)
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    mae = np.mean(np.abs(pred - ref))
    ax.set_xlabel(f"reference {name} ({unit})")
    ax.set_ylabel(f"predicted {name} ({unit})")
    ax.set_title(f"{title}\nMAE {1e3 * mae:.2f} m{unit}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
