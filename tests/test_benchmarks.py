"""benchmarks/run.py judges its targets right, and its worker measures a real call."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import run  # noqa: E402  (benchmarks/run.py)


def stage(atoms: int, outside: float) -> dict:
    return {"kind": "stages", "architecture": "schnet", "dtype": "float32", "atoms": atoms,
            "outside_share": outside}


def test_targets_met_and_missed():
    good = [stage(108, 0.05), stage(1372, 0.2),  # only 108 atoms is judged
            {"kind": "growth", "architecture": "mace", "dtype": "float64", "small": 1372,
             "large": 10976, "per_atom_growth": 1.2},
            {"kind": "md", "architecture": "schnet", "dtype": "float32", "atoms": 108,
             "neighbor_share": 0.019},
            {"kind": "scale", "architecture": "emt-cuni-schnet", "atoms": 108000,
             "peak_rss_mb": 3800.0}]
    assert run.check_targets(good) == []
    bad = [stage(108, 0.11),
           {**good[2], "per_atom_growth": 1.31},
           {**good[3], "neighbor_share": 0.021},
           {**good[4], "peak_rss_mb": 25 * 1024.0},
           {"kind": "error", "command": "mace float64", "returncode": 1}]
    missed = run.check_targets(bad)
    assert len(missed) == 6  # 25 GiB is over 24 GiB and a regression from 3.7
    assert "11.0 % outside" in missed[0] and "1.31x" in " ".join(missed)


def test_scale_memory_must_not_regress():
    """A 108,000-atom peak above its model's figure by more than the run-to-run spread is a
    missed target; models without a figure are judged only against 24 GiB."""
    def scale(model, gib):
        return {"kind": "scale", "architecture": model, "atoms": 108000,
                "peak_rss_mb": gib * 1024}

    assert run.check_targets([scale("nequip", 5.1), scale("emt-cuni-mace", 4.9)]) == []
    missed = run.check_targets([scale("nequip", 5.2), scale("my-model", 9.0)])
    assert len(missed) == 1 and "nequip" in missed[0] and "regression from 4.9" in missed[0]


def test_flop_limit_target_for_schnet_at_108_atoms():
    """0.3 GFLOP at 154 GFLOP/s is 1.95 ms: 5.8 ms meets 3x of it, 6.0 ms does not; other
    sizes and architectures are not judged."""
    row = {**stage(108, 0.05), "gflop": 0.3, "gflops_per_s": 60.0}
    assert run.flop_limit_ms(row) == pytest.approx(1e3 * 0.3 / 154.0)
    assert run.check_targets([{**row, "call": 5.8}]) == []
    missed = run.check_targets([{**row, "call": 6.0}])
    assert len(missed) == 1 and "3.1x the matmul limit 1.95 ms" in missed[0]
    assert run.check_targets([{**row, "call": 60.0, "atoms": 1372},
                              {**row, "call": 60.0, "architecture": "mace"}]) == []
    line = run.stage_line({**row, "call": 6.0, "edges": 1, "neighbor_list": 1, "graph": 1,
                           "forward": 1, "backward": 1, "to_numpy": 1, "us_per_atom": 1,
                           "call_skin": 1, "outside_share_skin": 0, "peak_rss_mb": 1})
    assert line.split()[-3:] == ["0.300", "60.0", "3.1"]  # GFLOP, GFLOP/s, x limit


@pytest.mark.slow
def test_worker_times_every_stage_of_a_real_call():
    command = [sys.executable, str(BENCHMARKS / "_stages.py"), "schnet", "float32",
               "--sizes", "32", "--md", "32", "--budget", "0.05", "--threads", "1"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    stages, md = rows
    assert stages["kind"] == "stages" and stages["atoms"] == 32 and stages["edges"] > 0
    for key in ("neighbor_list", "neighbor_list_matscipy", "neighbor_list_vesin", "graph",
                "forward", "forward_backward", "to_numpy", "call", "call_skin", "gflop",
                "gflops_per_s"):
        assert stages[key] > 0, key
    assert stages["backward"] >= 0  # fwd+bwd minus fwd, timed separately
    assert 0 <= stages["outside_share"] < 1 and stages["peak_rss_mb"] > 50
    assert stages["forward_backward"] < 10 * stages["call"]
    assert md["kind"] == "md" and md["steps"] >= 5 and md["steps_per_s"] > 0


def test_kernel_benchmark_prints_both_paths(native_kernels):
    """benchmarks/kernels.py times the native and the torch path of a real SchNet call."""
    import os

    from ase_mpnn import native

    command = [sys.executable, str(BENCHMARKS / "kernels.py"), "--sizes", "32", "--calls",
               "2", "--threads", "1"]
    cache = native._loaded["path"].parents[1]  # the session's cache folder hides the user's
    env = {**os.environ, "ASE_MPNN_CACHE": str(cache)}
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode in (0, 1), out.stderr  # 1: a noisy 2-call row below its target
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("    32")]
    assert [row[1] for row in rows] == ["float32", "float64"]
    assert all(float(value) > 0 for row in rows for value in row[2:])
