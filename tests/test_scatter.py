"""The native scatter and torch-scatter agree, in values and gradients."""

from __future__ import annotations

import pytest
import torch

from ase_mpnn.nn import scatter as scatter_module
from ase_mpnn.nn import scatter_sum, set_scatter_backend


def test_native_scatter_sums_into_bins():
    src = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    index = torch.tensor([0, 2, 0, 2])
    assert scatter_sum(src, index, 4).flatten().tolist() == [4.0, 0.0, 6.0, 0.0]


def test_unknown_backend():
    with pytest.raises(ValueError, match="native"):
        set_scatter_backend("cuda-magic")


@pytest.mark.skipif(not scatter_module.torch_scatter_available(),
                    reason="torch-scatter not installed")
def test_torch_scatter_agrees_with_native(calc, cu_cell):
    generator = torch.Generator().manual_seed(0)
    src = torch.randn(500, 16, dtype=torch.float64, generator=generator, requires_grad=True)
    index = torch.randint(0, 40, (500,), generator=generator)
    results = {}
    for backend in ("native", "torch_scatter"):
        set_scatter_backend(backend)
        try:
            out = scatter_sum(src, index, 40)
            (grad,) = torch.autograd.grad((out**2).sum(), src)
            cu_cell.calc = None
            forces = calc.get_forces(cu_cell)
            calc.reset()
        finally:
            set_scatter_backend("native")
        results[backend] = (out.detach(), grad, torch.as_tensor(forces))
    for a, b in zip(results["native"], results["torch_scatter"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(scatter_module.torch_scatter_available(), reason="torch-scatter is installed")
def test_missing_torch_scatter_is_explained():
    with pytest.raises(ImportError, match=r"ase-mpnn\[scatter\]"):
        set_scatter_backend("torch_scatter")
