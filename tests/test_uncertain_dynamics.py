"""Dynamics that know when they extrapolate: a committee's force spread logged by md, relax
and relax_batch, and a threshold on it that stops or flags a run (and the CLI's flags)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ase.io import read, write

from ase_mpnn import MPNNCalculator, save_committee
from ase_mpnn.batch import relax_batch
from ase_mpnn.cli import main
from ase_mpnn.simulate import SimulationError, md, relax
from ase_mpnn.simulate.molecular_dynamics import check_md_options

from .conftest import cu_fcc, make_potential

STEPS = 20


@pytest.fixture(scope="module")
def members():
    return [make_potential(seed=k) for k in range(3)]


@pytest.fixture()
def committee(members) -> MPNNCalculator:
    return MPNNCalculator(members, device="cpu", dtype="float64")


@pytest.fixture(scope="module")
def cell():
    return cu_fcc(2, nickel_every=3, rattle=0.05)


def _run(calc, cell, **kwargs):
    options = {"ensemble": "nvt", "thermostat": "langevin", "temperature_K": 600.0,
               "steps": STEPS, "log_interval": 1, "seed": 3, "progress": False, **kwargs}
    return md(cell, calc, **options)


@pytest.fixture(scope="module")
def reference(members, cell):
    """An unguarded run logging every step: its final Atoms and summary."""
    return _run(MPNNCalculator(members, device="cpu", dtype="float64"), cell)


def _forces_std(members, atoms) -> np.ndarray:
    """The committee's per-atom force std (n_atoms,) eV/A of ``atoms``, evaluated afresh."""
    atoms = atoms.copy()
    atoms.calc = MPNNCalculator(members, device="cpu", dtype="float64")
    return atoms.calc.get_property("forces_std", atoms)


def _csv(path) -> dict[str, np.ndarray]:
    table = np.genfromtxt(path, delimiter=",", names=True)
    return {name: table[name] for name in table.dtype.names}


@pytest.mark.parametrize("suffix", ["traj", "extxyz"])
def test_md_logs_the_largest_force_std_of_every_frame(members, committee, cell, tmp_path,
                                                      suffix):
    path = tmp_path / f"md.{suffix}"
    final, summary = _run(committee, cell, steps=9, log_interval=3, trajectory=path,
                          log_file=tmp_path / "log.csv")
    frames, log, table = read(path, ":"), summary["log"], _csv(tmp_path / "log.csv")
    assert len(frames) == len(log) == 4
    assert "uncertain" not in log[0] and "uncertain_steps" not in summary  # no threshold
    np.testing.assert_allclose(table["max_force_std"], [r["max_force_std"] for r in log],
                               rtol=1e-9)
    assert table["uncertain_atom"].tolist() == [r["uncertain_atom"] for r in log]
    for frame, row in zip(frames, log):
        std = _forces_std(members, frame)  # extxyz positions are rounded to 1e-8 A
        per_atom = frame.info["forces_std"] if suffix == "traj" else frame.arrays["forces_std"]
        np.testing.assert_allclose(per_atom, std, rtol=1e-6)
        assert frame.info["max_force_std"] == row["max_force_std"]
        assert row["max_force_std"] == pytest.approx(std.max(), rel=1e-6)
        assert frame.info["uncertain_atom"] == row["uncertain_atom"] == int(np.argmax(std))
    assert log[-1]["max_force_std"] == committee.results["forces_std"].max()
    assert final.info["max_force_std"] == log[-1]["max_force_std"]


def test_md_stops_at_the_start_when_every_atom_is_uncertain(members, committee, cell,
                                                            tmp_path):
    std = _forces_std(members, cell)
    atom = int(np.argmax(std))
    element = cell.get_chemical_symbols()[atom]
    path = tmp_path / "md.extxyz"
    with pytest.raises(SimulationError, match=rf"^step 0: atom {atom} \({element}\) has a "
                                              r"force std of .* above max_force_std"):
        _run(committee, cell, max_force_std=0.5 * std.min(), trajectory=path,
             log_file=tmp_path / "log.csv")
    (frame,) = read(path, ":")
    assert frame.info["uncertain"] and frame.info["uncertain_atom"] == atom
    assert frame.info["max_force_std"] == pytest.approx(std.max(), rel=1e-6)
    assert _csv(tmp_path / "log.csv")["uncertain"].tolist() == 1.0


