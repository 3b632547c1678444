"""Distributed runs into a results database: nothing lost, nothing twice, failures recorded."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from ase_mpnn.batch import evaluate, relax_batch
from ase_mpnn.cli import main
from ase_mpnn.errors import ASEMPNNError
from ase_mpnn.runs import ResultsDB, read_inputs, run

from .test_highthroughput import small_cells

# worker kills and timeouts: on one xdist worker with the compile tests (see test_compiled)
pytestmark = pytest.mark.xdist_group("cpu-heavy")

MODEL = "emt-cuni-schnet"


@pytest.fixture()
def inputs(tmp_path):
    """12 small Cu-Ni cells and, third, one with a NaN coordinate."""
    structures = small_cells(12, seed=5)
    structures[2] = structures[2].copy()
    structures[2].positions[0, 1] = np.nan
    path = tmp_path / "inputs.extxyz"
    write(path, structures)
    return path, structures


def rows_by_id(db_path) -> dict:
    rows = list(ResultsDB(db_path).rows())
    ids = [r.input_id for r in rows]
    assert len(ids) == len(set(ids)), "a structure was stored twice"
    return {r.input_id: r for r in rows}


# A LocalCluster's nannies, the worker processes they spawn and the workers these tests kill
# all live in a child interpreter, never in pytest-xdist's worker: a CI run lost its xdist
# worker in the middle of a Dask test (its execnet gateway found its channel broken and sent
# itself SIGINT), which ended the whole run. In a child, a hang is a timeout with output.
CLUSTER_TIMEOUT_S = 600


def run_cli_isolated(argv: list[str], **popen) -> subprocess.CompletedProcess:
    """``ase-mpnn argv`` in a child interpreter; raises with its output if it fails."""
    command = [sys.executable, "-m", "ase_mpnn.cli", *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=CLUSTER_TIMEOUT_S,
                            **popen)
    assert result.returncode == 0, f"{argv} exit {result.returncode}:\n{result.stderr[-4000:]}"
    return result


CHILD_RUN = """
import json, sys, time

import psutil

from ase_mpnn.runs import run

counts = run({task!r}, [{path!r}], {db!r}, {model!r}, progress=False,
             **json.loads(sys.argv[1]))


def workers_alive():
    alive = 0
    for child in psutil.Process().children(recursive=True):
        try:
            alive += "spawn_main" in " ".join(child.cmdline())
        except psutil.Error:  # it ended while we looked
            pass
    return alive


# the cluster closes with its client: no worker process outlives run()
deadline = time.time() + 30
while workers_alive() and time.time() < deadline:
    time.sleep(0.2)
