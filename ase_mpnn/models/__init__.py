"""Model architectures. Each maps a graph to one energy per atom; see ``AtomisticModel``."""

from .base import ARCHITECTURES, AtomisticModel, architecture_class, register_architecture
from .schnet import SchNet

__all__ = ["ARCHITECTURES", "AtomisticModel", "SchNet", "architecture_class",
           "register_architecture"]
