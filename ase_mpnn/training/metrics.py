"""Errors of a potential on labelled structures: MAE/RMSE tables, predictions, parity plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import keys
from ..graph import unbatch
from ..potential import Potential
from .samples import GraphCache


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


def _mae_rmse(errors: list[np.ndarray]) -> tuple[float, float]:
    flat = np.concatenate([np.ravel(e) for e in errors]) if errors else np.zeros(0)
    if not len(flat):
        return float("nan"), float("nan")
    return float(np.abs(flat).mean()), float(np.sqrt((flat**2).mean()))


def error_metrics(potential: Potential, cache: GraphCache, batch_size: int = 8,
                  dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                  keep_predictions: bool = False) -> dict[str, Any]:
    """MAE and RMSE of energy per atom (eV/atom), forces (eV/A, also per element) and stress
    (eV/A^3, labelled 3-D periodic frames): "energy_mae", "energy_rmse", "forces_mae_Cu", ...

    The squared RMSEs are the mean squared errors the training loss weighs (``loss.py``).
    """
    predictions = predict(potential, cache, batch_size, dtype, device)
    samples = cache.samples
    metrics: dict[str, Any] = {"n_structures": len(samples)}
    energy = [np.array((p["energy"] - s.energy) / len(s.atoms))
              for p, s in zip(predictions, samples)]
    metrics["energy_mae"], metrics["energy_rmse"] = _mae_rmse(energy)
    with_forces = [(p, s) for p, s in zip(predictions, samples) if s.forces is not None]
    if with_forces:
        metrics["forces_mae"], metrics["forces_rmse"] = _mae_rmse(
            [p["forces"] - s.forces for p, s in with_forces])
        for symbol in sorted({x for _, s in with_forces for x in s.atoms.get_chemical_symbols()}):
            errors = [(p["forces"] - s.forces)[s.atoms.symbols == symbol] for p, s in with_forces]
            metrics[f"forces_mae_{symbol}"], metrics[f"forces_rmse_{symbol}"] = _mae_rmse(errors)
    stress = [p["stress"] - s.stress for p, s in zip(predictions, samples)
              if s.stress is not None and "stress" in p]
    if stress:
        metrics["stress_mae"], metrics["stress_rmse"] = _mae_rmse(stress)
    if keep_predictions:
        metrics["predictions"] = list(zip(predictions, samples))
    return metrics


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """A small table in meV/atom, meV/A and meV/A^3."""
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
    return "\n".join(r for r in rows if r)


def parity_plots(pairs: list, out: str | Path, title: str = "") -> list[Path]:
    """Predicted vs reference energy per atom and force components, as PNGs
    ``parity_energy.png`` and ``parity_forces.png`` in ``out``; returns their paths.

    ``pairs``: (prediction, Sample) as ``error_metrics(..., keep_predictions=True)`` keeps them.
    """
    out = Path(out)
    with_forces = [(p, s) for p, s in pairs if s.forces is not None]
    panels = [
        ("energy", "eV/atom", [s.energy / len(s.atoms) for _, s in pairs],
         [p["energy"] / len(s.atoms) for p, s in pairs]),
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
