"""Bad structures get an error that names the problem, before any compute."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from ase_mpnn import InvalidStructureError, UnknownElementError

from .conftest import cu_fcc


def evaluate(calc, atoms):
    atoms.calc = calc
    return atoms.get_potential_energy()


def test_unknown_element_is_named_with_the_model_species(calc):
    atoms = cu_fcc()
    atoms.symbols[1] = "Au"
    with pytest.raises(UnknownElementError, match=r"Au not covered.*knows only Cu, Ni"):
        evaluate(calc, atoms)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_positions(calc, value):
    atoms = cu_fcc()
    atoms.positions[2, 1] = value
    with pytest.raises(InvalidStructureError, match=r"atom\(s\) \[2\] are NaN or inf"):
        evaluate(calc, atoms)


def test_non_finite_cell(calc):
    atoms = cu_fcc()
    atoms.cell[0, 0] = np.nan
    with pytest.raises(InvalidStructureError, match="cell holds NaN"):
        evaluate(calc, atoms)


@pytest.mark.parametrize("cell", [
    [[3.6, 0, 0], [0, 3.6, 0], [0, 0, 0]],          # zero vector along a periodic axis
    [[3.6, 0, 0], [7.2, 0, 0], [0, 0, 3.6]],        # two parallel vectors
])
def test_degenerate_periodic_cell(calc, cell):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 1.0]], cell=cell, pbc=True)
    with pytest.raises(InvalidStructureError, match="degenerate"):
        evaluate(calc, atoms)


def test_zero_cell_is_fine_where_not_periodic(calc):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]],
                  cell=[[3.0, 0, 0], [0, 0, 0], [0, 0, 0]],
                  pbc=[True, False, False])
    assert np.isfinite(evaluate(calc, atoms))


def test_atoms_on_top_of_each_other(calc):
    atoms = cu_fcc()
    atoms.positions[3] = atoms.positions[0] + [0.05, 0, 0]
    with pytest.raises(InvalidStructureError, match=r"atoms 0 and 3 are 0.0500 A apart"):
        evaluate(calc, atoms)


def test_not_a_structure(calc):
    from ase_mpnn import build_graph

    with pytest.raises(TypeError, match="ase.Atoms or a pymatgen"):
        build_graph(["not atoms"], 4.0, ["Cu"])


def test_pymatgen_structure_is_accepted(calc):
    from pymatgen.io.ase import AseAtomsAdaptor

    from ase_mpnn import build_graph, keys

    atoms = cu_fcc()
    structure = AseAtomsAdaptor.get_structure(atoms)
    graph = build_graph(structure, 4.0, ["Cu", "Ni"])
    reference = build_graph(atoms, 4.0, ["Cu", "Ni"])
    assert graph[keys.EDGE_INDEX].shape == reference[keys.EDGE_INDEX].shape
