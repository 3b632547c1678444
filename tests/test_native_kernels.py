"""The native kernels (``ase_mpnn.native``, ``csrc/filter_sum.cpp``) give the plain torch
``filter_sum``'s sums, gradients and second derivatives (float64 to 1e-12), are used only
where they are right, and fall back or fail with a reason that says what to do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from ase import Atoms

from ase_mpnn import keys, native
from ase_mpnn.graph import build_graph
from ase_mpnn.models import mpnn
from ase_mpnn.nn import filter_sum as filter_sum_module
from ase_mpnn.nn.edge_pairs import edge_pairs
from ase_mpnn.nn.filter_sum import FusedLayout, filter_sum, filter_sum_fused, fused_layout
from ase_mpnn.testing import rattled_triclinic_cell, small_molecule

from .conftest import SPECIES, make_preset

CUTOFF = 4.5
WIDTH = 16


def _with_isolated_atom() -> Atoms:
    """A molecule and one atom 30 A away from it: an atom whose row has no edges."""
    atoms = small_molecule(SPECIES)
    atoms += Atoms("Cu", positions=[[30.0, 0.0, 0.0]])
    return atoms


STRUCTURES = {
    "triclinic with self-images": lambda: rattled_triclinic_cell(SPECIES),
    "molecule and isolated atom": _with_isolated_atom,
    "batch of two": lambda: [rattled_triclinic_cell(SPECIES, seed=1), small_molecule(SPECIES)],
}


def _inputs(structure, dtype=torch.float64, seed=0):
    """(graph edges, layout, p, filters, envelope) of a structure, with random values."""
    graph = build_graph(structure, CUTOFF, SPECIES, dtype=dtype)
    centers, neighbors = graph[keys.EDGE_INDEX]
    bond_of_edge, first_edge = edge_pairs(centers, neighbors, graph[keys.CELL_SHIFTS])
    n_atoms = graph[keys.SPECIES].shape[0]
    layout = fused_layout(centers, neighbors, bond_of_edge, first_edge, n_atoms)
    generator = torch.Generator().manual_seed(seed)
    p = torch.randn(n_atoms, WIDTH, dtype=dtype, generator=generator, requires_grad=True)
    filters = torch.randn(first_edge.shape[0], WIDTH, dtype=dtype, generator=generator,
                          requires_grad=True)
    envelope = torch.rand(first_edge.shape[0], dtype=dtype, generator=generator,
                          requires_grad=True)
    return (centers, neighbors, bond_of_edge, first_edge), layout, p, filters, envelope


def _reference(p, filters, envelope, edges):
    centers, neighbors, bond_of_edge, _ = edges
    return filter_sum(p, filters * envelope[:, None], neighbors, bond_of_edge, centers,
                      p.shape[0])


def _assert_close_to_scale(fused, plain, tolerance: float) -> None:
    """Equal to ``tolerance`` relative to the larger of 1 and the tensor's largest value:
    the two paths add the same products in another order."""
    scale = max(1.0, float(plain.detach().abs().max()))
    torch.testing.assert_close(fused, plain, rtol=tolerance, atol=tolerance * scale)


@pytest.mark.parametrize("name", sorted(STRUCTURES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sum_and_gradients_match_the_torch_path(native_kernels, name, dtype):
    edges, layout, p, filters, envelope = _inputs(STRUCTURES[name](), dtype)
    assert isinstance(layout, FusedLayout)
    weights = torch.randn(p.shape[0], WIDTH, dtype=dtype,  # a loss that is not symmetric
                          generator=torch.Generator().manual_seed(3))
    inputs = (p, filters, envelope)
    outputs = []
    for sums in (filter_sum_fused(*inputs, layout), _reference(*inputs, edges)):
        outputs.append([sums, *torch.autograd.grad((sums * weights).sum(), inputs)])
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for fused, plain in zip(*outputs):
        _assert_close_to_scale(fused, plain, tolerance)


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_second_derivatives_match_the_torch_path(native_kernels, name):
    """Training on forces differentiates the backward again (create_graph)."""
    edges, layout, *inputs = _inputs(STRUCTURES[name]())
    direction = torch.randn(inputs[0].shape, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(5))
    results = []
    for function in (lambda: filter_sum_fused(*inputs, layout),
                     lambda: _reference(*inputs, edges)):
        sums = function()
        grad_p, grad_filters, grad_envelope = torch.autograd.grad(
            (sums * sums).sum(), inputs, create_graph=True)
        second = torch.autograd.grad(
            (grad_p * direction).sum() + grad_filters.sum() + (grad_envelope ** 2).sum(), inputs)
        results.append([grad_p, grad_filters, grad_envelope, *second])
    for fused, plain in zip(*results):  # 1e-12 of each tensor's scale: sums in another order
        _assert_close_to_scale(fused, plain, 1e-12)


def test_gradcheck_and_gradgradcheck(native_kernels):
    """Finite differences of the fused sum, its backward and its double backward."""
    atoms = Atoms("CuNiCu", positions=[[0, 0, 0], [2.4, 0.1, 0], [1.1, 2.2, 0.2]])
    _, layout, *inputs = _inputs(atoms)
    function = lambda *inputs: filter_sum_fused(*inputs, layout)  # noqa: E731
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


def test_layout_is_refused_where_the_kernels_would_be_wrong(native_kernels, monkeypatch):
    """Half lists (a bond with one edge), unsorted centres, traces and ``off`` get None."""
    graph = build_graph(rattled_triclinic_cell(SPECIES), CUTOFF, SPECIES)
    centers, neighbors = graph[keys.EDGE_INDEX]
    shifts = graph[keys.CELL_SHIFTS]
    n_atoms = graph[keys.SPECIES].shape[0]

    def layout(keep):
        bond_of_edge, first_edge = edge_pairs(centers[keep], neighbors[keep], shifts[keep])
        return fused_layout(centers[keep], neighbors[keep], bond_of_edge, first_edge, n_atoms)

    everything = torch.arange(centers.shape[0])
    assert layout(everything) is not None
    bond_of_edge, first_edge = edge_pairs(centers, neighbors, shifts)
    assert fused_layout(centers, neighbors, bond_of_edge, first_edge, n_atoms - 1) is None
    assert layout(everything[1:]) is None  # one bond lost an edge
    assert layout(everything.flip(0)) is None  # centres not sorted
    monkeypatch.setattr(filter_sum_module, "tracing", lambda: True)
    assert layout(everything) is None
    monkeypatch.undo()
    monkeypatch.setenv(native.MODE_ENV, "off")
    assert not native.available()
    assert layout(everything) is None


def test_the_model_runs_the_kernels_and_gives_the_torch_results(native_kernels, monkeypatch):
    """SchNet takes the fused path by default; turned off, it gives the same numbers."""
    potential = make_preset("SchNet").double()
    calls = []
    fused = mpnn.filter_sum_fused
    monkeypatch.setattr(mpnn, "filter_sum_fused", lambda *a: calls.append(1) or fused(*a))
    graph = build_graph(rattled_triclinic_cell(SPECIES), potential.cutoff, SPECIES)
    results = []
    for enabled in (True, False):
        potential.model.native_kernels_enabled = enabled
        out = potential(graph, forces=True, stress=True)
        results.append([out[keys.ENERGY], out[keys.FORCES], out[keys.STRESS]])
        assert len(calls) == len(potential.model.interactions)  # once per layer, when on
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_policy_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv(native.MODE_ENV, "sometimes")
    with pytest.raises(ValueError, match="ASE_MPNN_KERNELS='sometimes': choose one of"):
        native.mode()
    monkeypatch.setenv(native.MODE_ENV, " OFF ")
    assert native.mode() == "off" and not native.available()
    assert native.status()["loaded"] is False


def test_build_key_changes_with_torch(monkeypatch):
    """Another torch (or source, flags, CPU) gets its own library, never a stale one."""
    before = native.library_path()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert native.library_path() != before
    assert native.library_path().parent == before.parent


def test_corrupt_library_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("ASE_MPNN_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_failed", {})
    path = native.library_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a shared library")
    with pytest.warns(RuntimeWarning, match="delete the file and run `ase-mpnn kernels"):
        assert not native.available()
    assert not native.available()  # once: the reason is kept, not retried
    assert "failed" in native.status()["problem"]


def test_not_built_means_not_used(monkeypatch, tmp_path):
    monkeypatch.setenv("ASE_MPNN_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_failed", {})
    assert not native.available()  # "auto" never builds silently
    assert not native.library_path().exists()


@pytest.mark.slow
def test_build_from_scratch(tmp_path):
    """``ase-mpnn kernels --build`` into an empty cache: one library, no build folder left."""
    env = {**os.environ, "ASE_MPNN_CACHE": str(tmp_path), native.MODE_ENV: "auto"}
    done = subprocess.run([sys.executable, "-m", "ase_mpnn.cli", "kernels", "--build"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "loaded   True" in done.stdout
    assert [p.suffix for p in (tmp_path / "kernels").iterdir()] == [".so"]
