"""D3(BJ) dispersion: a torch energy term (``D3Dispersion``), an ASE calculator of its own
(``D3BJ``) and the composition with a model (``with_dispersion``, or
``MPNNCalculator(model, dispersion="pbe")``): the correction's forces and stress come out
of the model's own autograd pass."""

from .calculator import D3BJ, dispersion_graph
from .d3 import D3Dispersion, with_dispersion
from .tables import (
    CN_CUTOFF,
    DISP2_CUTOFF,
    DISP3_CUTOFF,
    D3Parameters,
    d3bj_parameters,
    list_functionals,
)

__all__ = [
    "CN_CUTOFF",
    "D3BJ",
    "DISP2_CUTOFF",
    "DISP3_CUTOFF",
    "D3Dispersion",
    "D3Parameters",
    "d3bj_parameters",
    "dispersion_graph",
    "list_functionals",
    "with_dispersion",
]
