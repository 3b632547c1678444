"""Reference data made with real potentials: EMT for metals, GFN2-xTB (tblite) for molecules."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from ase.io import read

from ase_mpnn.cli import main
from ase_mpnn.training.xtb_data import molecule_structure, xtb_calculator, xtb_dataset


def test_shipped_aspirin_is_aspirin():
    atoms = molecule_structure("aspirin")
    assert atoms.get_chemical_formula() == "C9H8O4"
    distances = atoms.get_all_distances() + 10 * np.eye(len(atoms))
    assert 0.9 < distances.min() < 1.2  # an O-H or C-H bond, no overlapping atoms


def test_unknown_molecule_names_the_choices():
    with pytest.raises(ValueError, match="unknown molecule 'unobtainium'.*aspirin"):
        molecule_structure("unobtainium")


def test_missing_tblite_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite.ase", None)
    with pytest.raises(ImportError, match=r"ase-mpnn\[xtb\]"):
        xtb_calculator()


def test_xtb_dataset_is_labelled_and_reproducible(tmp_path):
    pytest.importorskip("tblite")
    first = read(xtb_dataset(["ethanol"], 12, tmp_path / "a.extxyz", seed=3, progress=False), ":")
    again = read(xtb_dataset(["ethanol"], 12, tmp_path / "b.extxyz", seed=3, progress=False), ":")
    assert len(first) == 12 and all(a.get_chemical_formula() == "C2H6O" for a in first)
    assert all("REF_stress" not in a.info and not a.pbc.any() for a in first)
    energies = np.array([a.info["REF_energy"] for a in first])
    assert np.all(np.isfinite(energies)) and energies.std() > 1e-3  # distinct frames
    np.testing.assert_allclose(energies, [a.info["REF_energy"] for a in again])
    # GFN2-xTB forces are the gradient of its energy: check one frame by finite differences
    atoms = first[-1].copy()
    atoms.calc = xtb_calculator()
    forces, h = atoms.get_forces(), 1e-4
    atoms.positions[2, 1] += h
    e_plus = atoms.get_potential_energy()
    atoms.positions[2, 1] -= 2 * h
    e_minus = atoms.get_potential_energy()
    assert forces[2, 1] == pytest.approx(-(e_plus - e_minus) / (2 * h), abs=1e-3)
    np.testing.assert_allclose(first[-1].arrays["REF_forces"], forces, atol=2e-5)


def test_make_data_cli_xtb(tmp_path, capsys):
    pytest.importorskip("tblite")
    out = tmp_path / "mol.extxyz"
    assert main(["make-data", "--reference", "xtb", "--molecules", "water", "-n", "4",
                 "--seed", "1", "-o", str(out)]) == 0
    assert len(read(out, ":")) == 4 and "GFN2-xTB" in capsys.readouterr().out
