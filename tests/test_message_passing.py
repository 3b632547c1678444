"""Small message-passing examples worked by hand, and the generic MPNN's design axes."""

from __future__ import annotations

import pytest
import torch

from ase_mpnn.models import CGCNN, MPNN, SchNet
from ase_mpnn.nn.message_passing import (
    AGGREGATIONS,
    SumAggregation,
    make_aggregation,
    message_passing_step,
)

UNDIRECTED_PATH = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # rows: receiver v, sender u
TRIANGLE = torch.tensor([[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]])


def test_module_doctest_reproduces_the_path_graph():
    import doctest

    from ase_mpnn.nn import message_passing

    result = doctest.testmod(message_passing)
    assert result.attempted >= 4 and result.failed == 0


def test_three_node_path_graph():
    """M = h_u + e_uv, U = h_v + 0.5 m_v on the path 1-2-3, worked by hand."""
    h = torch.tensor([[0.5], [1.0], [-0.2]], dtype=torch.float64)
    e = torch.ones(4, 1, dtype=torch.float64)
    messages = {}

    def message(hv, hu, euv):
        return hu + euv

    def update(hv, mv):
        messages["m"] = mv
        return hv + 0.5 * mv

    h1 = message_passing_step(h, UNDIRECTED_PATH, message, update, edge_attr=e)
    torch.testing.assert_close(messages["m"].flatten(),
                               torch.tensor([2.0, 2.3, 2.0], dtype=torch.float64))
    torch.testing.assert_close(h1.flatten(), torch.tensor([1.5, 2.15, 0.8], dtype=torch.float64))


def test_graph_convolution_on_a_triangle():
    """M = W h_u, U = sigma(W' h_v + m_v), W = W' = diag(0.5, 0.5), sigma = id (a graph
    convolution, Kipf & Welling 2017) on a triangle with h = (1, 0), (0, 1), (1, 1).

    By hand: h_1 = (1, 1), h_2 = (1, 1) and h_3 = W h_3 + W h_1 + W h_2 = (0.5 + 0.5 + 0,
    0.5 + 0 + 0.5) = (1, 1). All three nodes collapse onto one embedding after one layer:
    over-smoothing at its most extreme.
    """
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    w = torch.diag(torch.tensor([0.5, 0.5], dtype=torch.float64))
    aggregated = {}

    def update(hv, mv):
        aggregated["m"] = mv
        return hv @ w.T + mv

    h1 = message_passing_step(h, TRIANGLE, lambda hv, hu, e: hu @ w.T, update)
    torch.testing.assert_close(aggregated["m"][0], torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(h1[0], torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(h1[1], torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(h1[2], torch.tensor([1.0, 1.0], dtype=torch.float64))


def test_step_is_permutation_equivariant():
    """Relabelling nodes relabels the output (permutation equivariance), for every aggregation."""
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    edges = torch.tensor([[0, 1, 1, 2, 3, 4, 4, 0], [1, 0, 2, 1, 4, 3, 0, 4]])
    weights = torch.rand(8, generator=generator, dtype=torch.float64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    inverse = torch.argsort(perm)
    for name in AGGREGATIONS:
        agg = make_aggregation(name, 4).double()
        update = (lambda hv, mv: mv) if name != "pna" else (lambda hv, mv: mv[:, :4])
        out = message_passing_step(h, edges, lambda hv, hu, e: hu * hv, update, agg,
                                   edge_weight=weights)
        out_perm = message_passing_step(h[perm], inverse[edges], lambda hv, hu, e: hu * hv,
                                        update, agg, edge_weight=weights)
        torch.testing.assert_close(out_perm, out[perm], msg=name)


@pytest.mark.parametrize("name", AGGREGATIONS)
def test_aggregations_fade_out_a_leaving_neighbour(name):
    """As a neighbour's envelope weight -> 0 its influence -> 0, even if it is the last one."""
    agg = make_aggregation(name, 3).double()
    messages = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.1, -1.0]], dtype=torch.float64)
    index = torch.tensor([0, 0])
    alone = agg(messages[:1], torch.tensor([1.0], dtype=torch.float64), index[:1], 1)
    for w in (1e-4, 1e-6):
        both = agg(messages, torch.tensor([1.0, w], dtype=torch.float64), index, 1)
        assert (both - alone).abs().max() < 50 * w
        last = agg(messages[:1], torch.tensor([w], dtype=torch.float64), index[:1], 1)
        empty = agg(messages[:0], torch.zeros(0, dtype=torch.float64), index[:0], 1)
        assert (last - empty).abs().max() < 50 * w


def test_sum_aggregation_is_the_default_and_counts_multiplicity():
    agg = SumAggregation()
    out = agg(torch.ones(3, 1), None, torch.tensor([0, 0, 0]), 1)
    assert out.item() == 3.0  # sum keeps the neighbour count that a mean discards


def test_hard_max_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="smoothmax"):
        MPNN(["Cu"], aggregation="max")


@pytest.mark.parametrize("axis,value", [("message", "conv"), ("update", "lstm"),
                                        ("aggregation", "median")])
def test_unknown_options_list_the_valid_ones(axis, value):
    with pytest.raises(ValueError, match="choose one of"):
        MPNN(["Cu"], **{axis: value})


def test_schnet_is_the_mpnn_preset_with_the_same_weights():
    torch.manual_seed(0)
    schnet = SchNet(["Cu", "Ni"], cutoff=4.0, n_features=16, n_interactions=2)
    generic = MPNN(["Cu", "Ni"], cutoff=4.0, n_features=16, n_layers=2, message="filter",
                   aggregation="sum", update="residual")
    generic.load_state_dict(schnet.state_dict())
    from ase_mpnn import MPNNCalculator
    from ase_mpnn.testing import rattled_triclinic_cell

    atoms = rattled_triclinic_cell(["Cu", "Ni"])
    e1 = MPNNCalculator(schnet, dtype="float64").get_potential_energy(atoms)
    e2 = MPNNCalculator(generic, dtype="float64").get_potential_energy(atoms)
    assert e1 == pytest.approx(e2, rel=1e-12)
    assert isinstance(schnet, MPNN) and isinstance(CGCNN(["Cu"]), MPNN)


def test_unknown_option_names_list_the_valid_ones():
    from ase_mpnn.models import build_model

    with pytest.raises(ValueError, match="no option.*n_feature.*options are.*n_features"):
        build_model("SchNet", ["Cu"], 5.0, n_feature=32)
    with pytest.raises(KeyError, match="unknown architecture 'Transformer'.*MACE.*SchNet"):
        build_model("Transformer", ["Cu"], 5.0)
