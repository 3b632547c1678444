"""ase-mpnn: message-passing neural-network interatomic potentials for ASE.

    >>> from ase_mpnn import MPNNCalculator
    >>> atoms.calc = MPNNCalculator("model.mpnn")          # doctest: +SKIP
"""

from ._version import __version__
from .calculator import MPNNCalculator
from .committee import Committee
from .errors import (
    ASEMPNNError,
    InvalidStructureError,
    MissingDependencyError,
    ModelFileError,
    UnknownArchitectureError,
    UnknownElementError,
)
from .graph import build_graph
from .loading import DEFAULT_DTYPE, load_model, load_potential, save_committee
from .modelfile import read_manifest, save_model
from .potential import Potential
from .pretrained import list_models
from .repulsion import ZBL

__all__ = [
    "DEFAULT_DTYPE",
    "ASEMPNNError",
    "Committee",
    "InvalidStructureError",
    "MissingDependencyError",
    "MPNNCalculator",
    "ModelFileError",
    "Potential",
    "UnknownArchitectureError",
    "UnknownElementError",
    "ZBL",
    "__version__",
    "build_graph",
    "list_models",
    "load_model",
    "load_potential",
    "read_manifest",
    "save_committee",
    "save_model",
]
