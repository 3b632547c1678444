"""relax, md, eos and phonons from Python, the CLI and workflows/ (tiny settings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import read, write

from ase_mpnn import MPNNCalculator, save_model
from ase_mpnn.cli import main
from ase_mpnn.simulate import SimulationError, eos, md, phonons, read_structure, relax
from ase_mpnn.testing import scale_to_force_rms

from .conftest import make_potential

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_model(make_potential(n_features=16, n_interactions=2),
                      tmp_path_factory.mktemp("model") / "cuni.mpnn")


def test_relax_bulk_with_cell_matches_emt_lattice_constant():
    crystal, summary = relax(bulk("Cu", "fcc", a=3.5), EMT(), fmax=1e-4)
    assert summary["converged"] and summary["max_force_eV_per_A"] < 1e-4
    assert crystal.cell.lengths()[0] * 2**0.5 == pytest.approx(3.59, abs=0.01)  # EMT's Cu
    assert crystal.get_potential_energy() == summary["energy_eV"]


def test_relax_slab_keeps_fixed_atoms(calc):
    slab = fcc111("Cu", size=(2, 2, 3), a=3.6, vacuum=6.0)
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 3]))
    relaxed, summary = relax(slab, calc, fmax=0.05, steps=30, cell=False, optimizer="BFGS")
    fixed = [a.index for a in slab if a.tag == 3]
    np.testing.assert_allclose(relaxed.positions[fixed], slab.positions[fixed])
    assert summary["steps"] <= 30


def test_relax_accepts_pymatgen_structure():
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.5))
    crystal, summary = relax(structure, EMT(), fmax=1e-3)
    assert summary["converged"] and len(crystal) == 1


def test_results_stay_with_their_structure_when_the_calculator_is_reused(calc):
    first, _ = relax(bulk("Cu", "fcc", a=3.6, cubic=True), calc, steps=2)
    energy = first.get_potential_energy()
    relax(fcc111("Cu", size=(2, 2, 3), a=3.6, vacuum=6.0), calc, steps=2, cell=False)
    assert first.get_potential_energy() == energy


@pytest.mark.parametrize("ensemble,thermostat", [("nve", None), ("nvt", "langevin"),
                                                 ("nvt", "bussi"), ("nvt", "nose-hoover"),
                                                 ("npt", "mtk"), ("npt", "berendsen")])
def test_md_ensembles_run_and_log(calc, ensemble, thermostat, tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    traj = tmp_path / "md.traj"
    final, summary = md(atoms, calc, ensemble=ensemble, thermostat=thermostat, steps=6,
                        log_interval=2, trajectory=traj, progress=False,
                        log_file=tmp_path / "log.csv")
    assert len(summary["log"]) == 4 and len(read(traj, ":")) == 4
    table = np.loadtxt(tmp_path / "log.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 3], [row["total_eV"] for row in summary["log"]], rtol=1e-9)
    assert {"time_fs", "total_eV", "temperature_K", "pressure_GPa"} <= set(summary["log"][0])
    if ensemble == "nve":
        assert summary["energy_drift_eV_per_atom"] < 1e-4


def test_md_blow_up_stops_and_keeps_frames(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=0)
    wild = MPNNCalculator(scale_to_force_rms(make_potential(n_features=16), atoms, 300.0))
    with pytest.raises(SimulationError, match="blew up|collapsed|energy is"):
        md(atoms, wild, ensemble="nve", steps=400, timestep_fs=5.0, log_interval=1,
           trajectory=tmp_path / "md.extxyz", progress=False)
    assert len(read(tmp_path / "md.extxyz", ":")) >= 1


@pytest.mark.parametrize("kwargs,message", [
    ({"optimizer": "SGD"}, "unknown optimizer"),
])
def test_relax_bad_options(calc, kwargs, message):
    with pytest.raises(ValueError, match=message):
        relax(bulk("Cu", "fcc", a=3.6), calc, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"ensemble": "nph"}, "unknown ensemble"),
    ({"ensemble": "nvt", "thermostat": "andersen"}, "unknown nvt thermostat"),
])
def test_md_bad_options_fail_before_any_step(calc, kwargs, message):
    with pytest.raises(ValueError, match=message):
        md(bulk("Cu", "fcc", a=3.6, cubic=True), calc, steps=5, progress=False, **kwargs)


def test_eos_reproduces_emt_bulk_modulus(tmp_path):
    result = eos(bulk("Cu", "fcc", a=3.6, cubic=True), EMT(), plot=tmp_path / "eos.png")
    assert result["B0_GPa"] == pytest.approx(134, rel=0.05)  # EMT Cu
    assert (tmp_path / "eos.png").stat().st_size > 1000


def test_phonons_of_emt_copper(tmp_path):
    crystal, _ = relax(bulk("Cu", "fcc", a=3.6), EMT(), fmax=1e-5)
    result = phonons(crystal, EMT(), supercell=(3, 3, 3), mesh=(8, 8, 8), plot=tmp_path / "ph.png")
    at = result["frequencies_THz_at"]
    assert max(abs(f) for f in at["Gamma"]) < 0.05 and not result["imaginary_modes"]
    assert 4.5 < at["X"][0] < 6.5 and 7.0 < at["X"][2] < 9.0
    assert (tmp_path / "ph.png").exists()


def test_structure_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_structure(tmp_path / "none.cif")
    (tmp_path / "junk.cif").write_text("not a cif\n")
    with pytest.raises(ValueError, match="cannot read"):
        read_structure(tmp_path / "junk.cif")


def test_cli_jobs_write_their_outputs(model_file, tmp_path):
    structure = tmp_path / "cu.cif"
    write(structure, bulk("Cu", "fcc", a=3.6, cubic=True))
    common = [str(structure), "--model", str(model_file)]
    jobs = {"relax": ["--steps", "5"], "md": ["--steps", "4", "--log-interval", "2"],
            "eos": ["--points", "5"],
            "phonons": ["--supercell", "1", "1", "1", "--mesh", "2", "2", "2"]}
    for job, extra in jobs.items():
        out = tmp_path / job
        assert main([job, *common, "--out", str(out), *extra]) == 0
        assert json.loads((out / "summary.json").read_text())
        assert list(out.glob("*.png")), job


def test_cli_rejects_elements_the_model_lacks(model_file, tmp_path, capsys):
    write(tmp_path / "au.cif", bulk("Au", "fcc", a=4.08))
    assert main(["relax", str(tmp_path / "au.cif"), "--model", str(model_file)]) == 2
    assert "Au" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("script,args", [
    ("relax_bulk_and_slab.py", ["--layers", "3", "--fmax", "0.1"]),
    ("nvt_rdf.py", ["--steps", "20", "--repeat", "2"]),
    ("eos.py", ["--points", "5"]),
    ("phonons.py", ["--supercell", "2"]),
])
def test_workflow_scripts_run(model_file, tmp_path, script, args):
    subprocess.run([sys.executable, str(WORKFLOWS / script), "--model", str(model_file),
                    "--out", str(tmp_path), *args], check=True, capture_output=True, text=True)
    assert (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_builtin_emt_model_matches_emt():
    """Lattice constant 0.5 %, bulk modulus and phonons at X 10 %, NVE drift, slab relax."""
    from ase_mpnn import list_models

    if "emt-cuni-schnet" not in list_models():
        pytest.skip("no built-in EMT model in this checkout")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_emt.py"
    result = subprocess.run([sys.executable, str(script), "--model", "emt-cuni-schnet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
