"""float64 models stay in float64: no operator of a forward or backward pass makes a float32
(or half) tensor, and the radial constants are exact in float64."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ase_mpnn.graph import build_graph
from ase_mpnn.models.presets import SMALL
from ase_mpnn.testing import rattled_triclinic_cell

from .conftest import SPECIES, make_preset

LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


class DtypeRecorder(TorchDispatchMode):
    """Records (operator, dtype) of every low-precision floating tensor an operator
    returns while the mode is active."""

    def __init__(self):
        super().__init__()
        self.low: list[tuple[str, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype in LOW_PRECISION:
                self.low.append((str(func), t.dtype))
        return out


def test_the_recorder_sees_a_float32_tensor():
    with DtypeRecorder() as recorder:
        torch.ones(2, dtype=torch.float64) * torch.tensor([1.0])  # default dtype: float32
    assert recorder.low and recorder.low[0][1] == torch.float32


@pytest.mark.parametrize("preset", sorted(SMALL))
def test_a_float64_call_makes_no_float32_tensor(preset):
    potential = make_preset(preset).double()
    graph = build_graph(rattled_triclinic_cell(SPECIES), potential.cutoff, SPECIES,
                        dtype=torch.float64)
    with DtypeRecorder() as recorder:
        potential(graph, forces=True, stress=True)
    assert recorder.low == []


@pytest.mark.parametrize("basis", ["gaussian", "bessel"])
def test_radial_grids_are_exact_in_float64_after_moves_and_loads(basis):
    """The grids are made in float32 (torch's default dtype); cast to float64, or loaded
    from a float32 state dict, they are recomputed rather than keeping float32 rounding."""
    import math

    from ase_mpnn.nn import make_radial_basis

    module = make_radial_basis(basis, 20, 4.7)
    name = "centers" if basis == "gaussian" else "frequencies"
    exact = (torch.linspace(0.0, 4.7, 20, dtype=torch.float64) if basis == "gaussian"
             else torch.arange(1, 21, dtype=torch.float64) * math.pi / 4.7)
    float32_state = {k: v.clone() for k, v in module.state_dict().items()}
    assert float32_state[name].dtype == torch.float32
    assert not torch.equal(float32_state[name].double(), exact)  # float32 rounds the grid
    module.double()
    assert torch.equal(getattr(module, name), exact)
    module.load_state_dict(float32_state)
    assert torch.equal(getattr(module, name), exact)
