"""Every sub-command, every option, invalid values: a non-zero exit with one line on stderr,
no traceback, no hang. The options are read from the parser itself, so an option added
later is fuzzed without editing this file."""

from __future__ import annotations

import argparse
import signal
from contextlib import contextmanager

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import write

from ase_mpnn.cli import build_parser, main
from ase_mpnn.cli import options as cli_options

MODEL = "emt-cuni-schnet"

#: positional arguments (and required options) that make each command's line complete
BASE = {
    "demo": [], "info": [MODEL], "models": [], "new": ["SchNet", "--species", "Cu", "-o", "m.mpnn"],
    "train": ["--data", "d.xyz"], "eval": [MODEL, "d.xyz"], "make-data": ["-o", "d.xyz"],
    "check-data": ["d.xyz"], "relax": ["cu.cif", "--model", MODEL],
    "md": ["cu.cif", "--model", MODEL], "eos": ["cu.cif", "--model", MODEL],
    "phonons": ["cu.cif", "--model", MODEL], "run": ["static", "cu.cif", "--db", "r.db",
                                                     "--model", MODEL],
    "vibrations": ["cu.cif", "--model", MODEL], "report": ["r.db"],
    "calibrate": [MODEL, "d.xyz", "-o", "c.mpnn"], "learn": ["l.yaml"],
    "serve": ["--model", MODEL, "--structure", "cu.cif", "--unix", "fuzz"],
    "export-lammps": [MODEL, "-o", "m.pt"], "compile": [MODEL, "-o", "m.pt2"],
}
#: values no number or count option accepts
NOT_NUMBERS = ["abc", "nan", "inf", "-inf", "1e999", "", "0x10", "1,5"]
#: number options for which a negative value is meaningful
NEGATIVE_OK = {"--pressure"}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def typed_options() -> list[tuple[str, argparse.Action]]:
    """(command, option) for every option whose value is checked by a type or choices."""
    found = []
    for command, sub in subcommands().items():
        for action in sub._actions:
            if action.option_strings and (action.type is not None or action.choices):
                found.append((command, action))
    return found


def bad_values(action: argparse.Action) -> list[str]:
    if action.choices:
        return ["bogus", ""]
    name = getattr(action.type, "__name__", "")
    if name == "integer":
        return [*NOT_NUMBERS, "1.5", "-1"]
    if name == "number":
        return NOT_NUMBERS + ([] if action.option_strings[-1] in NEGATIVE_OK else ["-1"])
    if name == "device":
        return ["gpu", "cuda:x", "tpu"]
    if name == "json_object":
        return ["{", "[1, 2]", "3"]
    if name == "inet":
        return ["localhost", "host:0", ":31415", "host:port"]
    return []


