"""Edge work in chunks of whole atoms (ase_mpnn.nn.chunks) changes no result."""

from __future__ import annotations

import pytest
import torch

from ase_mpnn import Potential, keys
from ase_mpnn.graph import build_graph
from ase_mpnn.models import MACE, MPNN, NequIP
from ase_mpnn.nn import chunks
from ase_mpnn.nn.chunks import atom_chunks, uniform_chunks
from ase_mpnn.nn.message_passing import AGGREGATIONS

from .conftest import cu_fcc

SPECIES = ["Cu", "Ni"]


@pytest.fixture(scope="module")
def graph():
    """A rattled, sheared Cu-Ni cell of 32 atoms: 576 edges at 4 A."""
    atoms = cu_fcc(repeat=2, nickel_every=3)
    atoms.set_cell(atoms.cell.array + [[0, 0.3, 0.1], [0.2, 0, 0.3], [0.1, 0.2, 0]],
                   scale_atoms=True)
    atoms.rattle(0.1, seed=3)
    return build_graph(atoms, 4.0, SPECIES, dtype=torch.float64)


def results(potential, graph):
    out = potential(graph, forces=True, stress=True)
    return {k: out[k].detach() for k in (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES,
                                         keys.STRESS)}


def assert_same(a, b):
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12, msg=key)


def test_atom_chunks_cover_every_edge_once_and_end_on_atoms():
    centers = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 2, 4, 4, 5])  # atom 3 has no edges
    parts = atom_chunks(centers, 6, size=3)
    assert parts[0][0] == 0 and parts[-1][1] == 6 and parts[-1][3] == 12
    for (_, a1, _, e1), (b0, _, f0, _) in zip(parts[:-1], parts[1:]):
        assert a1 == b0 and e1 == f0
    for a0, a1, e0, e1 in parts:
        assert ((centers[e0:e1] >= a0) & (centers[e0:e1] < a1)).all()
    assert atom_chunks(centers.flip(0), 6, size=3) == [(0, 6, 0, 12)]  # unsorted: one chunk
    assert uniform_chunks(5, 4, size=8) == [(0, 2, 0, 8), (2, 4, 8, 16), (4, 5, 16, 20)]


@pytest.mark.parametrize("checkpointed", [False, True])
@pytest.mark.parametrize("model", [
    *[dict(aggregation=a) for a in AGGREGATIONS],
    dict(message="gated", update="cgcnn", edge_updates=True),
    dict(message="mlp", update="gru"),
])
def test_mpnn_chunked_equals_unchunked(graph, model, checkpointed, monkeypatch):
    torch.manual_seed(0)
    potential = Potential(MPNN(SPECIES, 4.0, n_features=8, n_layers=2, n_basis=6,
                               **model)).double()
    whole = results(potential, graph)
    monkeypatch.setattr(chunks, "EDGE_CHUNK", 37)  # 16 chunks
    if checkpointed:
        monkeypatch.setattr(chunks, "CHECKPOINT_EDGES", 100)
        monkeypatch.setattr(chunks, "CHECKPOINT_GROUP", 120)
    assert len(atom_chunks(graph[keys.EDGE_INDEX][0], 32)) > 10
    assert_same(results(potential, graph), whole)


@pytest.mark.parametrize("checkpointed", [False, True])
@pytest.mark.parametrize("cls, kwargs", [
    (NequIP, dict(n_features=4, n_layers=2, l_max=1, radial_hidden=8)),
    (MACE, dict(n_features=4, n_layers=2, max_ell=2, hidden_l_max=1, correlation=3,
                radial_hidden=8, radial_layers=1)),
])
def test_equivariant_chunked_equals_unchunked(graph, cls, kwargs, checkpointed, monkeypatch):
    from ase_mpnn.models.mace import SymmetricContraction

    torch.manual_seed(0)
    potential = Potential(cls(SPECIES, 4.0, **kwargs)).double()
    whole = results(potential, graph)
    monkeypatch.setattr(chunks, "EDGE_CHUNK", 150)
    monkeypatch.setattr(SymmetricContraction, "ATOMS_PER_BLOCK", 5)
    if checkpointed:
        monkeypatch.setattr(chunks, "CHECKPOINT_EDGES", 100)
        monkeypatch.setattr(chunks, "CHECKPOINT_GROUP", 400)
    assert_same(results(potential, graph), whole)


def test_a_checkpointed_graph_trims_the_heap_once_before_its_backward(graph, monkeypatch):
    """Above CHECKPOINT_EDGES the potential hands free heap pages back once per call,
    after the forward pass and before the backward pass; below it, never. No result moves."""
    torch.manual_seed(0)
    potential = Potential(NequIP(SPECIES, 4.0, n_features=4, n_layers=2, l_max=1,
                                 radial_hidden=8)).double()
    trims = []

    def trim():  # records whether the autograd graph is still there to be walked back
        trims.append(torch.is_grad_enabled())

    monkeypatch.setattr(chunks, "release_free_memory", trim)
    whole = results(potential, graph)
    assert trims == []  # 576 edges: far below the default CHECKPOINT_EDGES
    monkeypatch.setattr(chunks, "EDGE_CHUNK", 150)
    monkeypatch.setattr(chunks, "CHECKPOINT_EDGES", 100)
    monkeypatch.setattr(chunks, "CHECKPOINT_GROUP", 400)
    assert_same(results(potential, graph), whole)
    assert trims == [True]


def test_release_free_memory_runs():
    """On glibc it calls malloc_trim; elsewhere it does nothing; it never raises."""
    chunks.release_free_memory()
    chunks.release_free_memory()  # the C function is looked up once
    assert chunks._malloc_trim.cache_info().hits >= 1