print(json.dumps({{"counts": counts, "workers_left": workers_alive()}}))
"""


def run_isolated(task: str, path, db, *, env: dict[str, str] | None = None,
                 **kwargs) -> subprocess.Popen:
    """Start ``runs.run(task, [path], db, MODEL, **kwargs)`` in a child interpreter that
    prints its counts as JSON; ``finish`` waits for them."""
    code = CHILD_RUN.format(task=task, path=str(path), db=str(db), model=MODEL)
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(kwargs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def finish(process: subprocess.Popen) -> dict[str, int]:
    """The counts a ``run_isolated`` child printed (its stderr in the failure if it failed)."""
    try:
        out, err = process.communicate(timeout=CLUSTER_TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 0, f"exit {process.returncode}:\n{err[-4000:]}"
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["workers_left"] == 0, "worker processes outlived run()"
    return printed["counts"]


def test_static_run_stores_everything_once_and_rerun_skips(inputs, tmp_path):
    path, _ = inputs
    db = tmp_path / "static.db"
    counts = run("static", [path], db, MODEL, workers=0, chunk_size=5, progress=False,
                 dtype="float64")
    assert counts == {"inputs": 12, "skipped": 0, "ok": 11, "failed": 1}
    rows = rows_by_id(db)
    assert rows[f"{path}:2"].status == "failed" and "NaN" in rows[f"{path}:2"].error
    as_read = [frame.atoms for frame in read_inputs([path])[0]]  # extxyz rounds positions
    expected = evaluate(as_read, MODEL, device="cpu", dtype="float64", errors="store")
    for k, result in enumerate(expected):
        if "error" in result:
            continue
        row = rows[f"{path}:{k}"]
        assert row.energy == pytest.approx(result["energy"], abs=1e-10)
        np.testing.assert_allclose(row.forces, result["forces"], atol=1e-10)
        np.testing.assert_allclose(row.stress, result["stress"], atol=1e-10)
        assert row.model == MODEL and len(row.model_sha256) == 64 and "ase-mpnn" in row.package
    again = run("static", [path], db, MODEL, workers=0, progress=False, dtype="float64")
    assert again["skipped"] == 12 and again["ok"] == again["failed"] == 0
    assert run("static", [path], db, MODEL, workers=0, retry_failed=True,
               progress=False, dtype="float64")["failed"] == 1
    assert len(rows_by_id(db)) == 12
    in_float32 = run("static", [path], db, MODEL, workers=0, progress=False)
    assert in_float32["skipped"] == 0, "a float32 run reused float64 rows"


def test_inputs_need_unique_ids_and_readable_files(tmp_path):
    atoms = Atoms("Cu", cell=np.eye(3) * 3, pbc=True)
    atoms.info["input_id"] = "same"
    write(tmp_path / "dup.extxyz", [atoms, atoms])
    with pytest.raises(ASEMPNNError, match="unique"):
        read_inputs([tmp_path / "dup.extxyz"])
    with pytest.raises(ASEMPNNError, match="missing.xyz does not exist"):
        read_inputs([tmp_path / "missing.xyz"])
    (tmp_path / "junk.xyz").write_text("not a structure\n")
    frames, unreadable = read_inputs([tmp_path / "junk.xyz"])
    assert not frames and "junk.xyz" in unreadable[0].error
    assert "ValueError" in unreadable[0].error or "Error" in unreadable[0].error


@pytest.mark.slow
def test_dask_relax_matches_batched_relax_and_report(inputs, tmp_path, capsys):
    path, _ = inputs
    db = tmp_path / "relax.db"
    run_cli_isolated(["run", "relax", str(path), "--db", str(db), "--model", MODEL,
                      "--workers", "2", "--chunk-size", "3", "--fmax", "0.02",
                      "--dtype", "float64"])
    rows = rows_by_id(db)
    assert len(rows) == 12
    as_read = [frame.atoms for frame in read_inputs([path])[0]]  # extxyz rounds positions
    reference = relax_batch(as_read, MODEL, fmax=0.02, device="cpu", dtype="float64")
    for k, result in enumerate(reference):
        row = rows[f"{path}:{k}"]
        if "error" in result:
            assert row.status == "failed"
            continue
        assert row.converged and row.steps == result["steps"]
        assert row.energy == pytest.approx(result["energy"], abs=1e-8)
    assert main(["report", str(db)]) == 0
    out = capsys.readouterr().out
    assert "12 structures" in out and "failed" in out and (tmp_path / "relax.png").stat().st_size


def _worker_pids(parent: int) -> list[int]:
    import psutil

    # LocalCluster's nannies live in the client's process and spawn each worker as a child
    children = psutil.Process(parent).children(recursive=True)
    return [p.pid for p in children if "spawn_main" in " ".join(p.cmdline())]


@pytest.mark.slow
def test_killing_a_worker_loses_nothing(tmp_path):
    structures = small_cells(24, seed=6)
    path = tmp_path / "many.extxyz"
    write(path, structures)
    db = tmp_path / "kill.db"
    client = run_isolated("relax", path, db, workers=2, chunk_size=1, options={"fmax": 0.01})
    killed = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not killed and client.poll() is None:
            # a half-made database raises in ResultsDB: _rows_so_far says 0 then
            if _rows_so_far(db) >= 2:
                pids = _worker_pids(client.pid)
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.05)
    finally:
        counts = finish(client)
    assert killed, "no worker was killed: the test did not test anything"
    rows = rows_by_id(db)
    assert len(rows) == 24 and counts["ok"] == 24
    assert all(r.status == "ok" and r.converged for r in rows.values())


def _rows_so_far(db) -> int:
    """Rows in a database another process is writing; 0 while it does not exist or is
    half-made (ASE creates the tables first and writes their version row after: a reader
    in between fails inside ase.db)."""
    try:
        return len(ResultsDB(db)) if db.exists() else 0
    except (TypeError, sqlite3.Error, ASEMPNNError):  # ResultsDB names sqlite's errors
        return 0


@pytest.mark.slow
def test_killing_the_client_then_rerunning_finishes_exactly_once(tmp_path):
    structures = small_cells(30, seed=7)
    path = tmp_path / "many.extxyz"
    write(path, structures)
    db = tmp_path / "client.db"
    command = [sys.executable, "-m", "ase_mpnn.cli", "run", "relax", str(path), "--db", str(db),
               "--model", MODEL, "--workers", "0", "--chunk-size", "1", "--fmax", "0.005"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and _rows_so_far(db) < 3:
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    stored = len(ResultsDB(db))
    assert 3 <= stored < 30, "the client was not stopped mid-run"
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert f"{stored} already in" in result.stdout
    rows = rows_by_id(db)
    assert len(rows) == 30 and all(r.status == "ok" for r in rows.values())


def test_md_run_stores_final_frames(tmp_path):
    structures = small_cells(4, seed=8)  # cells 0 and 3 hold one atom: MD refuses them
    path = tmp_path / "md.extxyz"
    write(path, structures)
    db = tmp_path / "md.db"
    counts = run("md", [path], db, MODEL, workers=0, progress=False,
                 options={"steps": 10, "temperature_K": 500.0})
    rows = rows_by_id(db)
    single = [k for k, atoms in enumerate(structures) if len(atoms) < 2]
    assert counts["failed"] == len(single) and counts["ok"] == 4 - len(single)
    for k, atoms in enumerate(structures):
        row = rows[f"{path}:{k}"]
        if k in single:
            assert row.status == "failed" and "two atoms" in row.error
        else:
            assert row.status == "ok" and row.steps == 10
            assert not np.allclose(row.positions, atoms.positions, atol=1e-6)  # it moved


def _static(inputs, db, **kwargs) -> dict:
    return run("static", inputs, db, MODEL, workers=0, progress=False, dtype="float64",
               **kwargs)


def test_same_file_names_in_other_folders_are_other_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder, seed in (("b1", 1), ("b2", 2)):
        (tmp_path / folder).mkdir()
        write(tmp_path / folder / "inputs.extxyz", small_cells(3, seed=seed))
    assert _static(["b1/inputs.extxyz"], "r.db")["ok"] == 3
    again = _static(["b2/inputs.extxyz"], "r.db")
    assert again["skipped"] == 0 and again["ok"] == 3
    assert {"b1/inputs.extxyz:0", "b2/inputs.extxyz:2"} <= set(rows_by_id("r.db"))
    for folder in ("s1", "s2"):  # two POSCARs in one run
        (tmp_path / folder).mkdir()
        write(tmp_path / folder / "POSCAR", small_cells(2, seed=len(folder))[1], format="vasp")
    assert _static(["s1/POSCAR", "s2/POSCAR"], "r.db")["ok"] == 2


def test_another_task_another_model_or_new_content_is_computed(tmp_path):
    path = tmp_path / "in.extxyz"
    write(path, small_cells(3, seed=3))
    db = tmp_path / "r.db"
    assert _static([path], db)["ok"] == 3
    assert _static([path], db)["skipped"] == 3
    relaxed = run("relax", [path], db, MODEL, workers=0, progress=False, dtype="float64",
                  options={"steps": 3})
    assert relaxed["skipped"] == 0 and relaxed["ok"] == 3
    other_model = run("static", [path], db, "emt-cuni-mace", workers=0, progress=False,
                      dtype="float64")
    assert other_model["skipped"] == 0
    write(path, small_cells(3, seed=4))  # the same file name, new structures
    assert _static([path], db)["skipped"] == 0
    assert len(ResultsDB(db)) == 12


def test_unreadable_files_are_recorded_and_folders_expand(tmp_path):
    folder = tmp_path / "structures"
    (folder / "sub").mkdir(parents=True)
    write(folder / "a.extxyz", small_cells(2, seed=1))
    write(folder / "sub" / "b.cif", small_cells(2, seed=2)[1])
    (folder / "bad.cif").write_text("data_broken\n_cell_length_a 3.6\nloop_\n_atom_site\n")
    (folder / "notes.txt").write_text("not an input\n")
    db = tmp_path / "r.db"
    counts = _static([folder], db)
    assert counts == {"inputs": 4, "skipped": 0, "ok": 3, "failed": 1}
    rows = rows_by_id(db)
    bad = rows[str(folder / "bad.cif")]
    assert bad.status == "failed" and "cannot read structures from" in bad.error
    assert bad.error.split(": ", 2)[-1].strip(), "no reason given for the unreadable file"
    assert _static([folder], db)["skipped"] == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ASEMPNNError, match="holds no structure files"):
        _static([empty], db)


def test_a_database_that_cannot_be_written_fails_before_any_compute(tmp_path, monkeypatch):
    from ase_mpnn.runs import distributed

    path = tmp_path / "in.extxyz"
    write(path, small_cells(2))
    monkeypatch.setattr(distributed, "run_chunk", lambda *a, **k: pytest.fail("computed"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ASEMPNNError, match="results database"):
        _static([path], tmp_path / "file" / "r.db")
    (tmp_path / "text.db").write_text("this is no database\n" * 100)
    with pytest.raises(ASEMPNNError, match="cannot open the results database"):
        _static([path], tmp_path / "text.db")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ASEMPNNError, match="not writable"):
            _static([path], locked / "r.db")


@pytest.mark.parametrize("bad", [{"workers": -1}, {"chunk_size": 0}, {"threads": 0}])
def test_run_options_out_of_range_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        run("static", [tmp_path / "x.extxyz"], tmp_path / "r.db", MODEL, progress=False,
            **{"workers": 0, **bad})


POISON_SITECUSTOMIZE = """
# every Python process of the run under test reads this first: a process that evaluates a
# structure marked info["poison"] dies at once (as on a SIGFPE in native code), be it a
# Dask worker or the fresh process a suspect structure is run alone in
import os
import sys