@contextmanager
def time_limit(seconds: int):
    def stop(signum, frame):
        raise TimeoutError(f"the command ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv: list[str], capsys, seconds: int = 60) -> tuple[int, str]:
    """Exit status and stderr of ``ase-mpnn argv`` run here, within ``seconds``."""
    capsys.readouterr()
    with time_limit(seconds):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
    return status, capsys.readouterr().err


def assert_one_line_error(status: int, err: str, argv: list[str]) -> None:
    assert status != 0, f"{argv}: exit 0"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{argv}: stderr is not one line:\n{err}"
    assert "Traceback" not in err and "error" in lines[0], f"{argv}: {err}"


def test_every_typed_option_is_found():
    names = {(c, a.option_strings[-1]) for c, a in typed_options()}
    assert {("md", "--log-interval"), ("md", "--temperature"), ("eval", "--batch-size"),
            ("run", "--workers"), ("run", "--ensemble"), ("phonons", "--supercell"),
            ("eos", "--points"), ("relax", "--device")} <= names
    untyped = [(c, a.option_strings[-1]) for c, sub in subcommands().items()
               for a in sub._actions if a.option_strings and a.nargs != 0 and a.type is None
               and not a.choices and a.dest not in ("help",)]
    # the rest take free text: files, names, keys, element symbols
    for command, option in untyped:
        assert option in {"--model", "--out", "--output", "-o", "--db", "--scheduler",
                          "--thermostat", "--plot", "--data", "--architecture", "--init",
                          "--set", "--species", "--elements", "--molecules", "--energy-key",
                          "--forces-key", "--stress-key", "--virials-key",
                          "--config-type-key", "--structure", "--unix"}, (command, option)


@pytest.mark.parametrize("command, action", typed_options(),
                         ids=lambda x: x if isinstance(x, str) else x.option_strings[-1])
def test_invalid_values_of_every_option_end_in_one_line(command, action, capsys, tmp_path,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value in bad_values(action):
        values = [value] * (action.nargs if isinstance(action.nargs, int) else 1)
        argv = [command, *BASE[command], action.option_strings[-1], *values]
        status, err = run_cli(argv, capsys, seconds=20)
        assert status == 2, f"{argv}: exit {status}, stderr {err!r}"
        assert_one_line_error(status, err, argv)


@pytest.fixture()
def files(tmp_path, monkeypatch):
    """A Cu cell, a 1-atom cell, a molecule, a corrupt CIF, a folder and a foreign ase.db."""
    monkeypatch.chdir(tmp_path)
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    cell.rattle(0.02, seed=1)
    write("cu.cif", cell)
    write("one.cif", bulk("Cu", "fcc", a=3.6))
    write("h2o.xyz", molecule("H2O"))
    write("cu_molecule.xyz", Atoms("Cu3", positions=np.eye(3) * 2.3))
    (tmp_path / "bad.cif").write_text("data_x\n_cell_length_a 3.6\nloop_\n_atom_site_label\n")
    (tmp_path / "folder").mkdir()
    import ase.db

    with ase.db.connect("foreign.db") as db:
        db.write(cell)
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["relax", "bad.cif", "--model", MODEL], "cannot read a structure from bad.cif: "),
    (["relax", "folder", "--model", MODEL], "is a folder"),
    (["eval", MODEL, "bad.cif"], "bad.cif holds no structures"),
    (["eval", MODEL, "folder"], "is a folder"),
    (["report", "foreign.db"], "not a results database"),
    (["report", "missing.db"], "no results database"),
    (["phonons", "cu_molecule.xyz", "--model", MODEL], "periodic in all three"),
    (["eos", "cu_molecule.xyz", "--model", MODEL], "periodic in all three"),
    (["md", "h2o.xyz", "--model", MODEL], "H, O"),
    (["train", "--data", "d.xyz", "--set", "lr=abc"], "lr = 'abc'"),
    (["train", "--data", "d.xyz", "--set", "batch_size=0"], "batch_size = 0"),
    (["train", "--data", "d.xyz", "--set", "epochs=2.5"], "epochs = 2.5"),
    (["train", "--data", "d.xyz", "--set", "bogus=1"], "unknown training option"),
    (["train", "--data", "missing.xyz", "--epochs", "1"], "missing.xyz does not exist"),
    (["run", "static", "cu.cif", "--db", "cu.cif/r.db", "--model", MODEL], "results database"),
    (["run", "static", "missing.cif", "--db", "r.db", "--model", MODEL], "does not exist"),
    (["info", "missing.mpnn"], "no model file"),
    (["new", "NoSuchNet", "--species", "Cu", "-o", "m.mpnn"], "NoSuchNet"),
])
def test_bad_inputs_end_in_one_line_naming_the_problem(files, capsys, argv, message):
    status, err = run_cli(argv, capsys)
    assert_one_line_error(status, err, argv)
    assert message in err, err
    if "cannot read" in message:  # the reason follows the colon
        assert err.strip().split(message, 1)[1].strip()


def test_phonons_of_a_one_atom_cell_without_a_supercell(files, capsys):
    argv = ["phonons", "one.cif", "--model", MODEL, "--supercell", "1", "1", "1"]
    status, err = run_cli(argv, capsys, seconds=120)
    assert_one_line_error(status, err, argv)
    assert "holds a single atom" in err  # refused up front, not deep inside phonopy


def test_the_option_types_reject_and_accept_what_they_say():
    assert cli_options.integer(1)("3") == 3
    assert cli_options.number(above=0)("1e-3") == 1e-3
    with pytest.raises(argparse.ArgumentTypeError, match="greater than 0"):
        cli_options.number(above=0)("0")
    with pytest.raises(argparse.ArgumentTypeError, match="not a finite number"):
        cli_options.number()("nan")
    assert cli_options.device("cpu") == "cpu"
