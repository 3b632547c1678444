"""An embedding of the structure's total charge and spin multiplicity, added to every atom.

As in the peer codes (FAIRChem's UMA adds a charge/spin embedding to every atom's initial
embedding; SpookyNet, Unke et al., Nat. Commun. 12, 7273, 2021, and mace-torch's
total_charge/total_spin embeddings do the same in spirit), the global state enters as a
feature vector g(Q, M) added to each atom's element embedding before message passing:

    h_i^0 = Embed(Z_i) + g(Q, M) - g(0, 1)

g is a small MLP of the scalars Q (total charge, e) and M - 1 (twice the total spin), so
charges it saw (say -1, 0, +1) and those in between lie on one smooth curve, rather than
being unrelated table rows. Subtracting g(0, 1) makes the neutral singlet add exactly
nothing: the model then reduces to its charge-blind self on neutral closed-shell input,
and its isolated-atom reference (``Potential``) is that of the neutral atom. Message
passing then spreads the state through the structure; being a scalar, it keeps an
equivariant model's features equivariant.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import keys
from ..graph.charge_spin import GLOBAL_INPUTS, global_input
from .mlp import mlp


def check_global_inputs(names: Sequence[str] | None) -> list[str]:
    """``names`` as a list in canonical order ("charge", "spin"); unknown or repeated
    names raise ValueError naming the valid ones."""
    names = list(names or [])
    unknown = [n for n in names if n not in GLOBAL_INPUTS]
    if unknown or len(set(names)) != len(names) or isinstance(names, str):
        raise ValueError(f"global_inputs must be distinct names among {list(GLOBAL_INPUTS)}, "
                         f"got {names!r}")
    return [n for n in GLOBAL_INPUTS if n in names]


class GlobalStateEmbedding(nn.Module):
    """g(Q, M) - g(0, 1): (n_graphs,) charge and multiplicity -> (n_atoms, n_features).

    Args:
        inputs: names among GLOBAL_INPUTS ("charge", "spin") it reads.
        n_features: width of the atom features it is added to.
        activation: of the MLP's hidden layer.
    """

    def __init__(self, inputs: Sequence[str], n_features: int, activation: str = "silu"):
        super().__init__()
        self.inputs = check_global_inputs(inputs)
        self.keys = [GLOBAL_INPUTS[name] for name in self.inputs]
        self.net = mlp([len(self.inputs), n_features, n_features], activation)

    def forward(self, graph: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """The per-atom addition (n_atoms, n_features), dtype and device of ``like``."""
        columns = [global_input(graph, key, like) for key in self.keys]
        # Q as it is; M - 1 = 2S, so that the neutral singlet is the origin
        x = torch.stack([c - 1.0 if key == keys.SPIN_MULTIPLICITY else c
                         for c, key in zip(columns, self.keys)], dim=-1)
        g = self.net(x) - self.net(torch.zeros_like(x[:1]))
        return g.index_select(0, graph[keys.BATCH])


def make_global_embedding(inputs: Sequence[str] | None, n_features: int
                          ) -> GlobalStateEmbedding | None:
    """The embedding for a model's ``global_inputs``; None when it takes none."""
    inputs = check_global_inputs(inputs)
    return GlobalStateEmbedding(inputs, n_features) if inputs else None
