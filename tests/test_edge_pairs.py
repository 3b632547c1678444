"""Bonds: an edge and its reverse share one radial-MLP evaluation (``ase_mpnn.nn.edge_pairs``).

The shared evaluation is an optimisation only: energies, forces, stress and the training
loss's parameter gradients equal the per-row computation, in both layouts of the
convolution, on periodic cells with self-images, slabs, wires and molecules.
"""

from __future__ import annotations

import pytest
import torch

from ase_mpnn import keys
from ase_mpnn.graph import build_graph
from ase_mpnn.models.presets import SMALL
from ase_mpnn.nn import edge_pairs as edge_pairs_module
from ase_mpnn.nn import equivariant, neighbor_matrix
from ase_mpnn.nn.edge_pairs import edge_pairs
from ase_mpnn.potential import edge_geometry
from ase_mpnn.testing import rattled_triclinic_cell
from ase_mpnn.training.config import TrainConfig
from ase_mpnn.training.loss import batch_loss
from ase_mpnn.training.samples import GraphCache

from .conftest import SPECIES, cu_fcc, make_preset
from .test_training_stability import mixed_samples

EQUIVARIANT = sorted(name for name in SMALL if name.startswith(("MACE", "NequIP")))


def _edges(graph):
    centers, neighbors = graph[keys.EDGE_INDEX]
    return centers, neighbors, graph[keys.CELL_SHIFTS]


@pytest.fixture(params=["native", "torch"])
def pairing(request, monkeypatch):
    """Pair edges with the C++ kernel (where built; in CI always) or the torch sort."""
    if request.param == "native":
        request.getfixturevalue("native_kernels")
    else:
        monkeypatch.setenv("ASE_MPNN_KERNELS", "off")
    return request.param


def _groups(bond: torch.Tensor) -> set:
    """The pairing as a partition of the edges (numbering-free)."""
    order = torch.argsort(bond, stable=True)
    sizes = torch.bincount(bond).tolist()
    return {tuple(part.tolist()) for part in order.split(sizes)}


def test_native_and_torch_pairings_group_edges_alike(native_kernels, monkeypatch):
    """The kernel's bonds are the sort's, numbered by their first edge; a list that is not
    full and unsorted centres (the torch path then) are paired correctly too."""
    for atoms in (rattled_triclinic_cell(SPECIES), rattled_triclinic_cell(SPECIES, seed=3),
                  cu_fcc(repeat=2, nickel_every=3)):
        graph = build_graph(atoms, 5.0, SPECIES, dtype=torch.float64)
        centers, neighbors, shifts = _edges(graph)
        for keep in (torch.arange(len(centers)), torch.arange(0, len(centers), 3)):
            args = centers[keep], neighbors[keep], shifts[keep]
            ours, first = edge_pairs(*args)
            kernel = torch.ops.ase_mpnn.bond_pairs(args[0], args[1], args[2].round().long())
            assert torch.equal(ours, kernel[0]) and torch.equal(first, kernel[1])  # it ran
            assert torch.equal(first, torch.sort(first).values)  # numbered by first edge
            assert torch.equal(ours[first], torch.arange(len(first)))
            monkeypatch.setenv("ASE_MPNN_KERNELS", "off")
            theirs, _ = edge_pairs(*args)
            monkeypatch.delenv("ASE_MPNN_KERNELS")
            assert _groups(ours) == _groups(theirs)
    flipped = [t.flip(0) for t in _edges(graph)]  # unsorted: the sort pairs them
    bond, first = edge_pairs(*flipped)
    assert torch.bincount(bond).tolist() == [2] * len(first)


def test_each_bond_is_an_edge_and_its_reverse(pairing):
    # 8 atoms in a cell smaller than the cutoff: atoms neighbour their own images
    graph = build_graph(rattled_triclinic_cell(SPECIES), 5.0, SPECIES, dtype=torch.float64)
    centers, neighbors, shifts = _edges(graph)
    assert bool((centers == neighbors).any())
    bond, first = edge_pairs(centers, neighbors, shifts)
    assert torch.equal(bond[first], torch.arange(len(first)))
    assert torch.bincount(bond).tolist() == [2] * len(first)  # a full list: two edges each
    order = torch.argsort(bond, stable=True).view(-1, 2)
    a, b = order[:, 0], order[:, 1]
    assert torch.equal(centers[a], neighbors[b]) and torch.equal(neighbors[a], centers[b])
    assert torch.equal(shifts[a], -shifts[b])
    lengths = edge_geometry(graph, graph[keys.POSITIONS], graph[keys.CELL])[keys.EDGE_LENGTHS]
    assert torch.equal(lengths[a], lengths[b])


