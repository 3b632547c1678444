"""Workflow-engine adapters: quacc recipes and atomate2 Makers (skipped when not installed)."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from ase.stress import voigt_6_to_full_3x3_stress
from ase.units import GPa

from ase_mpnn import MPNNCalculator, __version__

from .conftest import cu_fcc

MODEL = "emt-cuni-schnet"
#: the jobs are compared with direct calculator calls to 1e-9: both in float64
FLOAT64 = {"device": "cpu", "dtype": "float64"}


def reference(atoms, stress: bool = False) -> tuple[np.ndarray | float, ...]:
    """Energy (eV), forces (eV/A) [and Voigt stress, eV/A^3] straight from the calculator."""
    atoms = atoms.copy()
    atoms.calc = MPNNCalculator(MODEL, device="cpu", dtype="float64")
    results = atoms.get_potential_energy(), atoms.get_forces()
    return (*results, atoms.get_stress()) if stress else results


@pytest.fixture()
def cu():
    return cu_fcc(rattle=0.05)


@pytest.mark.parametrize(("module", "extra", "blocked"), [
    ("ase_mpnn.integrations.quacc", "quacc", "quacc"),
    ("ase_mpnn.integrations.atomate2", "atomate2", "atomate2.forcefields.jobs"),
])
def test_missing_engine_says_what_to_install(monkeypatch, module, extra, blocked):
    monkeypatch.setitem(sys.modules, blocked, None)  # import of it now fails
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'ase-mpnn\[{extra}\]'"):
        importlib.import_module(module)


# -- quacc -------------------------------------------------------------------------------

@pytest.fixture()
def quacc_jobs(tmp_path, monkeypatch):
    """The recipes, with quacc writing into tmp_path (no workflow engine: plain calls)."""
    quacc = pytest.importorskip("quacc")
    jobs = importlib.import_module("ase_mpnn.integrations.quacc")
    monkeypatch.chdir(tmp_path)
    with quacc.change_settings({"RESULTS_DIR": tmp_path, "SCRATCH_DIR": None,
                                "CREATE_UNIQUE_DIR": False, "GZIP_FILES": False}):
        yield jobs


def test_quacc_static_matches_calculator(quacc_jobs, cu):
    result = quacc_jobs.static_job(cu, MODEL, device="cpu", dtype="float64")
    energy, forces = reference(cu)
    assert abs(result["results"]["energy"] - energy) < 1e-10
    np.testing.assert_allclose(result["results"]["forces"], forces, atol=1e-10, rtol=0)
    assert result["results"]["stress"].shape == (6,)
    assert result["parameters"]["model"] == MODEL and result["name"] == "ase-mpnn Static"


def test_quacc_relax_converges(quacc_jobs, cu):
    result = quacc_jobs.relax_job(cu, opt_params={"fmax": 0.01}, device="cpu",
                                  dtype="float64")
    assert result["converged"] and result["name"] == "ase-mpnn Relax"
    energy, forces = reference(result["atoms"])
    assert abs(result["results"]["energy"] - energy) < 1e-10
    assert np.abs(forces).max() < 0.01
    assert energy < reference(cu)[0]


def test_quacc_md_runs(quacc_jobs, cu):
    result = quacc_jobs.md_job(cu, MODEL, steps=10, timestep_fs=1.0, temperature_K=300,
                               md_params={"maxwell_boltzmann_kwargs": {
                                   "temperature_K": 300, "rng": np.random.default_rng(0)}},
                               device="cpu", dtype="float64")
    assert result["completed_steps"] == 10 and len(result["trajectory"]) == 11
    assert abs(result["results"]["energy"] - reference(result["atoms"])[0]) < 1e-10
    total = [a.get_total_energy() for a in result["trajectory"]]
    assert np.ptp(total) < 5e-3  # NVE at 1 fs conserves energy


# -- atomate2 ----------------------------------------------------------------------------

@pytest.fixture()
def run_job(tmp_path):
    """Run one jobflow job in tmp_path and return its output."""
    jobflow = pytest.importorskip("jobflow")
    pytest.importorskip("atomate2")

    def run(job, name: str):
        assert job.name == name
        responses = jobflow.run_locally(job, create_folders=True, root_dir=tmp_path,
                                        ensure_success=True, log=False)
        return responses[job.uuid][1].output

    return run


@pytest.fixture()
def cu_structure(cu):
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(cu)


def check_document(doc) -> None:
    """A ForceFieldTaskDocument naming the model, with the calculator's energy."""
    from atomate2.forcefields.schemas import ForceFieldTaskDocument
    from pymatgen.io.ase import AseAtomsAdaptor

    assert isinstance(doc, ForceFieldTaskDocument)
    assert doc.forcefield_name == f"ase-mpnn:{MODEL}" and doc.forcefield_version == __version__
    assert doc.ase_calculator_name == "MPNNCalculator"
    energy = reference(AseAtomsAdaptor.get_atoms(doc.output.structure))[0]
    assert abs(doc.output.energy - energy) < 1e-9


