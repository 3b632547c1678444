"""Every script under workflows/ runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ase.build import bulk
from ase.io import write

from ase_mpnn import save_model

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def test_single_point(potential, tmp_path):
    write(tmp_path / "cu.cif", bulk("Cu", "fcc", a=3.6, cubic=True))
    model = save_model(potential, tmp_path / "m.mpnn")
    result = subprocess.run([sys.executable, str(WORKFLOWS / "single_point.py"),
                             str(tmp_path / "cu.cif"), str(model)],
                            capture_output=True, text=True, check=True)
    summary = json.loads(result.stdout)
    assert summary["formula"] == "Cu4" and len(summary["stress_eV_per_A3"]) == 6
