"""Two fixes to e3nn modules: exact Clebsch-Gordan tables in any dtype, and no dead einsums.

Exact constants: e3nn stores its Clebsch-Gordan tables (Wigner 3j symbols) as buffers
created in torch's default dtype, float32; a model moved to float64 would keep
float32-rounded coefficients and be equivariant only to ~1e-7. ``exact_constants_``
rewrites them from e3nn's float64 tables, and ``ExactConstantsMixin`` does so after every
dtype/device move and every state-dict load. Constant tables of our own (the
convolution's and the product basis's coupling coefficients) take part through a
``_exact_constants`` dict of float64 master copies on the module that owns the buffers.

Dead code: e3nn's generated tensor-product code computes, for every path, an outer product
it never uses; ``drop_dead_code_`` removes those einsums (results unchanged).
"""

from __future__ import annotations

import re

import torch
from e3nn import o3
from torch import nn

#: name of e3nn's Wigner-3j buffers in its generated code: ``_w3j_l1_l2_l3``
_W3J_BUFFER = re.compile(r"^_w3j_(\d+)_(\d+)_(\d+)$")

#: torch.einsum as it appears in the call targets of e3nn's FX graphs
_EINSUMS = (torch.einsum, torch.functional.einsum)


def exact_constants_(module: nn.Module) -> None:
    """Rewrite the constant tables of ``module`` at full precision in their current dtype.

    Two kinds: e3nn's Wigner-3j buffers (``..._w3j_l1_l2_l3``, recomputed from e3nn's
    float64 tables) and the buffers listed in a submodule's ``_exact_constants`` dict
    (name -> float64 master copy, kept off the module's tensors so casts never round it).
    """
    with torch.no_grad():
        for owner in module.modules():
            masters = getattr(owner, "_exact_constants", None)
            for name, buffer in owner._buffers.items():
                if buffer is None or not buffer.is_floating_point():
                    continue
                exact = _exact_value(name, masters)
                if exact is not None and exact.shape == buffer.shape:
                    buffer.copy_(exact.to(device=buffer.device, dtype=buffer.dtype))


def _exact_value(name: str, masters: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
    """The float64 value of the buffer ``name``, or None for buffers that are no constant
    table (left alone)."""
    if masters and name in masters:
        return masters[name]
    match = _W3J_BUFFER.match(name)
    if match is None:
        return None
    return o3.wigner_3j(*(int(g) for g in match.groups()), dtype=torch.float64)


def _exact_constants_after_load(module: nn.Module, _incompatible_keys) -> None:
    exact_constants_(module)


class ExactConstantsMixin:
    """Keeps every Clebsch-Gordan table of a module exact after ``.to()`` and loading,
    and strips e3nn's generated code of unused computations.

    Mix in before ``nn.Module`` (``class Model(ExactConstantsMixin, AtomisticModel)``) and
    call ``self._finalize_e3nn()`` at the end of ``__init__``.
    """

    def _finalize_e3nn(self) -> None:
        drop_dead_code_(self)
        self.register_load_state_dict_post_hook(_exact_constants_after_load)
        exact_constants_(self)

    def _apply(self, *args, **kwargs):
        out = super()._apply(*args, **kwargs)
        exact_constants_(self)
        return out


def drop_dead_code_(module: nn.Module) -> None:
    """Remove the einsums whose results are never used from e3nn's generated code.

    e3nn's tensor-product code generator leaves, for each path, a full outer product of
    the inputs that is computed and discarded (it notes "TODO: eliminate_dead_code");
    on edges it is as large as the path itself. Only unused einsum nodes go: einsum is a
    pure function, so results are unchanged. (FX's generic ``eliminate_dead_code`` is not
    safe here: it would also drop e3nn's in-place ``copy_`` calls, whose results are
    unused but whose effects are not.)
    """
    for child in module.modules():
        if isinstance(child, torch.fx.GraphModule):
            dead = [node for node in child.graph.nodes
                    if node.op == "call_function" and node.target in _EINSUMS and not node.users]
            for node in dead:
                child.graph.erase_node(node)
            if dead:
                child.recompile()
