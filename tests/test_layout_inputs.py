"""A graph that hands its layout in (the bond pairing and the neighbour-matrix slots, as a
compiled program receives them: ``ase_mpnn.compiled``) gives the results of a graph whose
model finds the layout itself, eagerly and under a whole-program trace, where nothing is
read from the data (float64, 1e-12). Fast: nothing is compiled here; tests/test_compiled.py
runs the compiled programs."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk

from ase_mpnn import keys
from ase_mpnn.compiled import uses_neighbor_matrix, with_bond_pairing, with_neighbor_slots
from ase_mpnn.graph import build_graph
from ase_mpnn.models.presets import SMALL
from ase_mpnn.nn.tracing import whole_program_trace
from ase_mpnn.potential import drop_edges_beyond, edge_geometry
from ase_mpnn.testing import rattled_triclinic_cell, small_molecule

from .conftest import SPECIES, make_preset

PRESETS = ["SchNet", "NequIP", "MACE"]
LAYOUT_KEYS = (keys.BOND_OF_EDGE, keys.BOND_FIRST_EDGE, keys.NEIGHBOR_SLOT, keys.SLOT_COLUMNS)


def _bulk():
    atoms = bulk("Cu", "fcc", 3.6, cubic=True).repeat(2)
    atoms.numbers[::3] = 28  # some Ni
    atoms.rattle(0.05, seed=1)
    return atoms


def _results(potential, graph):
    out = potential(graph, forces=True, stress=bool(graph[keys.PBC].all()))
    return [out[keys.ENERGY], out[keys.ATOMIC_ENERGIES], out[keys.FORCES]] + (
        [out[keys.STRESS]] if keys.STRESS in out else [])


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


def test_presets_exist_and_those_that_sum_over_neighbours_have_a_neighbor_matrix_path():
    assert set(PRESETS) <= set(SMALL)
    assert uses_neighbor_matrix(make_preset("MACE"))
    assert uses_neighbor_matrix(make_preset("NequIP"))
    assert uses_neighbor_matrix(make_preset("SchNet"))  # its filter sum
    assert not uses_neighbor_matrix(make_preset("MPNN-mlp-mean-gru"))  # a mean


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("structure", ["bulk", "triclinic", "molecule"])
def test_a_handed_in_layout_gives_the_same_results(preset, structure):
    potential = make_preset(preset).double()
    atoms = {"bulk": _bulk, "triclinic": lambda: rattled_triclinic_cell(SPECIES),
             "molecule": lambda: small_molecule(SPECIES)}[structure]()
    graph = build_graph(atoms, potential.cutoff, SPECIES, dtype=torch.float64)
    reference = _results(potential, graph)
    paired = with_bond_pairing(graph)
    slotted = with_neighbor_slots(paired)
    if structure == "bulk":
        assert slotted is not None  # a full bulk cell is in the neighbour-matrix layout
    for handed_in in [paired] + ([slotted] if slotted is not None else []):
        _assert_same(reference, _results(potential, handed_in))
        with whole_program_trace():  # only what is handed in is used
            _assert_same(reference, _results(potential, handed_in))


def test_under_a_trace_without_a_layout_the_model_runs_on_the_edges():
    potential = make_preset("MACE").double()
    graph = build_graph(_bulk(), potential.cutoff, SPECIES, dtype=torch.float64)
    reference = _results(potential, graph)
    with whole_program_trace():
        _assert_same(reference, _results(potential, graph))


def test_dropping_the_pairs_beyond_the_cutoff_drops_the_layout_of_the_old_edges():
    potential = make_preset("MACE").double()
    atoms = _bulk()
    skin_graph = build_graph(atoms, potential.cutoff + 1.0, SPECIES, dtype=torch.float64)
    geometry = edge_geometry(with_neighbor_slots(with_bond_pairing(skin_graph)),
                             skin_graph[keys.POSITIONS], skin_graph[keys.CELL])
    dropped = drop_edges_beyond(geometry, potential.cutoff)
    assert dropped[keys.EDGE_INDEX].shape[1] < skin_graph[keys.EDGE_INDEX].shape[1]
    assert not set(LAYOUT_KEYS) & set(dropped)
    # and a skin list handed its (now stale) layout still gives the plain results
    skin_graph[keys.LIST_CUTOFF] = torch.tensor(potential.cutoff + 1.0)
    plain = build_graph(atoms, potential.cutoff, SPECIES, dtype=torch.float64)
    _assert_same(_results(potential, plain),
                 _results(potential, with_neighbor_slots(with_bond_pairing(skin_graph))))


@pytest.mark.parametrize("preset", PRESETS)
def test_the_handed_in_layout_is_the_one_used(preset, monkeypatch):
    """Under a trace the model reads the layout it is handed: a wrong bond pairing changes
    the energy, and the neighbour-matrix path (SchNet: its filter sum there) runs only on
    a slotted graph."""
    from ase_mpnn.nn.convolution import NeighborMatrixProducts

    potential = make_preset(preset).double()
    graph = with_bond_pairing(build_graph(_bulk(), potential.cutoff, SPECIES,
                                          dtype=torch.float64))
    wrong = dict(graph)
    wrong[keys.BOND_OF_EDGE] = graph[keys.BOND_OF_EDGE].roll(1)
    with whole_program_trace():
        assert not torch.allclose(_results(potential, wrong)[0], _results(potential, graph)[0])
    from ase_mpnn.models import mpnn

    calls = []
    original = NeighborMatrixProducts.neighbor_sum
    monkeypatch.setattr(NeighborMatrixProducts, "neighbor_sum",
                        lambda self, *a: calls.append(1) or original(self, *a))
    original_sum = mpnn.filter_sum_slots
    monkeypatch.setattr(mpnn, "filter_sum_slots", lambda *a: calls.append(1) or original_sum(*a))
    with whole_program_trace():
        _results(potential, graph)
        assert not calls
        _results(potential, with_neighbor_slots(graph))
    assert bool(calls) == uses_neighbor_matrix(potential)
