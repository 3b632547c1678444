"""The reference method that labels the selected frames, and the store of its results.

``reference`` names an ASE calculator: "emt" (ASE's EMT), "xtb" (GFN2-xTB through tblite)
or "module:Class" (any importable ASE calculator class, created with ``reference_kwargs``).
Every result, and every failure, is appended to the round's files at once and keyed by a
hash of the frame (``files.frame_hash``): a run killed and resumed never asks the reference
twice for the same frame.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from tqdm import tqdm

from ...errors import exception_reason
from .files import append_frame, append_record, read_frames_repaired, read_records

LABELLED_FILE = "labelled.extxyz"  # a round's new training frames
FAILURES_FILE = "failures.jsonl"  # a round's frames the reference failed on
#: the label keys of mace-torch (``ase_mpnn.training.samples``)
DEFAULT_KEYS = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress",
                "config_type": "config_type"}


def _tblite(**kwargs: Any) -> Calculator:
    from tblite.ase import TBLite

    # accuracy 0.1: a tighter SCF than tblite's default, as in ase_mpnn.training.xtb_data
    return TBLite(**{"method": "GFN2-xTB", "accuracy": 0.1, "verbosity": 0, **kwargs})


def resolve_reference(name: str) -> Callable[..., Calculator]:
    """The calculator class (or factory) ``name`` stands for; ValueError naming it when it
    does not import."""
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT
    if name == "xtb":
        try:
            import tblite.ase  # noqa: F401
        except ImportError as exc:
            raise ValueError("reference 'xtb' needs tblite: pip install 'ase-mpnn[xtb]' "
                             f"({exception_reason(exc)})") from None
        return _tblite
    if not isinstance(name, str) or name.count(":") != 1 or not all(name.split(":")):
        raise ValueError(f"reference = {name!r}: use 'emt', 'xtb' or 'module:Class' (an ASE "
                         "calculator class, e.g. 'ase.calculators.lj:LennardJones')")
    module_name, class_name = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the same config error
        raise ValueError(f"reference {name!r}: module {module_name!r} does not import "
                         f"({exception_reason(exc)})") from None
    factory = getattr(module, class_name, None)
    if not callable(factory):
        raise ValueError(f"reference {name!r}: module {module_name!r} has no class "
                         f"{class_name!r}")
    return factory


def make_reference(name: str, kwargs: dict[str, Any]) -> Calculator:
    """A fresh reference calculator; ValueError naming it when it cannot be created."""
    factory = resolve_reference(name)
    try:
        return factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a bad kwarg of any calculator
        raise ValueError(f"reference {name!r} with reference_kwargs {kwargs}: "
                         f"{exception_reason(exc)}") from None


def label_frame(atoms: Atoms, calc: Calculator, keys: dict[str, str] = DEFAULT_KEYS) -> Atoms:
    """A bare copy of ``atoms`` with the reference energy (eV, info), forces (n, 3) eV/A
    (arrays) and, for 3-D periodic cells, stress (6 Voigt, eV/A^3, info) under ``keys``.
    ValueError when a result is not finite."""
    work = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    work.calc = calc
    results = {"energy": np.asarray(work.get_potential_energy()),
               "forces": np.asarray(work.get_forces())}
    if work.pbc.all() and "stress" in getattr(calc, "implemented_properties", ()):
        results["stress"] = np.asarray(work.get_stress())
    bad = [name for name, value in results.items() if not np.all(np.isfinite(value))]
    if bad:
        raise ValueError(f"the reference returned non-finite {', '.join(bad)}")
    labelled = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    labelled.info[keys["energy"]] = float(results["energy"])
    labelled.arrays[keys["forces"]] = results["forces"]
    if "stress" in results:
        labelled.info[keys["stress"]] = results["stress"]
    return labelled


class LabelStore:
    """Reference results and failures of every round of a run, by frame hash.

    On disk: ``round_NNN/labelled.extxyz`` (the labelled frames; ``al_hash`` in their info)
    and ``round_NNN/failures.jsonl`` (one record per failure: hash, trajectory, error).
    """

    def __init__(self, round_dirs: Sequence[Path]):
        self.labelled: dict[str, int] = {}  # hash -> round
        self.failures: dict[str, dict[str, Any]] = {}
        for directory in round_dirs:
            for atoms in read_frames_repaired(directory / LABELLED_FILE):
                self.labelled[atoms.info["al_hash"]] = int(atoms.info["al_round"])
            for record in read_records(directory / FAILURES_FILE):
                self.failures[record["hash"]] = record

    def known(self, key: str) -> bool:
        """True when the reference has been asked about this frame (answer or failure)."""
        return key in self.labelled or key in self.failures

    def calls(self, round_index: int) -> tuple[int, int]:
        """(frames labelled, failures) in round ``round_index``."""
        return (sum(r == round_index for r in self.labelled.values()),
                sum(f["round"] == round_index for f in self.failures.values()))

    def add_label(self, directory: Path, labelled: Atoms) -> None:
        append_frame(directory / LABELLED_FILE, labelled)
        self.labelled[labelled.info["al_hash"]] = int(labelled.info["al_round"])

    def add_failure(self, directory: Path, record: dict[str, Any]) -> None:
        append_record(directory / FAILURES_FILE, record)
        self.failures[record["hash"]] = record


def label_round(frames: Sequence[Atoms], directory: Path, round_index: int, reference: str,
                reference_kwargs: dict[str, Any], store: LabelStore,
                keys: dict[str, str] = DEFAULT_KEYS, progress: bool = True) -> None:
    """Label every frame of ``frames`` the store does not know yet, appending each result
    (config_type ``active_round_N``) or failure at once. A failure (an exception or a
    non-finite result) is recorded, printed, and the next frame gets a fresh calculator."""
    calc = None
    for atoms in tqdm(frames, desc=f"round {round_index}: reference", unit="frame",
                      disable=not progress):
        key = atoms.info["al_hash"]
        if store.known(key):
            continue
        calc = calc or make_reference(reference, reference_kwargs)
        try:
            labelled = label_frame(atoms, calc, keys)
        except Exception as exc:  # noqa: BLE001 - the reference's own failure of any kind
            record = {"hash": key, "round": round_index, "trajectory": atoms.info["al_traj"],
                      "sample": int(atoms.info["al_sample"]), "error": exception_reason(exc)}
            store.add_failure(directory, record)
            print(f"round {round_index}: the reference failed on {record['trajectory']} "
                  f"sample {record['sample']}: {record['error']}")
            calc = None
            continue
        labelled.info[keys["config_type"]] = f"active_round_{round_index}"
        for name in ("al_hash", "al_traj", "al_sample", "al_std"):
            labelled.info[name] = atoms.info[name]
        labelled.info["al_round"] = round_index
        store.add_label(directory, labelled)
