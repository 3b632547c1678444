"""Model architectures. Each maps a graph to one energy per atom; see ``AtomisticModel``.

Public classes, each built with ``species=[...]`` and ``cutoff=...`` and working defaults:
``MPNN`` (the generic five-axis network), its presets ``SchNet`` and ``CGCNN``, and the
E(3)-equivariant ``NequIP`` and ``MACE`` on e3nn.
"""

from .base import (
                   ARCHITECTURES,
                   AtomisticModel,
                   architecture_class,
                   build_model,
                   register_architecture,
)
from .cgcnn import CGCNN
from .mace import MACE
from .mpnn import MPNN
from .nequip import NequIP
from .schnet import SchNet

__all__ = ["ARCHITECTURES", "CGCNN", "MACE", "MPNN", "AtomisticModel", "NequIP", "SchNet",
           "architecture_class", "build_model", "register_architecture"]
