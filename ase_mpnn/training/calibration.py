"""Calibration of a committee's uncertainties: how well its spread ranks and sizes its errors,
and the std scale factors that make the spread match them.

Pairs (error, predicted std) on labelled frames (``UncertaintyPairs``):

- per atom: the force error norm |F_pred - F_ref| (eV/A) against ``forces_std`` (eV/A);
- per frame: the frame's force MAE, defined here as the MEAN OVER ITS ATOMS OF THE PER-ATOM
  ERROR NORM |F_pred - F_ref| (eV/A; not the mean absolute component), against the mean
  over its atoms of ``forces_std``;
- per frame: the energy error per atom |E_pred - E_ref| / n_atoms (eV/atom) against
  ``energy_std`` / n_atoms;
- per 3-D periodic frame with a stress label: the 6 Voigt stress component errors
  (eV/A^3) against ``stress_std``.

Gaussian model of the force error. ``forces_std_i = c_F sqrt(sum_a var_k F_ia^k)`` is the
norm of the per-component std, so each Cartesian component of atom i is taken as an
independent Gaussian error of the same sigma_i = forces_std_i / sqrt(3) (isotropic).
Everything below that needs a sigma (miscalibration area, NLL, the fitted factor) works on
the 3 n_atoms force COMPONENTS with that per-component sigma; a calibrated committee then
has E|e_i|^2 = 3 sigma_i^2 = forces_std_i^2, the y = x of the RMSE-vs-RMV curve, which is
binned per atom in the norm.

Metrics:

- Spearman rank correlation between error and predicted std (does the std rank the
  errors?), per atom and per frame (scipy.stats.spearmanr, ties by average rank);
- miscalibration area (Tran et al., Mach. Learn.: Sci. Technol. 1, 025006, 2020): for each
  confidence level p in [0, 1], the observed fraction of errors inside the central Gaussian
  interval +-z_{(1+p)/2} sigma against the expected p; the area between that curve and the
  diagonal (0: calibrated; at most 0.5);
- Gaussian negative log-likelihood, mean over components of
  0.5 log(2 pi sigma^2) + e^2 / (2 sigma^2), in the units of the errors (eV/A for forces);
- RMSE against RMV binned by predicted std (Levi et al., Sensors 22, 5540, 2022): equal-count
  bins of the per-atom forces_std; per bin the RMSE of the error norms and the root mean
  predicted variance, sqrt(mean forces_std^2); y = x when calibrated. Their expected
  normalised calibration error ENCE = mean over bins of |RMV - RMSE| / RMV.

Fitting (``fit_calibration``): one factor s per quantity scales the uncalibrated std,
sigma -> s sigma. The Gaussian NLL, mean of log(s sigma) + e^2 / (2 s^2 sigma^2), is
smallest at s^2 = mean(e^2 / sigma^2) over the components (Musil et al., J. Chem. Theory
Comput. 15, 906, 2019; Palmer et al., npj Comput. Mater. 8, 115, 2022). The factors are
fitted on validation frames that no member was trained on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from scipy.special import erf
from scipy.stats import spearmanr

from .. import keys
from ..committee import CALIBRATED, Committee
from ..graph import unbatch
from ..modelfile import save_model
from .samples import GraphCache, Sample

#: stds at or below this (in the quantity's units) are treated as zero: left out of the fit,
#: floored here in the NLL and the interval fractions
SIGMA_FLOOR = 1e-12
#: confidence levels at which the miscalibration area is integrated (trapezoid rule)
N_LEVELS = 1001
#: equal-count bins of the RMSE-vs-RMV curve
N_BINS = 10
_SQRT3 = math.sqrt(3.0)
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@dataclasses.dataclass
class UncertaintyPairs:
    """A committee's errors and predicted stds on labelled frames.

    Attributes:
        force_errors: (n_atoms, 3) eV/A, F_pred - F_ref of the atoms of the frames with forces.
        forces_std: (n_atoms,) eV/A, the predicted per-atom forces_std.
        frame_of_atom: (n_atoms,) int, index of the atom's frame among the frames with forces.
        energy_errors: (n_energy_frames,) eV/atom, (E_pred - E_ref) / n_atoms.
        energy_std: (n_energy_frames,) eV/atom, energy_std / n_atoms.
        stress_errors: (n_stress_frames, 6) eV/A^3, Voigt components of the stress error.
        stress_std: (n_stress_frames, 6) eV/A^3, Voigt components of stress_std.
        factors: the calibration factors the stds were computed with.
    """

    force_errors: np.ndarray
    forces_std: np.ndarray
    frame_of_atom: np.ndarray
    energy_errors: np.ndarray
    energy_std: np.ndarray
    stress_errors: np.ndarray
    stress_std: np.ndarray
    factors: dict[str, float]

    @property
    def atom_errors(self) -> np.ndarray:
        """(n_atoms,) eV/A, the per-atom force error norm |F_pred - F_ref|."""
        return np.linalg.norm(self.force_errors, axis=1)

    @property
    def frame_force_mae(self) -> np.ndarray:
        """(n_force_frames,) eV/A, mean over each frame's atoms of the error norm."""
        return _frame_mean(self.atom_errors, self.frame_of_atom)

    @property
    def frame_forces_std(self) -> np.ndarray:
        """(n_force_frames,) eV/A, mean over each frame's atoms of forces_std."""
        return _frame_mean(self.forces_std, self.frame_of_atom)

    def rescaled(self, factors: dict[str, float]) -> "UncertaintyPairs":
        """The same pairs with each std multiplied by factors[name] / self.factors[name]
        (the stds a committee calibrated with ``factors`` would give)."""
        new = {**self.factors, **{k: float(v) for k, v in factors.items()}}

        def ratio(name: str) -> float:
            return new[name] / self.factors[name]

        return dataclasses.replace(
            self, forces_std=self.forces_std * ratio("forces"),
            energy_std=self.energy_std * ratio("energy"),
            stress_std=self.stress_std * ratio("stress"), factors=new)


