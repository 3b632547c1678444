"""The bond-shared continuous-filter convolution (``ase_mpnn.nn.filter_sum``), in plain
torch and in the native kernels, gives the plain per-edge path's energy, forces, stress
and training gradients (float64, 1e-12)."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms

from ase_mpnn import keys
from ase_mpnn.graph import build_graph
from ase_mpnn.models.presets import SMALL
from ase_mpnn.testing import rattled_triclinic_cell
from ase_mpnn.training.config import TrainConfig
from ase_mpnn.training.loss import batch_loss
from ase_mpnn.training.samples import GraphCache

from .conftest import SPECIES, make_preset
from .test_training_stability import mixed_samples

#: presets whose messages are filters of the radial basis (SchNet and a filter MPNN)
FILTER_PRESETS = sorted(name for name, (arch, options) in SMALL.items()
                        if arch == "SchNet" or options.get("message") == "filter")


def _with_isolated_atom() -> Atoms:
    """A Cu-Ni pair and a Cu atom 20 A away: no edges at the third atom."""
    return Atoms("CuNiCu", positions=[[0, 0, 0], [2.3, 0.2, 0.1], [20.0, 0, 0]])


def _outputs(potential, graph, cache, bond_filters: bool, native: bool = False):
    """Energy, forces, stress of ``graph``; the training loss on a batch of ``cache`` and
    its gradients with respect to every weight (through the forces: a double backward)."""
    potential.model.bond_filters_enabled = bond_filters
    potential.model.native_kernels_enabled = native
    out = potential(graph, forces=True, stress=True)
    batch, targets = cache.batch(list(range(len(cache.samples))), torch.float64)
    loss = batch_loss(potential, batch, targets, TrainConfig(stress_weight=10.0))
    params = [p for p in potential.parameters() if p.requires_grad]
    gradients = torch.autograd.grad(loss, params, allow_unused=True)
    return [out[keys.ENERGY], out[keys.FORCES], out[keys.STRESS], loss, *gradients]


def test_filter_presets_are_found():
    assert {"SchNet", "MPNN-filter-pna-residual"} <= set(FILTER_PRESETS)


@pytest.mark.parametrize("preset", FILTER_PRESETS)
@pytest.mark.parametrize("structure", ["self-images", "isolated atom"])
@pytest.mark.parametrize("native", [False, True], ids=["torch", "native kernels"])
def test_bond_shared_filters_give_the_per_edge_results(preset, structure, native, request):
    if native:
        request.getfixturevalue("native_kernels")
    potential = make_preset(preset).double()
    assert potential.model.share_bond_filters  # the fast path is the default
    periodic = structure == "self-images"
    atoms = rattled_triclinic_cell(SPECIES) if periodic else _with_isolated_atom()
    graph = build_graph(atoms, potential.cutoff, SPECIES, dtype=torch.float64)
    cache = GraphCache(mixed_samples(), potential.cutoff, potential.species)  # a batch
    by_bond = _outputs(potential, graph, cache, bond_filters=True, native=native)
    by_edge = _outputs(potential, graph, cache, bond_filters=False)
    for a, b in zip(by_bond, by_edge):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_edge_updates_keep_the_per_edge_path():
    """Edge features updated from the atoms differ between an edge and its reverse: such a
    model never shares filters by bond."""
    from ase_mpnn.models.mpnn import MPNN

    model = MPNN(SPECIES, 4.0, n_features=8, n_layers=1, message="filter", edge_updates=True)
    assert not model.share_bond_filters
    assert MPNN(SPECIES, 4.0, n_features=8, n_layers=1, message="filter").share_bond_filters


def test_bond_shared_filters_in_chunks_and_without_bonds(monkeypatch):
    """Edges split into chunks of whole atoms read the bond filters of all bonds; a graph
    too large for bonds (more than CHECKPOINT_EDGES edges) takes the per-edge path.
    Both give the per-edge results."""
    from ase.build import bulk

    from ase_mpnn.nn import chunks, edge_pairs

    potential = make_preset("SchNet").double()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    atoms.symbols[::3] = "Ni"
    atoms.rattle(0.05, seed=4)
    graph = build_graph(atoms, potential.cutoff, SPECIES, dtype=torch.float64)
    centers = graph[keys.EDGE_INDEX][0]
    monkeypatch.setattr(chunks, "EDGE_CHUNK", 50)
    assert len(chunks.atom_chunks(centers, len(atoms))) > 2

    def results(bond_filters: bool):
        potential.model.bond_filters_enabled = bond_filters
        out = potential(graph, forces=True, stress=True)
        return [out[keys.ENERGY], out[keys.FORCES], out[keys.STRESS]]

    reference = results(False)
    for a, b in zip(results(True), reference):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(edge_pairs, "CHECKPOINT_EDGES", 0)
    assert potential.model._bonds(graph, torch.ones(centers.shape[0])) is None
    for a, b in zip(results(True), reference):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
