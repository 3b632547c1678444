"""Optional packages (extras): the core works without them, and each feature that needs one
says which ``pip install 'ase-mpnn[EXTRA]'`` to run.

The packages are blocked in a subprocess by ``sys.modules[name] = None`` (an import of a
blocked name raises ImportError, exactly as when it is not installed), so these tests run
whatever is installed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ase_mpnn import MissingDependencyError
from ase_mpnn._compat import require

#: top-level modules of the optional packages, each installed by an extra
OPTIONAL = ("phonopy", "dask", "distributed", "pymatgen", "tblite", "quacc", "atomate2",
            "jobflow", "torch_scatter", "dftd3")

#: what runs in the subprocess: the core with every optional package blocked, then each
#: entry point that needs an extra; prints one JSON object {case: outcome}
_BLOCKED_SCRIPT = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None

import contextlib, io, json, os, traceback
from pathlib import Path
import numpy as np
from ase.build import bulk
from ase.io import write

outcome = {{}}

def record(case, call):
    try:
        value = call()
        outcome[case] = {{"ok": True, "value": value}}
    except BaseException as exc:
        outcome[case] = {{"ok": False, "type": type(exc).__name__,
                         "import_error": isinstance(exc, ImportError), "message": str(exc)}}

def cli(*argv):
    from ase_mpnn.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(list(argv))
    return {{"status": status, "stderr": err.getvalue()}}

def core():
    import ase_mpnn, ase_mpnn.batch, ase_mpnn.cli, ase_mpnn.dispersion, ase_mpnn.runs
    import ase_mpnn.simulate, ase_mpnn.training
    from ase_mpnn import MPNNCalculator
    from ase_mpnn.batch import evaluate
    from ase_mpnn.simulate import relax
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=0)
    atoms.calc = MPNNCalculator("emt-cuni-schnet", dtype="float64")
    energy = atoms.get_potential_energy()
    batched = evaluate([atoms], "emt-cuni-schnet", dtype="float64")[0]["energy"]
    relaxed, summary = relax(atoms, atoms.calc, fmax=0.5, steps=5)
    return {{"energy": energy, "batched": batched, "forces": atoms.get_forces().tolist()}}

def phonons():
    from ase_mpnn import MPNNCalculator
    from ase_mpnn.simulate import phonons
    atoms = bulk("Cu", "fcc", a=3.6)
    return phonons(atoms, MPNNCalculator("emt-cuni-schnet"), supercell=(2, 2, 2))

def dask_run(workers):
    from ase_mpnn.runs import run
    return run("static", [inputs], str(work / f"run{{workers}}.db"), "emt-cuni-schnet",
               workers=workers, progress=False)

def xtb():
    from ase_mpnn.training.xtb_data import xtb_calculator
    return xtb_calculator()

def integration(name):
    import importlib
    importlib.import_module("ase_mpnn.integrations." + name)

work = Path({work!r})
inputs = str(work / "cu.extxyz")
write(inputs, [bulk("Cu", "fcc", a=3.6, cubic=True)])

record("core", core)
record("phonons", phonons)
record("run_without_workers", lambda: dask_run(0))
record("run_on_dask", lambda: dask_run(1))
record("xtb", xtb)
record("quacc", lambda: integration("quacc"))
record("atomate2", lambda: integration("atomate2"))
record("cli_phonons", lambda: cli("phonons", inputs, "--model", "emt-cuni-schnet",
                                  "--supercell", "2", "2", "2", "--out", str(work / "ph")))
record("cli_run", lambda: cli("run", "static", inputs, "--db", str(work / "cli.db"),
                              "--model", "emt-cuni-schnet", "--workers", "2"))
record("cli_make_data_xtb", lambda: cli("make-data", "--reference", "xtb", "--molecules",
                                        "H2O", "-n", "2", "-o", str(work / "x.extxyz")))
print("JSON" + json.dumps(outcome))
"""


def _run_python(code: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def blocked(tmp_path_factory) -> dict:
    """Outcomes of the core and of each extra's entry points with OPTIONAL blocked."""
    work = tmp_path_factory.mktemp("extras")
    out = _run_python(textwrap.dedent(_BLOCKED_SCRIPT.format(blocked=OPTIONAL, work=str(work))))
    return json.loads(out.split("JSON", 1)[1])


def test_require_names_the_extra():
    with pytest.raises(MissingDependencyError) as info:
        require("ase_mpnn_no_such_module.sub", "phonons", "phonons", package="phonopy")
    assert isinstance(info.value, ImportError)
    assert str(info.value) == "phonons need phonopy: pip install 'ase-mpnn[phonons]'"
    assert require("json", "x", "y").dumps is json.dumps


def test_importing_the_package_loads_no_optional_package():
    """Lazy imports: the package and its command line import none of OPTIONAL."""
    code = ("import sys, ase_mpnn, ase_mpnn.batch, ase_mpnn.cli, ase_mpnn.runs, "
            "ase_mpnn.simulate, ase_mpnn.training, ase_mpnn.dispersion\n"
            f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))")
    assert _run_python(code).strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_core_works_without_optional_packages(blocked):
    core = blocked["core"]
    assert core["ok"], core
    assert core["value"]["energy"] == pytest.approx(core["value"]["batched"], abs=1e-8)
    assert all(abs(f) < 10 for row in core["value"]["forces"] for f in row)
    run = blocked["run_without_workers"]  # Dask is needed only for workers
    assert run["ok"], run
    assert run["value"]["ok"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("case, message", [
    ("phonons", "phonons need phonopy: pip install 'ase-mpnn[phonons]'"),
    ("run_on_dask", "runs on Dask workers need dask: pip install 'ase-mpnn[dask]'"),
    ("xtb", "GFN2-xTB reference data need tblite: pip install 'ase-mpnn[xtb]'"),
    ("quacc", "pip install 'ase-mpnn[quacc]'"),
    ("atomate2", "pip install 'ase-mpnn[atomate2]'"),
])
def test_a_missing_extra_names_its_pip_install(blocked, case, message):
    outcome = blocked[case]
    assert not outcome["ok"] and outcome["import_error"], outcome
    assert message in outcome["message"]


@pytest.mark.slow
@pytest.mark.parametrize("case, extra", [
    ("cli_phonons", "phonons"), ("cli_run", "dask"), ("cli_make_data_xtb", "xtb"),
])
def test_the_command_line_names_the_extra(blocked, case, extra):
    outcome = blocked[case]
    assert outcome["ok"], outcome
    assert outcome["value"]["status"] == 2
    stderr = outcome["value"]["stderr"].strip()
    assert len(stderr.splitlines()) == 1
    assert f"pip install 'ase-mpnn[{extra}]'" in stderr
