"""The ase-mpnn command: demo, info, new."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ase_mpnn.cli import main


def test_new_then_info(tmp_path, capsys):
    path = tmp_path / "m.mpnn"
    assert main(["new", "SchNet", "--species", "Cu", "Ni", "--cutoff", "4.5",
                 "--hyperparameters", '{"n_features": 16}', "-o", str(path)]) == 0
    assert main(["info", str(path)]) == 0
    manifest = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert manifest["cutoff"] == 4.5 and manifest["hyperparameters"]["n_features"] == 16


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.mpnn")]) == 2
    assert "no model file" in capsys.readouterr().err
    assert main(["new", "Nope", "--species", "Cu", "-o", str(tmp_path / "x.mpnn")]) == 2
    assert "SchNet" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "ase_mpnn.cli", "--help"],
                            capture_output=True, text=True, check=True)
    assert "demo" in result.stdout and "info" in result.stdout


@pytest.mark.slow
def test_demo_runs_and_conserves_energy(tmp_path):
    from ase_mpnn.demo import run_demo

    summary = run_demo(tmp_path, md_steps=50)
    assert summary["relax"]["converged"]
    assert summary["md"]["max_energy_drift_eV_per_atom"] < 1e-4
    assert (tmp_path / "md_energy.png").stat().st_size > 1000
    assert (tmp_path / "summary.json").exists()