def test_md_stops_at_an_unlogged_step_and_writes_that_frame(reference, committee, cell,
                                                            tmp_path):
    series = [row["max_force_std"] for row in reference[1]["log"]]
    # the first step from the middle on that sets a new running maximum: a threshold
    # between it and the maximum before it is first exceeded there
    step = next(k for k in range(STEPS // 2, STEPS + 1) if series[k] > max(series[:k]))
    threshold = (max(series[:step]) + series[step]) / 2
    path, interval = tmp_path / "md.extxyz", 4
    with pytest.raises(SimulationError, match=rf"^step {step}: atom "):
        _run(committee, cell, max_force_std=threshold, log_interval=interval, trajectory=path)
    frames = read(path, ":")  # the logged steps before it, then the offending step
    assert len(frames) == len(range(0, step, interval)) + 1
    assert not any(frame.info["uncertain"] for frame in frames[:-1])
    assert frames[-1].info["uncertain"]
    assert frames[-1].info["max_force_std"] == pytest.approx(series[step], rel=1e-12)


def test_md_flag_runs_on_and_marks_every_uncertain_frame(reference, committee, cell, tmp_path):
    path = tmp_path / "md.traj"
    final, summary = _run(committee, cell, max_force_std=1e-6, on_uncertain="flag",
                          log_interval=5, trajectory=path, log_file=tmp_path / "log.csv")
    # every configuration checked, the start (step 0) and after each of the STEPS steps
    assert summary["uncertain_steps"] == STEPS + 1
    assert summary["first_uncertain_step"] == 0
    assert all(frame.info["uncertain"] for frame in read(path, ":"))
    assert all(row["uncertain"] for row in summary["log"])
    assert _csv(tmp_path / "log.csv")["uncertain"].tolist() == [1.0] * 5
    assert final.info["uncertain"]
    np.testing.assert_array_equal(final.positions, reference[0].positions)  # same dynamics


def test_a_threshold_never_reached_changes_nothing(reference, committee, cell):
    final, summary = _run(committee, cell, max_force_std=1e3)
    np.testing.assert_array_equal(final.positions, reference[0].positions)
    assert summary["uncertain_steps"] == 0 and summary["first_uncertain_step"] is None
    assert [r["max_force_std"] for r in summary["log"]] == [
        r["max_force_std"] for r in reference[1]["log"]]


def test_a_single_model_cannot_guard_a_run(members, cell):
    single = MPNNCalculator(members[0], device="cpu", dtype="float64")
    with pytest.raises(ValueError, match="committee"):
        _run(single, cell, max_force_std=0.1)
    with pytest.raises(ValueError, match="committee"):
        relax(cell, single, max_force_std=0.1)
    _, summary = _run(single, cell, steps=2)  # without a threshold: no std columns
    assert "max_force_std" not in summary["log"][0]


@pytest.mark.parametrize("options,name", [
    ({"max_force_std": 0}, "max_force_std"), ({"max_force_std": -1.0}, "max_force_std"),
    ({"max_force_std": math.nan}, "max_force_std"), ({"max_force_std": math.inf}, "max_force_std"),
    ({"max_force_std": "0.1"}, "max_force_std"), ({"max_force_std": True}, "max_force_std"),
    ({"on_uncertain": "maybe"}, "on_uncertain"),
    ({"max_force_std": 0.1, "on_uncertain": None}, "on_uncertain"),
])
def test_bad_uncertainty_options_are_refused_naming_them(committee, cell, options, name):
    with pytest.raises(ValueError, match=name):
        check_md_options(300.0, 1.0, 10, 1, **options)
    with pytest.raises(ValueError, match=name):
        _run(committee, cell, **options)
    with pytest.raises(ValueError, match=name):
        relax(cell, committee, **options)


def test_relax_records_the_force_std_and_can_be_guarded(members, committee, cell, tmp_path):
    path = tmp_path / "relax.traj"
    relaxed, summary = relax(cell, committee, steps=4, trajectory=path)
    std = committee.results["forces_std"]
    assert summary["max_force_std"] == relaxed.info["max_force_std"] == std.max()
    assert summary["uncertain_atom"] == int(np.argmax(std))
    frames = read(path, ":")
    assert len(frames) == summary["steps"] + 1
    for frame in frames[:2]:
        assert frame.info["max_force_std"] == pytest.approx(
            _forces_std(members, frame).max(), rel=1e-9)
    _, flagged = relax(cell, committee, steps=4, max_force_std=1e-6, on_uncertain="flag")
    assert flagged["uncertain_steps"] == flagged["steps"] + 1
    with pytest.raises(SimulationError, match="^step 0: atom"):
        relax(cell, committee, steps=4, max_force_std=1e-6, trajectory=path)
    assert len(read(path, ":")) == 1  # the offending frame


def test_relax_batch_records_the_force_std_of_each_structure(members, cell):
    structures = [cell, cu_fcc(2, nickel_every=2, rattle=0.05, seed=4)]
    outcomes = relax_batch(structures, members, steps=3, fmax=1e-4, device="cpu",
                           dtype="float64")
    for atoms, outcome in zip(structures, outcomes):
        assert "error" not in outcome
        assert outcome["max_force_std"] == outcome["forces_std"].max()
        assert outcome["atoms"].info["max_force_std"] == outcome["max_force_std"]
        assert outcome["atoms"].info["uncertain_atom"] == int(np.argmax(outcome["forces_std"]))
        path = outcome["max_force_std_per_step"]
        assert len(path) == outcome["steps"] + 1 and path[-1] == outcome["max_force_std"]
        assert path[0] == pytest.approx(_forces_std(members, atoms).max(), rel=1e-9)
    single = relax_batch(structures[:1], members[0], steps=1, device="cpu", dtype="float64")
    assert "max_force_std" not in single[0]


def test_cli_md_stops_on_an_uncertain_committee_with_one_line(members, cell, tmp_path, capsys):
    model = save_committee(members, tmp_path / "committee.mpnn")
    write(tmp_path / "cell.extxyz", cell)
    common = ["md", str(tmp_path / "cell.extxyz"), "--model", str(model), "--dtype", "float64",
              "--device", "cpu", "--steps", "4", "--log-interval", "2"]
    out = tmp_path / "stopped"
    assert main([*common, "--max-uncertainty", "1e-6", "--out", str(out)]) == 2
    error = capsys.readouterr().err.split("\n")[-2]  # the line after tqdm's progress bar
    assert error.startswith("ase-mpnn md: error: step 0: atom ") and "max_force_std" in error
    assert len(read(out / "md.extxyz", ":")) == 1
    out = tmp_path / "flagged"
    assert main([*common, "--max-uncertainty", "1e-6", "--on-uncertain", "flag",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertain_steps"] == 5 and summary["first_uncertain_step"] == 0
    assert "max_force_std" in (out / "md_log.csv").read_text().splitlines()[0]
    for bad in (["--max-uncertainty", "0"], ["--on-uncertain", "maybe"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, *bad, "--out", str(tmp_path / "bad")])
        assert exit_info.value.code == 2