if "resource_tracker" not in " ".join(sys.argv):
    from ase_mpnn.runs import distributed

    evaluate_chunk = distributed.evaluate

    def dying_evaluate(structures, *args, **kwargs):
        if any(atoms.info.get("poison") for atoms in structures):
            os._exit(1)
        return evaluate_chunk(structures, *args, **kwargs)

    distributed.evaluate = dying_evaluate
"""


@pytest.mark.slow
def test_a_structure_that_kills_its_worker_is_isolated_and_the_rest_finish(tmp_path):
    structures = small_cells(8, seed=9)
    structures[5].info["poison"] = True
    path = tmp_path / "in.extxyz"
    write(path, structures)
    (tmp_path / "poison").mkdir()
    (tmp_path / "poison" / "sitecustomize.py").write_text(POISON_SITECUSTOMIZE)
    python_path = os.pathsep.join([str(tmp_path / "poison"), *sys.path])
    counts = finish(run_isolated("static", path, tmp_path / "r.db",
                                 env={"PYTHONPATH": python_path}, workers=2, chunk_size=4,
                                 retries=0))  # fewer deaths: Dask retries it 3 times anyway
    assert counts == {"inputs": 8, "skipped": 0, "ok": 7, "failed": 1}
    rows = rows_by_id(tmp_path / "r.db")
    assert rows[f"{path}:5"].status == "failed"
    assert "worker process died on this structure" in rows[f"{path}:5"].error
    assert all(r.status == "ok" for k, r in rows.items() if not k.endswith(":5"))


@pytest.mark.parametrize("task, options, name", [
    ("md", {"steps": -10}, "steps"), ("md", {"timestep_fs": 0.0}, "timestep_fs"),
    ("md", {"temperature_K": -100.0}, "temperature_K"), ("relax", {"steps": -5}, "steps"),
    ("relax", {"fmax": 0.0}, "fmax")])
def test_task_options_out_of_range_are_refused_before_any_structure(tmp_path, task, options,
                                                                    name):
    with pytest.raises(ValueError, match=name):
        run(task, [tmp_path / "x.extxyz"], tmp_path / "r.db", MODEL, workers=0,
            progress=False, options=options)
    assert not (tmp_path / "r.db").exists()
