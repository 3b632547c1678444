"""Fast 3x3 matrix functions for ASE's FrechetCellFilter.

The filter parametrises the cell by the matrix logarithm of its deformation gradient F and
differentiates through the matrix exponential, calling scipy's general-purpose ``logm``,
``expm`` and ``expm_frechet`` (nine times per force call). For 3x3 matrices those calls
cost milliseconds each, far more than a batched model evaluation of a small cell, so a
batched relaxation would spend nearly all its time there. The deformation gradients of a
relaxation stay close to the identity, where short power series are exact to rounding:

* log(F) = sum_k (-1)^(k+1) X^k / k with X = F - I, for ||X|| <= 1/4;
* expm and its Frechet derivative L(A, E) (the upper-right block of expm([[A, E], [0, A]]))
  by Taylor series with scaling and squaring, all nine basis directions E at once.

Outside that range the scipy functions are used. ``accelerate(filter)`` installs these on
one FrechetCellFilter; results agree with scipy's to ~1e-14 (tests).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

#: series are used while ||F - I||_2 <= this; scipy beyond
_SERIES_RADIUS = 0.25
_TAYLOR_TERMS = 18


def logm(matrix: np.ndarray) -> np.ndarray:
    """Principal matrix logarithm of a 3x3 matrix near the identity."""
    x = np.asarray(matrix, dtype=np.float64) - np.eye(3)
    if np.linalg.norm(x, 2) > _SERIES_RADIUS:
        return np.real(scipy.linalg.logm(matrix))
    result, power = np.zeros((3, 3)), np.eye(3)
    for k in range(1, 40):
        power = power @ x
        term = power / k
        result = result + term if k % 2 else result - term
        if np.abs(term).max() < 1e-18:
            break
    return result


def _expm_stack(matrices: np.ndarray) -> np.ndarray:
    """expm of a stack (..., n, n) of small matrices: Taylor series, scaling and squaring."""
    norm = float(np.abs(matrices).sum(axis=-1).max()) if matrices.size else 0.0
    squarings = max(0, math.ceil(math.log2(norm / _SERIES_RADIUS))) if norm > 0 else 0
    scaled = matrices / 2.0**squarings
    result = np.broadcast_to(np.eye(matrices.shape[-1]), matrices.shape).copy()
    term = result.copy()
    for k in range(1, _TAYLOR_TERMS + 1):
        term = term @ scaled / k
        result += term
    for _ in range(squarings):
        result = result @ result
    return result


def expm(matrix: np.ndarray) -> np.ndarray:
    """Matrix exponential of one small matrix."""
    return _expm_stack(np.asarray(matrix, dtype=np.float64)[None])[0]


def expm_frechet_basis(a: np.ndarray) -> np.ndarray:
    """L(A, E_mn) for the nine basis matrices E_mn: (3, 3, 3, 3), index [m, n] first."""
    blocks = np.zeros((9, 6, 6))
    blocks[:, :3, :3] = a
    blocks[:, 3:, 3:] = a
    for index in range(9):
        blocks[index, index // 3, 3 + index % 3] = 1.0
    return _expm_stack(blocks)[:, :3, 3:].reshape(3, 3, 3, 3)


class _FrechetCache:
    """expm_frechet with scipy's signature, computing all nine basis directions once per A."""

    def __init__(self):
        self._key: bytes | None = None
        self._basis: np.ndarray | None = None

    def __call__(self, a: np.ndarray, e: np.ndarray, compute_expm: bool = True, **kwargs):
        a, e = np.asarray(a, dtype=np.float64), np.asarray(e, dtype=np.float64)
        if kwargs or a.shape != (3, 3) or np.linalg.norm(a, 2) > 1.0:
            return scipy.linalg.expm_frechet(a, e, compute_expm=compute_expm, **kwargs)
        if a.tobytes() != self._key:
            self._key, self._basis = a.tobytes(), expm_frechet_basis(a)
        derivative = np.einsum("mn,mnij->ij", e, self._basis)  # linear in E
        return (expm(a), derivative) if compute_expm else derivative


def accelerate(cell_filter) -> None:
    """Give one ASE FrechetCellFilter these matrix functions in place of scipy's."""
    utility = getattr(cell_filter, "_utility", None)
    for owner in (cell_filter, utility):
        if owner is None:
            continue
        owner.logm, owner.expm, owner.expm_frechet = logm, expm, _FrechetCache()
