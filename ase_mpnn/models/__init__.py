"""Model architectures. Each maps a graph to one energy per atom; see ``AtomisticModel``.

Public classes, each built with ``species=[...]`` and ``cutoff=...`` and working defaults:
``MPNN`` (the generic five-axis network), its presets ``SchNet`` and ``CGCNN``.
"""

from .base import ARCHITECTURES, AtomisticModel, architecture_class, register_architecture
from .cgcnn import CGCNN
from .mpnn import MPNN
from .schnet import SchNet

__all__ = ["ARCHITECTURES", "CGCNN", "MPNN", "AtomisticModel", "SchNet", "architecture_class",
           "register_architecture"]