def test_edges_without_their_reverse_are_bonds_of_their_own(pairing):
    graph = build_graph(rattled_triclinic_cell(SPECIES), 5.0, SPECIES, dtype=torch.float64)
    centers, neighbors, shifts = _edges(graph)
    keep = torch.arange(0, len(centers), 3)  # a list that is not full
    bond, first = edge_pairs(centers[keep], neighbors[keep], shifts[keep])
    counts = torch.bincount(bond)
    assert counts.max() <= 2 and int(counts.sum()) == len(keep)
    assert bond.max() + 1 == len(first) and torch.equal(bond[first], torch.arange(len(first)))
    empty = torch.zeros(0, dtype=torch.int64)
    assert [len(x) for x in edge_pairs(empty, empty, torch.zeros(0, 3))] == [0, 0]


def _loss_gradients(potential, cache):
    graph, targets = cache.batch(list(range(len(cache.samples))), torch.float64)
    loss = batch_loss(potential, graph, targets, TrainConfig(stress_weight=10.0))
    params = [p for p in potential.parameters() if p.requires_grad]
    return [loss, *torch.autograd.grad(loss, params, allow_unused=True)]


@pytest.mark.parametrize("layout", ["neighbor matrix", "edges"])
@pytest.mark.parametrize("preset", EQUIVARIANT)
def test_bond_weights_give_the_per_row_results(preset, layout, monkeypatch):
    """Energy, forces and stress of a triclinic cell with self-images, and the training
    loss and its gradients on a batch of bulk, slab, wire and molecule, agree to 1e-12."""
    if layout == "edges":
        monkeypatch.setattr(neighbor_matrix, "MAX_PADDING", 0.0)
    potential = make_preset(preset).double()
    graph = build_graph(rattled_triclinic_cell(SPECIES), 4.0, SPECIES, dtype=torch.float64)
    cache = GraphCache(mixed_samples(), potential.cutoff, potential.species)
    geometry = edge_geometry(graph, graph[keys.POSITIONS], graph[keys.CELL])
    model = potential.model
    assert equivariant.edge_inputs(geometry, model.sh, model.radial, 2).bond_of_row is not None
    by_bond = potential(graph, forces=True, stress=True), _loss_gradients(potential, cache)
    monkeypatch.setattr(edge_pairs_module, "CHECKPOINT_EDGES", 0)  # no bonds: per row
    assert equivariant.edge_inputs(geometry, model.sh, model.radial, 2).bond_of_row is None
    by_row = potential(graph, forces=True, stress=True), _loss_gradients(potential, cache)
    for key in (keys.ENERGY, keys.FORCES, keys.STRESS):
        torch.testing.assert_close(by_bond[0][key], by_row[0][key], rtol=1e-12, atol=1e-12)
    for a, b in zip(by_bond[1], by_row[1]):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_packed_keys_pair_edges_as_the_key_rows_do():
    """The one-int64 keys (used when they fit) group edges exactly as the (low, high, S)
    rows (the fallback for huge graphs) do."""
    from ase_mpnn.nn.edge_pairs import _bond_keys

    graph = build_graph(rattled_triclinic_cell(SPECIES), 5.0, SPECIES, dtype=torch.float64)
    centers, neighbors, shifts = _edges(graph)
    low, high = torch.minimum(centers, neighbors), torch.maximum(centers, neighbors)
    s = shifts.round().to(torch.int64) * torch.where(centers > neighbors, -1, 1)[:, None]
    packed = _bond_keys(low, high, s)
    assert packed.dim() == 1
    rows = torch.cat([low[:, None], high[:, None], s], dim=1)
    same_packed = packed[:, None] == packed[None, :]
    same_rows = (rows[:, None, :] == rows[None, :, :]).all(-1)
    assert torch.equal(same_packed, same_rows)
