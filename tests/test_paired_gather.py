"""The paired gathers of compiled programs (``ase_mpnn.nn.paired_gather``): the reverse of
every row of a full list's neighbour matrix, gathers whose backward passes equal torch's
scatters (first and second order, float64, 1e-12), and NequIP and MACE on them giving
the energies, forces, stress and training gradients of the plain path. Fast: nothing is
compiled here; tests/test_compiled.py runs the compiled programs."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk

from ase_mpnn import keys
from ase_mpnn.compiled import with_bond_pairing, with_neighbor_slots
from ase_mpnn.graph import build_graph
from ase_mpnn.nn import paired_gather
from ase_mpnn.nn.convolution import NeighborMatrixProducts
from ase_mpnn.nn.paired_gather import full_list, gather_bonds, gather_neighbors, paired_rows
from ase_mpnn.testing import rattled_triclinic_cell

from .conftest import SPECIES, make_preset


def _bulk():
    atoms = bulk("Cu", "fcc", 3.6, cubic=True).repeat(2)
    atoms.numbers[::3] = 28
    atoms.rattle(0.05, seed=1)
    return atoms


def _structures():
    return {"bulk": _bulk(), "triclinic": rattled_triclinic_cell(SPECIES)}


def _slotted(atoms, cutoff=4.0):
    """A full list's graph with its bond pairing and neighbour-matrix layout (any padding)."""
    graph = with_bond_pairing(build_graph(atoms, cutoff, SPECIES, dtype=torch.float64))
    return with_neighbor_slots(graph, any_padding=True)


def _pairs(graph):
    n_atoms = graph[keys.SPECIES].shape[0]
    slots = graph[keys.SLOT_COLUMNS].shape[0]
    return paired_rows(graph[keys.BOND_OF_EDGE], graph[keys.BOND_FIRST_EDGE],
                       graph[keys.NEIGHBOR_SLOT], n_atoms, slots)


def _row_tables(graph):
    """(centre, neighbour, integer shift, is-an-edge) of every row of the matrix."""
    n_atoms = graph[keys.SPECIES].shape[0]
    slots = graph[keys.SLOT_COLUMNS].shape[0]
    rows, where = n_atoms * slots, graph[keys.NEIGHBOR_SLOT]
    centers = torch.arange(n_atoms).repeat_interleave(slots)
    neighbors = centers.clone().index_copy(0, where, graph[keys.EDGE_INDEX][1])
    shifts = torch.zeros(rows, 3, dtype=torch.int64).index_copy(
        0, where, graph[keys.CELL_SHIFTS].round().long())
    real = torch.zeros(rows, dtype=torch.bool).index_fill(0, where, True)
    return centers, neighbors, shifts, real


@pytest.mark.parametrize("structure", ["bulk", "triclinic"])
def test_each_row_s_reverse_is_the_opposite_edge(structure):
    graph = _slotted(_structures()[structure])
    assert full_list(graph[keys.BOND_OF_EDGE], graph[keys.BOND_FIRST_EDGE])
    pairs = _pairs(graph)
    centers, neighbors, shifts, real = _row_tables(graph)
    reverse = pairs.reverse
    assert torch.equal(reverse[reverse], torch.arange(reverse.shape[0]))  # an involution
    assert torch.equal(neighbors[reverse], centers)
    assert torch.equal(centers[reverse], neighbors)
    assert torch.equal(shifts[reverse], -shifts)
    assert torch.equal(real[reverse], real)
    padded = torch.nonzero(~real).squeeze(1)
    assert padded.numel() > 0 or structure == "bulk"  # the triclinic rows are uneven
    assert torch.equal(reverse[padded], padded)
    # each bond's first row is the row of its first edge, and the bond's other row its
    # reverse; both read the bond
    bond_of_row = torch.zeros_like(centers).index_copy(0, graph[keys.NEIGHBOR_SLOT],
                                                       graph[keys.BOND_OF_EDGE])
    bonds = torch.arange(graph[keys.BOND_FIRST_EDGE].shape[0])
    assert torch.equal(bond_of_row[pairs.bond_first], bonds)
    assert torch.equal(bond_of_row[reverse[pairs.bond_first]], bonds)


def test_a_list_missing_a_reverse_is_not_full():
    graph = build_graph(_bulk(), 4.0, SPECIES, dtype=torch.float64)
    keep = torch.arange(1, graph[keys.EDGE_INDEX].shape[1])
    graph[keys.EDGE_INDEX] = graph[keys.EDGE_INDEX][:, keep]
    graph[keys.CELL_SHIFTS] = graph[keys.CELL_SHIFTS][keep]
    paired = with_bond_pairing(graph)
    assert not full_list(paired[keys.BOND_OF_EDGE], paired[keys.BOND_FIRST_EDGE])


def test_a_bond_of_three_edges_beside_one_of_one_is_not_full():
    """Four edges in two bonds, but not two each: edges 0, 1, 2 in bond 0, edge 3 alone."""
    bond_of_edge = torch.tensor([0, 0, 0, 1])
    assert not full_list(bond_of_edge, torch.tensor([0, 3]))
    assert full_list(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1]))
    assert full_list(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))


def _gather_inputs(graph, width=5):
    generator = torch.Generator().manual_seed(0)
    n_atoms = graph[keys.SPECIES].shape[0]
    centers, neighbors, _, real = _row_tables(graph)
    bond_of_row = torch.zeros_like(centers).index_copy(0, graph[keys.NEIGHBOR_SLOT],
                                                       graph[keys.BOND_OF_EDGE])
    n_bonds = graph[keys.BOND_FIRST_EDGE].shape[0]
    values = torch.randn(n_atoms, width, dtype=torch.float64, generator=generator)
    bond_values = torch.randn(n_bonds, width, dtype=torch.float64, generator=generator)
    # downstream weights that vanish on the padded rows, as the envelope makes them
    weights = torch.randn(real.shape[0], width, dtype=torch.float64, generator=generator)
    weights = weights * real[:, None]
    return values, bond_values, weights, neighbors, bond_of_row


