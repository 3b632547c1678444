"""Small dense building blocks shared by the models."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class ShiftedSoftplus(nn.Module):
    """ssp(x) = softplus(x) - ln 2: smooth, and ssp(0) = 0 (SchNet's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place: softplus's backward reads its input, not its output, so the shift
        # needs no second (n, width) array
        return nn.functional.softplus(x).sub_(math.log(2.0))


ACTIVATIONS = {"ssp": ShiftedSoftplus, "silu": nn.SiLU, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    """Build a smooth activation by name (one of ACTIVATIONS)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(sizes: Sequence[int], activation: str = "ssp", bias: bool = True) -> nn.Sequential:
    """Linear layers of the given widths with ``activation`` between them (not after the last).

    ``mlp([64, 32, 1])`` maps (n, 64) -> (n, 1) through one hidden layer of 32.
    """
    layers: list[nn.Module] = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if k:
            layers.append(make_activation(activation))
        layers.append(nn.Linear(n_in, n_out, bias=bias))
    return nn.Sequential(*layers)
