"""The message-passing step (Gilmer et al., ICML 2017, eqs. 1-2) and its
permutation-invariant aggregations.

One step updates every node v from its neighbours u:

    m_v  = AGG_{u in N(v)} M(h_v, h_u, e_uv)        (eq. 1, with AGG = sum in Gilmer et al.)
    h_v' = U(h_v, m_v)                               (eq. 2)

A worked example, a path graph 1-2-3 with M = h_u + e_uv and U = h_v + 0.5 m_v (edges
stored in both directions, row 0 = receiving node v):

>>> import torch
>>> h = torch.tensor([[0.5], [1.0], [-0.2]])
>>> edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
>>> e = torch.ones(4, 1)
>>> h1 = message_passing_step(h, edges, lambda hv, hu, euv: hu + euv,
...                           lambda hv, mv: hv + 0.5 * mv, edge_attr=e)
>>> [round(x, 6) for x in h1.flatten().tolist()]
[1.5, 2.15, 0.8]

For an interatomic potential every aggregation must be smooth in the atomic positions: a
neighbour crossing the cutoff sphere may change nothing abruptly. Each aggregation here
therefore takes per-edge weights w_uv = u(r_uv) from the cutoff envelope (1 deep inside,
smoothly 0 at the cutoff) and is built so that a message of weight -> 0 contributes -> 0,
even when it is a node's last neighbour. A hard max cannot be made smooth and is refused.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .scatter import scatter_sum

#: aggregation names accepted by ``make_aggregation``; "max" is refused with a reason
AGGREGATIONS = ("sum", "mean", "smoothmax", "attention", "pna")


def message_passing_step(
    h: torch.Tensor,
    edge_index: torch.Tensor,
    message: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    update: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    aggregation: "Aggregation | None" = None,
    edge_attr: torch.Tensor | None = None,
    edge_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """One message-passing step, h -> h' (Gilmer et al. 2017, eqs. 1 and 2).

    Args:
        h: (n_nodes, d) node states h_v.
        edge_index: (2, n_edges); row 0 is the receiving node v, row 1 the sender u.
        message: M(h_v, h_u, e_uv) on gathered rows, returning (n_edges, d_m).
        update: U(h_v, m_v) returning (n_nodes, d').
        aggregation: an Aggregation module (default: plain sum).
        edge_attr: (n_edges, d_e) edge features e_uv, or None.
        edge_weight: (n_edges,) smooth cutoff weights, or None for all ones.
    """
    receivers, senders = edge_index
    messages = message(h[receivers], h[senders], edge_attr)
    aggregate = aggregation or SumAggregation()
    return update(h, aggregate(messages, edge_weight, receivers, h.shape[0]))


def _weights(weight: torch.Tensor | None, messages: torch.Tensor) -> torch.Tensor:
    if weight is None:
        return messages.new_ones(messages.shape[0], 1)
    return weight.unsqueeze(-1)


def _scatter_amax(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Per-node maximum, used only as a numerical stabiliser (no gradient flows)."""
    out = values.new_zeros((n, *values.shape[1:]))
    index = index.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
    return out.scatter_reduce(0, index, values.detach(), "amax", include_self=False)


class Aggregation(nn.Module):
    """Base class: (messages (E, d), weights (E,) or None, index (E,), n_nodes) -> (n_nodes, d')."""

    out_factor = 1  # output width = out_factor * message width


class SumAggregation(Aggregation):
    """sum_u w_uv m_uv: SchNet, CGCNN, Gilmer et al.'s eq. 1."""

    def forward(self, messages, weight, index, n_nodes):
        return scatter_sum(messages * _weights(weight, messages), index, n_nodes)


class MeanAggregation(Aggregation):
    """Envelope-weighted mean sum_u w m / (1 + sum_u w).

    The 1 in the denominator makes the mean fade smoothly to 0 as the last neighbour leaves
    (a plain mean would jump from m to 0); with many neighbours it is close to the mean.
    """

    def forward(self, messages, weight, index, n_nodes):
        w = _weights(weight, messages)
        total = scatter_sum(messages * w, index, n_nodes)
        return total / (1.0 + scatter_sum(w, index, n_nodes))


class SmoothMaxAggregation(Aggregation):
    """Log-sum-exp soft maximum, tau log(1 + sum_u w exp(m / tau)), per feature.

    The smooth stand-in for max pooling: as tau -> 0 it tends to max(0, max_u m); a
    neighbour of weight w -> 0 drops out smoothly; with no neighbours it is 0. The
    per-node shift c inside the logarithm is an exact identity, used only so exp never
    overflows, so its (detached) value does not change the function or its gradient.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, messages, weight, index, n_nodes):
        w = _weights(weight, messages)
        scaled = messages / self.temperature
        shift = _scatter_amax(scaled, index, n_nodes).clamp(min=0.0)  # >= 0: covers the "1"
        terms = scatter_sum(w * torch.exp(scaled - shift[index]), index, n_nodes)
        return self.temperature * (shift + torch.log(torch.exp(-shift) + terms))


class AttentionAggregation(Aggregation):
    """Attention over neighbours, sum_u alpha_uv m_uv, as in GAT-style models.

    alpha_uv = w_uv exp(s_uv) / (1 + sum_k w_kv exp(s_kv)), with a learned score
    s_uv = a . m_uv bounded to [-5, 5] by a tanh, so weights vanish smoothly at the cutoff.
    """

    def __init__(self, width: int, bound: float = 5.0):
        super().__init__()
        self.score = nn.Linear(width, 1)
        self.bound = float(bound)

    def forward(self, messages, weight, index, n_nodes):
        w = _weights(weight, messages)
        scores = self.bound * torch.tanh(self.score(messages) / self.bound)
        shift = _scatter_amax(scores, index, n_nodes).clamp(min=0.0)
        numerator = w * torch.exp(scores - shift[index])
        denominator = torch.exp(-shift) + scatter_sum(numerator, index, n_nodes)
        return scatter_sum(numerator * messages, index, n_nodes) / denominator


class PNAAggregation(Aggregation):
    """Principal neighbourhood aggregation (Corso et al. 2020), in smooth form.

    Aggregators mean, soft max, soft min and a smoothed standard deviation (all
    envelope-weighted as above), each with the identity and the amplification scaler
    log(1 + d) / delta, where
    d = sum_u w_uv is a smooth neighbour count and delta its typical value. PNA's
    attenuation scaler delta / log(1 + d) diverges as d -> 0 and is left out.
    """

    out_factor = 8

    def __init__(self, delta: float = math.log(13.0)):
        super().__init__()
        self.mean = MeanAggregation()
        self.max = SmoothMaxAggregation()
        self.delta = float(delta)

    def forward(self, messages, weight, index, n_nodes):
        mean = self.mean(messages, weight, index, n_nodes)
        square = self.mean(messages * messages, weight, index, n_nodes)
        # sqrt(var + 1) - 1: ~ the standard deviation for large spreads, but with a bounded
        # slope at var = 0, where sqrt(var) would give forces a singular derivative
        std = torch.sqrt(torch.relu(square - mean * mean) + 1.0) - 1.0
        maximum = self.max(messages, weight, index, n_nodes)
        minimum = -self.max(-messages, weight, index, n_nodes)
        stacked = torch.cat([mean, maximum, minimum, std], dim=-1)
        degree = scatter_sum(_weights(weight, messages), index, n_nodes)
        return torch.cat([stacked, stacked * (torch.log1p(degree) / self.delta)], dim=-1)


def make_aggregation(name: str, width: int) -> Aggregation:
    """Build an aggregation by name for messages of the given width."""
    if name == "max":
        raise ValueError(
            "aggregation 'max' is refused: a hard maximum switches between neighbours "
            "abruptly, so energies would have kinks and forces jumps; use 'smoothmax' "
            "(log-sum-exp), which tends to the maximum and stays smooth"
        )
    builders = {
        "sum": SumAggregation,
        "mean": MeanAggregation,
        "smoothmax": SmoothMaxAggregation,
        "attention": lambda: AttentionAggregation(width),
        "pna": PNAAggregation,
    }
    if name not in builders:
        raise ValueError(f"unknown aggregation {name!r}; choose one of {', '.join(AGGREGATIONS)}")
    return builders[name]()