def test_atomate2_static(run_job, cu, cu_structure):
    from ase_mpnn.integrations.atomate2 import MPNNStaticMaker

    doc = run_job(MPNNStaticMaker(calculator_kwargs=FLOAT64).make(cu_structure),
                  "ase-mpnn static")
    check_document(doc)
    _, forces, stress = reference(cu, stress=True)
    np.testing.assert_allclose(doc.output.forces, forces, atol=1e-9, rtol=0)
    kbar = -10 / GPa * voigt_6_to_full_3x3_stress(stress)  # atomate2: kbar, VASP's sign
    np.testing.assert_allclose(doc.output.stress, kbar, atol=1e-8, rtol=0)


def test_atomate2_relax(run_job, cu, cu_structure):
    from ase_mpnn.integrations.atomate2 import MPNNRelaxMaker

    maker = MPNNRelaxMaker(relax_kwargs={"fmax": 0.02}, calculator_kwargs=FLOAT64)
    copy = MPNNRelaxMaker.from_dict(maker.as_dict())  # as jobflow serialises Makers
    assert copy.as_dict() == maker.as_dict() and copy.calculator_meta == maker.calculator_meta
    doc = run_job(maker.make(cu_structure), "ase-mpnn relax")
    check_document(doc)
    assert doc.is_force_converged and np.abs(doc.output.forces).max() < 0.02
    assert doc.output.energy < reference(cu)[0]


def test_atomate2_md(run_job, cu_structure):
    from ase_mpnn.integrations.atomate2 import MPNNMDMaker

    doc = run_job(MPNNMDMaker(n_steps=10, time_step=1.0, temperature=300,
                              mb_velocity_seed=0, calculator_kwargs=FLOAT64).make(cu_structure),
                  "ase-mpnn MD")
    check_document(doc)
    assert doc.output.n_steps == 11


def test_atomate2_model_field_is_the_only_model(cu_structure):
    pytest.importorskip("atomate2")
    from ase_mpnn.integrations.atomate2 import MPNNStaticMaker

    with pytest.raises(ValueError, match="model field"):
        MPNNStaticMaker(calculator_kwargs={"model": MODEL})


COMMITTEE = "emt-cuni-schnet-committee"


def test_quacc_static_takes_a_committee(quacc_jobs, cu):
    result = quacc_jobs.static_job(cu, COMMITTEE, device="cpu", dtype="float64")
    atoms = cu.copy()
    atoms.calc = MPNNCalculator(COMMITTEE, device="cpu", dtype="float64")
    np.testing.assert_allclose(result["results"]["forces"], atoms.get_forces(), atol=1e-10)
    np.testing.assert_allclose(result["results"]["forces_std"],
                               atoms.calc.results["forces_std"], atol=1e-10)


def test_atomate2_static_takes_a_committee(run_job, cu, cu_structure):
    from ase_mpnn.integrations.atomate2 import MPNNStaticMaker

    maker = MPNNStaticMaker(model=COMMITTEE, calculator_kwargs=FLOAT64)
    doc = run_job(maker.make(cu_structure), "ase-mpnn static")
    atoms = cu.copy()
    atoms.calc = MPNNCalculator(COMMITTEE, device="cpu", dtype="float64")
    assert abs(doc.output.energy - atoms.get_potential_energy()) < 1e-9
    assert doc.forcefield_name == f"ase-mpnn:{COMMITTEE}"