def _frame_mean(values: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Mean of per-atom ``values`` (n_atoms,) over each frame's atoms, (n_frames,)."""
    if not len(values):
        return np.zeros(0)
    counts = np.bincount(frame)
    return np.bincount(frame, weights=values)[counts > 0] / counts[counts > 0]


# ---------------------------------------------------------------------------------------
# the committee's predictions
# ---------------------------------------------------------------------------------------

def _as_cache(committee: Committee, data: GraphCache | Sequence[Sample]) -> GraphCache:
    """``data`` as a GraphCache (neighbour lists at the committee's cutoff)."""
    if isinstance(data, GraphCache):
        return data
    return GraphCache(list(data), committee.cutoff, committee.species)


def _check_committee(committee: Any) -> Committee:
    if not isinstance(committee, Committee):
        raise TypeError(f"uncertainty calibration needs a Committee, got a "
                        f"{type(committee).__name__} (a single model has no spread)")
    return committee


def committee_predictions(committee: Committee, data: GraphCache | Sequence[Sample],
                          batch_size: int = 8, device: str | torch.device = "cpu"
                          ) -> list[dict[str, Any]]:
    """The committee's mean and calibrated stds on every sample, in the weights' dtype.

    One dict per sample: "energy" (eV), "energy_std" (eV), "forces" (n, 3) eV/A,
    "forces_std" (n,) eV/A and, for 3-D periodic frames, "stress" and "stress_std"
    (3, 3) eV/A^3.
    """
    committee = _check_committee(committee)
    cache = _as_cache(committee, data)
    dtype = next(committee.parameters()).dtype
    was_training = committee.training
    committee.eval()
    rows: list[dict[str, Any]] = []
    try:
        for start in range(0, len(cache), batch_size):
            indices = list(range(start, min(start + batch_size, len(cache))))
            rows += _predict_batch(committee, cache, indices, dtype, device)
    finally:
        committee.train(was_training)
    return rows


def _predict_batch(committee: Committee, cache: GraphCache, indices: list[int],
                   dtype: torch.dtype, device: str | torch.device) -> list[dict[str, Any]]:
    """Rows of ``committee_predictions`` for the samples at ``indices``."""
    graph, _ = cache.batch(indices, dtype, device)
    out = committee(graph, forces=True, stress=bool(graph[keys.PBC].all(dim=1).any()))
    parts = unbatch(out, [len(cache.samples[i].atoms) for i in indices])
    rows = []
    for i, part in zip(indices, parts):
        row = {"energy": float(part[keys.ENERGY]), "energy_std": float(part[keys.ENERGY_STD]),
               "forces": part[keys.FORCES], "forces_std": part[keys.FORCES_STD]}
        if keys.STRESS in part and cache.samples[i].atoms.pbc.all():
            row.update(stress=part[keys.STRESS], stress_std=part[keys.STRESS_STD])
        rows.append(row)
    return rows


def _voigt(tensor: np.ndarray) -> np.ndarray:
    """The 6 independent components (xx yy zz yz xz xy) of a symmetric 3x3 tensor."""
    return np.array([tensor[a, b] for a, b in _VOIGT])


def uncertainty_pairs(rows: Sequence[dict[str, Any]], samples: Sequence[Sample],
                      factors: dict[str, float]) -> UncertaintyPairs:
    """UncertaintyPairs from ``committee_predictions`` rows and their labelled samples;
    ``factors``: the calibration the rows were computed with."""
    with_forces = [(r, s) for r, s in zip(rows, samples) if s.forces is not None]
    with_energy = [(r, s) for r, s in zip(rows, samples) if s.energy is not None]
    with_stress = [(r, s) for r, s in zip(rows, samples)
                   if s.stress is not None and "stress" in r]
    n = [len(s.atoms) for _, s in with_energy]
    return UncertaintyPairs(
        force_errors=np.concatenate([r["forces"] - s.forces for r, s in with_forces]
                                    or [np.zeros((0, 3))]),
        forces_std=np.concatenate([r["forces_std"] for r, _ in with_forces] or [np.zeros(0)]),
        frame_of_atom=np.concatenate([np.full(len(s.atoms), k) for k, (_, s)
                                      in enumerate(with_forces)] or [np.zeros(0, int)]),
        energy_errors=np.array([r["energy"] - s.energy for r, s in with_energy]) / n
        if n else np.zeros(0),
        energy_std=np.array([r["energy_std"] for r, _ in with_energy]) / n if n else np.zeros(0),
        stress_errors=np.array([_voigt(r["stress"] - s.stress) for r, s in with_stress]
                               ).reshape(-1, 6),
        stress_std=np.array([_voigt(r["stress_std"]) for r, _ in with_stress]).reshape(-1, 6),
        factors={name: float(v) for name, v in factors.items()})


def committee_pairs(committee: Committee, data: GraphCache | Sequence[Sample],
                    batch_size: int = 8, device: str | torch.device = "cpu"
                    ) -> UncertaintyPairs:
    """Errors and stds (with the committee's current calibration) on labelled ``data``."""
    cache = _as_cache(_check_committee(committee), data)
    rows = committee_predictions(committee, cache, batch_size, device)
    return uncertainty_pairs(rows, cache.samples, committee.calibration)


@contextlib.contextmanager
def uncalibrated(committee: Committee) -> Iterator[Committee]:
    """The committee with every calibration factor 1 inside the block, restored after."""
    saved = dict(committee.calibration)
    committee.set_calibration(dict.fromkeys(CALIBRATED, 1.0))
    try:
        yield committee
    finally:
        committee.set_calibration(saved)


# ---------------------------------------------------------------------------------------
# statistics of (error, sigma) pairs
# ---------------------------------------------------------------------------------------

def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of x and y (ties: average ranks); NaN for fewer than 3
    points or a constant input."""
    x, y = np.ravel(x), np.ravel(y)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def interval_fractions(errors: np.ndarray, sigmas: np.ndarray, levels: np.ndarray
                       ) -> np.ndarray:
    """Observed fraction of errors inside the central Gaussian interval of each confidence
    level p (|e| <= z_{(1+p)/2} sigma, i.e. erf(|e| / (sqrt(2) sigma)) <= p); (n_levels,).

    ``errors``, ``sigmas``: matching arrays (any shape) of Gaussian error components and
    their stds, in the same units.
    """
    e = np.abs(np.ravel(errors))
    s = np.maximum(np.ravel(sigmas), SIGMA_FLOOR)
    needed = np.sort(erf(e / (math.sqrt(2.0) * s)))  # the level whose interval reaches e
    return np.searchsorted(needed, levels, side="right") / max(len(needed), 1)


def miscalibration_area(errors: np.ndarray, sigmas: np.ndarray, n_levels: int = N_LEVELS
                        ) -> float:
    """Area between the observed and the expected fraction of errors inside the Gaussian
    prediction interval, over confidence levels 0..1 (Tran et al., Mach. Learn.: Sci.
    Technol. 1, 025006, 2020); 0 when calibrated, 0.5 at most; NaN without errors.

    ``errors``, ``sigmas``: error components and their per-component Gaussian stds.
    """
    if not np.size(errors):
        return float("nan")
    levels = np.linspace(0.0, 1.0, n_levels)
    gap = np.abs(interval_fractions(errors, sigmas, levels) - levels)
    return float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(levels)))


def gaussian_nll(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Mean Gaussian negative log-likelihood per component,
    0.5 log(2 pi sigma^2) + e^2 / (2 sigma^2), in the errors' units (sigma floored at
    SIGMA_FLOOR); NaN without errors."""
    e = np.ravel(errors)
    if not len(e):
        return float("nan")
    var = np.maximum(np.ravel(sigmas), SIGMA_FLOOR) ** 2
    return float(np.mean(0.5 * np.log(2 * np.pi * var) + e**2 / (2 * var)))


def nll_scale_factor(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """The factor s minimising the Gaussian NLL of ``errors`` under stds ``s * sigmas``:
    s = sqrt(mean(e^2 / sigma^2)) (Musil et al., J. Chem. Theory Comput. 15, 906, 2019;
    Palmer et al., npj Comput. Mater. 8, 115, 2022) over the components whose sigma
    exceeds SIGMA_FLOOR; NaN when there are none."""
    e, s = np.ravel(errors), np.ravel(sigmas)
    keep = s > SIGMA_FLOOR
    if not keep.any():
        return float("nan")
    return float(np.sqrt(np.mean((e[keep] / s[keep]) ** 2)))


def area_scale_factor(errors: np.ndarray, sigmas: np.ndarray, span: float = 20.0,
                      points: int = 241) -> float:
    """The factor s minimising the miscalibration area of ``errors`` under stds
    ``s * sigmas``, searched on a log grid from 1/span to span times the NLL factor.

    Heavy-tailed errors (most far below the committee's spread, a few far above) pull the
    NLL factor up, which widens every interval; this factor matches the fractions inside
    the intervals instead, which is what the miscalibration area measures. NaN when no
    component has a sigma above SIGMA_FLOOR.
    """
    start = nll_scale_factor(errors, sigmas)
    if not np.isfinite(start) or start <= 0:
        return float("nan")
    grid = start * np.exp(np.linspace(-np.log(span), np.log(span), points))
    areas = [miscalibration_area(errors, factor * np.ravel(sigmas)) for factor in grid]
    return float(grid[int(np.argmin(areas))])


#: how a calibration factor is fitted: name -> f(errors, sigmas) -> factor
FIT_METHODS = {"nll": nll_scale_factor, "area": area_scale_factor}


def rmse_rmv(errors: np.ndarray, sigmas: np.ndarray, n_bins: int = N_BINS
             ) -> dict[str, np.ndarray]:
    """Binned calibration curve (Levi et al., Sensors 22, 5540, 2022): ``errors`` (n,) and
    their predicted stds ``sigmas`` (n,) sorted by sigma into up to ``n_bins`` equal-count
    bins; per bin "rmv" = sqrt(mean sigma^2), "rmse" = sqrt(mean e^2), "count"."""
    order = np.argsort(np.ravel(sigmas), kind="stable")
    bins = [b for b in np.array_split(order, min(n_bins, len(order))) if len(b)]
    e, s = np.ravel(errors), np.ravel(sigmas)
    return {"rmv": np.array([np.sqrt(np.mean(s[b] ** 2)) for b in bins]),
            "rmse": np.array([np.sqrt(np.mean(e[b] ** 2)) for b in bins]),
            "count": np.array([len(b) for b in bins])}


def ence(curve: dict[str, np.ndarray]) -> float:
    """Expected normalised calibration error, mean over bins of |RMV - RMSE| / RMV (Levi et
    al., Sensors 22, 5540, 2022), over the bins with RMV > 0; NaN when there are none."""
    keep = curve["rmv"] > SIGMA_FLOOR
    if not keep.any():
        return float("nan")
    return float(np.mean(np.abs(curve["rmv"][keep] - curve["rmse"][keep]) / curve["rmv"][keep]))


# ---------------------------------------------------------------------------------------
# per quantity: the components and their sigmas
# ---------------------------------------------------------------------------------------

def components(pairs: UncertaintyPairs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{quantity: (error components, per-component Gaussian sigma)} for the labelled
    quantities: "forces" (3 n_atoms, sigma = forces_std / sqrt(3), eV/A), "energy" (per
    frame, eV/atom), "stress" (6 Voigt per frame, eV/A^3)."""
    out = {}
    if len(pairs.forces_std):
        out["forces"] = (pairs.force_errors.ravel(),
                         np.repeat(pairs.forces_std / _SQRT3, 3))
    if len(pairs.energy_std):
        out["energy"] = (pairs.energy_errors, pairs.energy_std)
    if len(pairs.stress_std):
        out["stress"] = (pairs.stress_errors.ravel(), pairs.stress_std.ravel())
    return out


def fit_factors(pairs: UncertaintyPairs, method: str = "nll") -> dict[str, float]:
    """Calibration factors (absolute, i.e. to multiply the UNCALIBRATED std) minimising the
    Gaussian NLL (``method="nll"``) or the miscalibration area (``"area"``) of each
    labelled quantity; quantities without a finite positive fit (no labels, zero spread,
    zero errors) are left out."""
    if method not in FIT_METHODS:
        raise ValueError(f"calibration method {method!r}: choose one of {sorted(FIT_METHODS)}")
    factors = {}
    for name, (errors, sigmas) in components(pairs).items():
        relative = FIT_METHODS[method](errors, sigmas)
        if np.isfinite(relative) and relative > 0:
            factors[name] = relative * pairs.factors[name]
    return factors


def pair_metrics(pairs: UncertaintyPairs) -> dict[str, Any]:
    """The calibration figures of ``pairs`` (JSON-safe; NaN where undefined).

    "factors" (the calibration in use), "n_frames_forces", "n_atoms",
    "forces_spearman_frame" (frame force MAE against mean forces_std),
    "forces_spearman_atom", "forces_miscalibration_area", "forces_nll" (per component,
    eV/A), "forces_ence", "forces_rmse" and "forces_rmv" (per-atom norms, eV/A); with energy
    labels "energy_spearman", "energy_miscalibration_area", "energy_nll" (eV/atom), with
    stress labels "stress_spearman", "stress_miscalibration_area", "stress_nll" (eV/A^3).
    """
    metrics: dict[str, Any] = {"factors": dict(pairs.factors),
                               "n_frames_forces": int(len(pairs.frame_force_mae)),
                               "n_atoms": int(len(pairs.forces_std))}
    for name, (errors, sigmas) in components(pairs).items():
        metrics[f"{name}_miscalibration_area"] = miscalibration_area(errors, sigmas)
        metrics[f"{name}_nll"] = gaussian_nll(errors, sigmas)
        if name != "forces":
            metrics[f"{name}_spearman"] = spearman(np.abs(errors), sigmas)
    if len(pairs.forces_std):
        metrics["forces_spearman_frame"] = spearman(pairs.frame_force_mae,
                                                    pairs.frame_forces_std)
        metrics["forces_spearman_atom"] = spearman(pairs.atom_errors, pairs.forces_std)
        metrics["forces_ence"] = ence(rmse_rmv(pairs.atom_errors, pairs.forces_std))
        metrics["forces_rmse"] = float(np.sqrt(np.mean(pairs.atom_errors**2)))
        metrics["forces_rmv"] = float(np.sqrt(np.mean(pairs.forces_std**2)))
    return metrics


# ---------------------------------------------------------------------------------------
# the committee-level entry points
# ---------------------------------------------------------------------------------------

def calibration_metrics(committee: Committee, data: GraphCache | Sequence[Sample],
                        batch_size: int = 8, device: str | torch.device = "cpu"
                        ) -> dict[str, Any]:
    """``pair_metrics`` of the committee (with its current calibration) on labelled data."""
    return pair_metrics(committee_pairs(committee, data, batch_size, device))


def fit_calibration(committee: Committee, data: GraphCache | Sequence[Sample],
                    batch_size: int = 8, device: str | torch.device = "cpu",
                    method: str = "nll") -> dict[str, float]:
    """Std scale factors {"forces": c_F, "energy": c_E, "stress": c_S} fitted on labelled
    validation ``data`` (frames no member was trained on), each for the quantities the data
    labels: with ``method="nll"`` s^2 = mean(e^2 / sigma^2) over components, sigma the
    UNCALIBRATED std (module docstring); with ``"area"`` the s of the smallest
    miscalibration area (``area_scale_factor``). The committee is evaluated with its
    calibration set to 1, which is restored after; apply the result with
    ``apply_calibration``.

    Raises ValueError when no quantity can be fitted (no labels or no spread).
    """
    with uncalibrated(_check_committee(committee)):
        pairs = committee_pairs(committee, data, batch_size, device)
    factors = fit_factors(pairs, method)
    if not factors:
        raise ValueError("no calibration factor could be fitted: the data has no labelled "
                         "frame on which the committee's members disagree")
    return factors


def apply_calibration(committee: Committee, factors: dict[str, float],
                      path: str | Path | None = None, **extra: Any) -> Path | None:
    """Set ``factors`` on the committee and, with ``path``, save it there atomically
    (``save_model``; ``extra``: manifest entries). Returns the path written, or None."""
    committee.set_calibration({name: float(value) for name, value in factors.items()})
    return None if path is None else save_model(committee, path, **extra)


# ---------------------------------------------------------------------------------------
# report: text and figure
# ---------------------------------------------------------------------------------------

_ROWS = (("forces_spearman_frame", "Spearman, frame force MAE vs mean std", "{:.3f}"),
         ("forces_spearman_atom", "Spearman, atom |dF| vs forces_std", "{:.3f}"),
         ("forces_miscalibration_area", "miscalibration area, force components", "{:.3f}"),
         ("forces_nll", "NLL per force component (eV/A)", "{:.3f}"),
         ("forces_ence", "ENCE, forces (10 bins)", "{:.3f}"),
         ("forces_rmse", "RMSE |dF| (eV/A)", "{:.4f}"),
         ("forces_rmv", "RMV forces_std (eV/A)", "{:.4f}"),
         ("energy_spearman", "Spearman, energy", "{:.3f}"),
         ("energy_miscalibration_area", "miscalibration area, energy", "{:.3f}"),
         ("energy_nll", "NLL energy (eV/atom)", "{:.3f}"),
         ("stress_miscalibration_area", "miscalibration area, stress", "{:.3f}"))


def format_calibration(columns: dict[str, dict[str, Any]], title: str = "uncertainty") -> str:
    """A table of calibration figures, one column per metrics dict (e.g. "before" and
    "after"), and the factors of each."""
    width = 42
    lines = [f"{title}:", f"  {'':{width}s}" + "".join(f"{c:>12s}" for c in columns)]
    for key, label, fmt in _ROWS:
        if any(key in m for m in columns.values()):
            cells = [fmt.format(m[key]) if key in m else "-" for m in columns.values()]
            lines.append(f"  {label:{width}s}" + "".join(f"{c:>12s}" for c in cells))
    for name in CALIBRATED:
        cells = [f"{m['factors'][name]:.3f}" for m in columns.values()]
        lines.append(f"  {'calibration factor ' + name:{width}s}"
                     + "".join(f"{c:>12s}" for c in cells))
    return "\n".join(lines)


def calibration_plot(pairs: UncertaintyPairs, path: str | Path, title: str = "",
                     max_points: int = 20000, seed: int = 0) -> Path:
    """``path`` (PNG): left, RMSE of the per-atom force error norm against RMV of forces_std
    in equal-count bins, with y = x (log-log); right, per-atom error norm against
    forces_std (log-log, at most ``max_points`` atoms drawn at random); the title gives the
    Spearman rank correlations, the miscalibration area and the NLL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = pair_metrics(pairs)
    errors, stds = pairs.atom_errors, pairs.forces_std
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    _rmse_rmv_panel(left, rmse_rmv(errors, stds))
    _scatter_panel(right, errors, stds, max_points, seed)
    fig.suptitle(f"{title}\nSpearman frame {metrics.get('forces_spearman_frame', np.nan):.2f}, "
                 f"atom {metrics.get('forces_spearman_atom', np.nan):.2f}; miscalibration "
                 f"area {metrics.get('forces_miscalibration_area', np.nan):.3f}; NLL "
                 f"{metrics.get('forces_nll', np.nan):.2f}; c_F {pairs.factors['forces']:.3g}",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _rmse_rmv_panel(ax, curve: dict[str, np.ndarray]) -> None:
    """Binned RMSE against RMV with the y = x line (eV/A), log-log when all are positive."""
    ax.plot(curve["rmv"], curve["rmse"], "o-", label="bins (equal counts)")
    values = np.concatenate([curve["rmv"], curve["rmse"]])
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    if lo > 0:  # log-log: the bins of small stds are not squeezed by the largest
        _log_axes(ax, lo, hi)
    ax.set_xlabel("RMV: root mean forces_std$^2$ (eV/A)")
    ax.set_ylabel("RMSE of |F - F_ref| (eV/A)")
    ax.legend(loc="upper left", fontsize=8)


def _scatter_panel(ax, errors: np.ndarray, stds: np.ndarray, max_points: int,
                   seed: int) -> None:
    """Per-atom error norm against forces_std, log-log (zeros clipped to the smallest
    positive value)."""
    if len(errors) > max_points:
        keep = np.random.default_rng(seed).choice(len(errors), max_points, replace=False)
        errors, stds = errors[keep], stds[keep]
    positive = np.concatenate([errors[errors > 0], stds[stds > 0]])
    floor = float(positive.min()) if len(positive) else 1e-6
    x, y = np.maximum(stds, floor), np.maximum(errors, floor)
    ax.scatter(x, y, s=4, alpha=0.4)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    _log_axes(ax, lo, hi)
    ax.set_xlabel("predicted forces_std (eV/A)")
    ax.set_ylabel("|F - F_ref| per atom (eV/A)")


def _log_axes(ax, lo: float, hi: float) -> None:
    """Log x and y from ``lo`` to ``hi`` (both > 0) with some margin, major labels only
    (minor ones crowd a range under a decade)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo / 1.2, hi * 1.2)
    ax.set_ylim(lo / 1.2, hi * 1.2)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())
