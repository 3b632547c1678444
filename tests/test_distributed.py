"""Distributed runs into a results database: nothing lost, nothing twice, failures recorded."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
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


def test_static_run_stores_everything_once_and_rerun_skips(inputs, tmp_path):
    path, _ = inputs
    db = tmp_path / "static.db"
    counts = run("static", [path], db, MODEL, workers=0, chunk_size=5, progress=False,
                 dtype="float64")
    assert counts == {"inputs": 12, "skipped": 0, "ok": 11, "failed": 1}
    rows = rows_by_id(db)
    assert rows["inputs.extxyz:2"].status == "failed" and "NaN" in rows["inputs.extxyz:2"].error
    as_read = [atoms for _, atoms in read_inputs([path])]  # extxyz rounds positions
    expected = evaluate(as_read, MODEL, device="cpu", dtype="float64", errors="store")
    for k, result in enumerate(expected):
        if "error" in result:
            continue
        row = rows[f"inputs.extxyz:{k}"]
        assert row.energy == pytest.approx(result["energy"], abs=1e-10)
        np.testing.assert_allclose(row.forces, result["forces"], atol=1e-10)
        np.testing.assert_allclose(row.stress, result["stress"], atol=1e-10)
        assert row.model == MODEL and len(row.model_sha256) == 64 and "ase-mpnn" in row.package
    again = run("static", [path], db, MODEL, workers=0, progress=False)
    assert again["skipped"] == 12 and again["ok"] == again["failed"] == 0
    assert run("static", [path], db, MODEL, workers=0, retry_failed=True,
               progress=False)["failed"] == 1
    assert len(rows_by_id(db)) == 12


def test_inputs_need_unique_ids_and_readable_files(tmp_path):
    atoms = Atoms("Cu", cell=np.eye(3) * 3, pbc=True)
    atoms.info["input_id"] = "same"
    write(tmp_path / "dup.extxyz", [atoms, atoms])
    with pytest.raises(ASEMPNNError, match="unique"):
        read_inputs([tmp_path / "dup.extxyz"])
    (tmp_path / "junk.xyz").write_text("not a structure\n")
    with pytest.raises(ASEMPNNError, match="junk.xyz"):
        read_inputs([tmp_path / "junk.xyz"])


@pytest.mark.slow
def test_dask_relax_matches_batched_relax_and_report(inputs, tmp_path, capsys):
    path, _ = inputs
    db = tmp_path / "relax.db"
    assert main(["run", "relax", str(path), "--db", str(db), "--model", MODEL,
                 "--workers", "2", "--chunk-size", "3", "--fmax", "0.02",
                 "--dtype", "float64"]) == 0
    rows = rows_by_id(db)
    assert len(rows) == 12
    as_read = [atoms for _, atoms in read_inputs([path])]  # extxyz rounds positions
    reference = relax_batch(as_read, MODEL, fmax=0.02, device="cpu", dtype="float64")
    for k, result in enumerate(reference):
        row = rows[f"inputs.extxyz:{k}"]
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

    # LocalCluster's nannies live in this process and spawn each worker as a child
    children = psutil.Process(parent).children(recursive=True)
    return [p.pid for p in children if "spawn_main" in " ".join(p.cmdline())]


@pytest.mark.slow
def test_killing_a_worker_loses_nothing(tmp_path):
    structures = small_cells(24, seed=6)
    path = tmp_path / "many.extxyz"
    write(path, structures)
    db = tmp_path / "kill.db"
    killed = []

    def kill_one_worker_once_results_arrive():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if db.exists() and len(ResultsDB(db)) >= 2:
                pids = _worker_pids(os.getpid())
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_once_results_arrive, daemon=True)
    killer.start()
    counts = run("relax", [path], db, MODEL, workers=2, chunk_size=1, progress=False,
                 options={"fmax": 0.01})
    killer.join()
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
    except (TypeError, sqlite3.Error):
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
        row = rows[f"md.extxyz:{k}"]
        if k in single:
            assert row.status == "failed" and "two atoms" in row.error
        else:
            assert row.status == "ok" and row.steps == 10
            assert not np.allclose(row.positions, atoms.positions, atol=1e-6)  # it moved
