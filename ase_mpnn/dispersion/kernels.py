"""The functions of r^2 that D3 sums over periodic images (``imagesum``), each with its
derivative in r^2: dS/dd_p = sum_T 2 f'(r^2) (d_p + T) is all the sums' gradients need.
They broadcast: r2 (n_rows, n_trans) with params (n_rows, 1, k).
"""

from __future__ import annotations

from typing import Callable

import torch

#: f(r2, params, derivative) -> (value, d value / d r2 or None), shaped like r2; params
#: (..., k) the per-pair constants, broadcasting against r2
Kernel = Callable[[torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor | None]]


def bj_damping(s6: float) -> Kernel:
    """s6 / (r^6 + R0^6) + s8 qq / (r^8 + R0^8) with params (R0^6, R0^8, s8 qq) per pair."""

    def kernel(r2, params, derivative):
        r0_6, r0_8, s8qq = params.unbind(-1)
        r6 = r2 * r2 * r2
        r8 = r6 * r2
        d6, d8 = 1.0 / (r6 + r0_6), 1.0 / (r8 + r0_8)
        value = s6 * d6 + s8qq * d8
        if not derivative:
            return value, None
        return value, -(3.0 * s6 * d6 * d6 * r6 + 4.0 * s8qq * d8 * d8 * r8) / r2

    return kernel


def d3_counting(k1: float) -> Kernel:
    """The D3 coordination-number count 1 / (1 + exp(-k1 (R_cov / r - 1))), params (R_cov,)."""

    def kernel(r2, params, derivative):
        r = torch.sqrt(r2)
        radius = params[..., 0]
        value = torch.sigmoid(k1 * (radius / r - 1.0))
        if not derivative:
            return value, None
        return value, -value * (1.0 - value) * k1 * radius / (2.0 * r2 * r)

    return kernel
