"""Radial bases and cutoff envelopes: functions of the interatomic distance r (Angstrom).

An envelope u(r) multiplies every message so that an atom crossing the cutoff sphere
changes nothing abruptly: u(r_c) = 0 and u'(r_c) = 0 make energy and forces continuous.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ExactGrid(nn.Module):
    """A module whose constant grid buffers are exact in whatever dtype it is moved to.

    Buffers made in torch's default dtype (float32) and then cast to float64 keep
    float32-rounded values; a subclass lists each grid's float64 value in ``exact_grids``
    and they are rewritten from it after every dtype/device move and state-dict load (a
    model file written in float32 stores the rounded grid).
    """

    def exact_grids(self) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __init__(self):
        super().__init__()
        self.register_load_state_dict_post_hook(_rewrite_grids_after_load)

    def _rewrite_grids(self) -> None:
        with torch.no_grad():
            for name, exact in self.exact_grids().items():
                buffer = self._buffers[name]
                buffer.copy_(exact.to(device=buffer.device, dtype=buffer.dtype))

    def _apply(self, *args, **kwargs):
        out = super()._apply(*args, **kwargs)
        self._rewrite_grids()
        return out


def _rewrite_grids_after_load(module: ExactGrid, _incompatible_keys) -> None:
    """Load-state-dict post-hook (a module-level function: the module stays picklable)."""
    module._rewrite_grids()


class GaussianBasis(ExactGrid):
    """Gaussians exp(-(r - mu_k)^2 / (2 w^2)) on an even grid mu_k in [start, cutoff].

    As in SchNet (Schuett et al. 2018); the width w equals the grid spacing.
    Input (n_edges,) distances; output (n_edges, n_basis).
    """

    def __init__(self, n_basis: int, cutoff: float, start: float = 0.0):
        super().__init__()
        self.grid = (float(start), float(cutoff), int(n_basis))
        centers = self.exact_grids()["centers"].to(torch.get_default_dtype())
        self.register_buffer("centers", centers)
        width = (cutoff - start) / max(n_basis - 1, 1)
        self.coefficient = -0.5 / width**2

    def exact_grids(self) -> dict[str, torch.Tensor]:
        """{"centers": the grid mu_k, float64}."""
        return {"centers": torch.linspace(*self.grid, dtype=torch.float64)}

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.coefficient * (r[:, None] - self.centers) ** 2)


class BesselBasis(ExactGrid):
    """sqrt(2/r_c) sin(k pi r / r_c) / r for k = 1..n_basis (DimeNet, NequIP).

    Input (n_edges,) distances (> 0); output (n_edges, n_basis).
    """

    def __init__(self, n_basis: int, cutoff: float):
        super().__init__()
        self.n_basis, self.cutoff = int(n_basis), float(cutoff)
        frequencies = self.exact_grids()["frequencies"].to(torch.get_default_dtype())
        self.register_buffer("frequencies", frequencies)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def exact_grids(self) -> dict[str, torch.Tensor]:
        """{"frequencies": k pi / r_c, 1/Angstrom, float64}."""
        k = torch.arange(1, self.n_basis + 1, dtype=torch.float64)
        return {"frequencies": k * math.pi / self.cutoff}

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.prefactor * torch.sin(self.frequencies * r[:, None]) / r[:, None]


class CosineCutoff(nn.Module):
    """u(r) = (cos(pi r / r_c) + 1) / 2 inside the cutoff, 0 outside (Behler 2007, SchNet).

    Value and first derivative vanish at r_c. Input and output (n_edges,).
    """

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        u = 0.5 * (torch.cos(r * (math.pi / self.cutoff)) + 1.0)
        return u * (r < self.cutoff)


class PolynomialCutoff(nn.Module):
    """The polynomial envelope of DimeNet (Klicpera et al. 2020) with exponent p.

    u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), x = r / r_c;
    value and first two derivatives vanish at r_c. Input and output (n_edges,).
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p, x = self.p, r / self.cutoff
        xp = x**p
        u = (1.0 - 0.5 * (p + 1) * (p + 2) * xp + p * (p + 2) * xp * x
             - 0.5 * p * (p + 1) * xp * x * x)
        return u * (x < 1.0)


RADIAL_BASES = {"gaussian": GaussianBasis, "bessel": BesselBasis}
ENVELOPES = {"cosine": CosineCutoff, "polynomial": PolynomialCutoff}


def make_radial_basis(name: str, n_basis: int, cutoff: float) -> nn.Module:
    """Build a radial basis by name (one of RADIAL_BASES)."""
    if name not in RADIAL_BASES:
        raise ValueError(f"unknown radial basis {name!r}; choose one of {sorted(RADIAL_BASES)}")
    return RADIAL_BASES[name](n_basis, cutoff)


def make_envelope(name: str, cutoff: float) -> nn.Module:
    """Build a cutoff envelope by name (one of ENVELOPES)."""
    if name not in ENVELOPES:
        raise ValueError(f"unknown envelope {name!r}; choose one of {sorted(ENVELOPES)}")
    return ENVELOPES[name](cutoff)