def test_the_gathers_backward_passes_equal_torch_s_first_and_second_order():
    graph = _slotted(rattled_triclinic_cell(SPECIES))
    pairs = _pairs(graph)
    values, bond_values, weights, neighbors, bond_of_row = _gather_inputs(graph)

    def loss(gather_h, gather_w, h, w):
        rows = gather_h(h) * gather_w(w) * weights
        return (rows.sum(0) ** 2).sum()  # not linear: second derivatives do not vanish

    def paired(h, w):
        return loss(lambda x: gather_neighbors(x, neighbors, pairs),
                    lambda x: gather_bonds(x, bond_of_row, pairs), h, w)

    def plain(h, w):
        return loss(lambda x: x.index_select(0, neighbors),
                    lambda x: x.index_select(0, bond_of_row), h, w)

    results = []
    for function in (paired, plain):
        h, w = values.clone().requires_grad_(), bond_values.clone().requires_grad_()
        grad_h, grad_w = torch.autograd.grad(function(h, w), (h, w), create_graph=True)
        # a second-order quantity: the gradient of a function of the first gradients
        second = torch.autograd.grad((grad_h ** 2).sum() + (grad_w ** 3).sum(), (h, w))
        results.append((grad_h, grad_w, *second))
    for got, want in zip(*results):
        assert want.abs().max() > 0  # (the second-order values reach 1e8: relative 1e-12)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    h, w = values[:, :2].clone().requires_grad_(), bond_values[:, :2].clone().requires_grad_()
    weights = weights[:, :2]
    assert torch.autograd.gradgradcheck(paired, (h, w))


def _spy_paired_sums(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = NeighborMatrixProducts.paired_sum
    monkeypatch.setattr(NeighborMatrixProducts, "paired_sum",
                        lambda self, *a: calls.append(1) or original(self, *a))
    return calls


def _outputs(potential, atoms):
    """Energy, forces, stress and the gradient of a force loss with respect to the
    parameters (the double backward of training)."""
    graph = build_graph(atoms, potential.cutoff, SPECIES, dtype=torch.float64)
    out = potential(graph, forces=True, stress=True, create_graph=True)
    loss = (out[keys.FORCES] ** 2).sum() + out[keys.STRESS].pow(2).sum()
    parameters = [p for p in potential.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    return [out[keys.ENERGY], out[keys.FORCES], out[keys.STRESS]] + [
        g for g in grads if g is not None]


@pytest.mark.parametrize("preset", ["NequIP", "MACE"])
@pytest.mark.parametrize("structure", ["bulk", "triclinic"])
def test_models_on_the_paired_gathers_equal_the_plain_path(preset, structure, monkeypatch):
    potential = make_preset(preset).double()
    atoms = _structures()[structure]
    calls = _spy_paired_sums(monkeypatch)
    plain = _outputs(potential, atoms)
    assert not calls  # eager runs keep torch's gathers
    monkeypatch.setattr(paired_gather, "PAIRED_IN_EAGER", True)
    paired = _outputs(potential, atoms)
    assert calls  # and these ran on the paired ones
    assert len(paired) == len(plain)
    for got, want in zip(paired, plain):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_a_partial_list_keeps_torch_s_gathers(monkeypatch):
    potential = make_preset("NequIP").double()
    graph = build_graph(_bulk(), potential.cutoff, SPECIES, dtype=torch.float64)
    keep = torch.arange(1, graph[keys.EDGE_INDEX].shape[1])
    graph[keys.EDGE_INDEX] = graph[keys.EDGE_INDEX][:, keep]
    graph[keys.CELL_SHIFTS] = graph[keys.CELL_SHIFTS][keep]
    want = potential(graph, forces=True, stress=True)
    monkeypatch.setattr(paired_gather, "PAIRED_IN_EAGER", True)
    calls = _spy_paired_sums(monkeypatch)
    got = potential(graph, forces=True, stress=True)
    assert not calls
    for key in (keys.ENERGY, keys.FORCES, keys.STRESS):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-12)


@pytest.mark.parametrize("preset", ["SchNet", "SchNet-polynomial-bessel"])
@pytest.mark.parametrize("structure", ["bulk", "triclinic"])
def test_schnet_on_the_neighbour_matrix_equals_the_plain_path(preset, structure, monkeypatch):
    """SchNet's filter sum on the neighbour matrix (ase_mpnn.nn.filter_sum.slot_layout, what
    its compiled programs run) against the plain torch path: energy, forces, stress and
    the training gradients, float64, 1e-12."""
    from ase_mpnn.models import mpnn
    from ase_mpnn.nn import filter_sum

    potential = make_preset(preset).double()
    potential.model.native_kernels_enabled = False  # the plain torch path
    atoms = _structures()[structure]
    calls = []
    original = filter_sum.filter_sum_slots
    monkeypatch.setattr(mpnn, "filter_sum_slots",
                        lambda *a: calls.append(1) or original(*a))
    plain = _outputs(potential, atoms)
    assert not calls
    monkeypatch.setattr(paired_gather, "PAIRED_IN_EAGER", True)
    slotted = _outputs(potential, atoms)
    assert len(calls) == len(potential.model.interactions)
    for got, want in zip(slotted, plain):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
