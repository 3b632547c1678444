"""Neural-network building blocks: radial bases, envelopes, MLPs, scatter."""

from .mlp import ShiftedSoftplus, make_activation, mlp
from .radial import (
    BesselBasis,
    CosineCutoff,
    GaussianBasis,
    PolynomialCutoff,
    make_envelope,
    make_radial_basis,
)
from .scatter import get_scatter_backend, scatter_sum, set_scatter_backend

__all__ = [
    "BesselBasis",
    "CosineCutoff",
    "GaussianBasis",
    "PolynomialCutoff",
    "ShiftedSoftplus",
    "get_scatter_backend",
    "make_activation",
    "make_envelope",
    "make_radial_basis",
    "mlp",
    "scatter_sum",
    "set_scatter_backend",
]
