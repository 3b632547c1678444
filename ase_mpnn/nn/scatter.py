"""Sum aggregation of edge messages onto atoms: the one scatter every model uses.

Two interchangeable backends: torch's own ``index_add_`` (the default; on CPU it measured
as fast as torch-scatter) and torch-scatter's ``scatter_sum`` when that optional extra is
installed. Choose with ``set_scatter_backend`` or the ``ASE_MPNN_SCATTER`` environment
variable (``native`` or ``torch_scatter``).
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("native", "torch_scatter")
_backend = os.environ.get("ASE_MPNN_SCATTER", "native")


def torch_scatter_available() -> bool:
    """True when the optional torch-scatter package can be imported."""
    return importlib.util.find_spec("torch_scatter") is not None


def set_scatter_backend(name: str) -> None:
    """Select ``"native"`` (torch index_add_) or ``"torch_scatter"`` for scatter_sum."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown scatter backend {name!r}; choose one of {BACKENDS}")
    if name == "torch_scatter" and not torch_scatter_available():
        raise ImportError(
            "torch-scatter is not installed; `pip install ase-mpnn[scatter]` builds it"
        )
    _backend = name


def get_scatter_backend() -> str:
    """Name of the backend scatter_sum uses now."""
    return _backend


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` bins: out[index[e]] += src[e].

    Args:
        src: (n_edges, ...) values per edge.
        index: (n_edges,) int64 destination of each row.
        dim_size: number of destinations (e.g. n_atoms), so empty bins stay zero.

    Returns:
        (dim_size, ...) tensor of sums, same dtype and device as ``src``.
    """
    if _backend == "torch_scatter":
        import torch_scatter

        return torch_scatter.scatter_sum(src, index, dim=0, dim_size=dim_size)
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)
