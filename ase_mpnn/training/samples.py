"""Training data: labelled structures from ASE-readable files, their checks, splits and statistics.

Files: one or several, any format ``ase.io.read`` reads (extxyz, ase.db, .traj, ...); the
``key_value_pairs`` and ``data`` of an ase.db row are looked up like extxyz info/arrays.
Each frame's ``source`` is ``"path:index"``.

Labels follow mace-torch's extxyz conventions; the keys are configurable (``keys``):

- ``REF_energy`` (``atoms.info``): total energy, eV;
- ``REF_forces`` (``atoms.arrays``): (n_atoms, 3), eV/A;
- ``REF_stress`` (``atoms.info``): 6 (Voigt xx yy zz yz xz xy), 9 or 3x3 values, eV/A^3,
  ASE's sign (tensile positive, the derivative of the energy by strain over the volume);
- ``REF_virials`` (``atoms.info``): 6, 9 or 3x3 values, eV, converted to
  stress = -virials / volume; a frame with both uses the stress;
- ``config_type`` (``atoms.info``): a string, "Default" when absent;
- ``charge`` / ``spin`` (``atoms.info``, aliases ``total_charge``, ``total_spin``,
  ``multiplicity``): the frame's total charge (e) and spin multiplicity 2S + 1, inputs of
  models with ``global_inputs`` (``ase_mpnn.graph.charge_spin``); 0 and 1 when absent.

A key that is absent falls back to the results a calculator stored (extxyz ``energy=``,
``forces``, ``stress``; ase.db rows). Energy, forces and stress are each optional per frame,
but a frame needs at least one usable label. Stress (and virials) are used only for 3-D
periodic frames; on slabs, wires and molecules they are ignored (``check-data`` counts them).

Every label is checked when read: a non-finite value, a wrong shape, NaN/inf positions or a
degenerate periodic cell raise ``LabelError`` (a ``DataError``) naming ``file:index`` and
the key. Frames with config_type "IsolatedAtom" (one atom, any pbc) give the isolated-atom
energy E0 of their element (``split_isolated_atoms``), as mace-torch's E0s do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.io import read
from ase.stress import voigt_6_to_full_3x3_stress

from ..errors import ASEMPNNError, InvalidStructureError, exception_reason
from ..graph import collate, make_structure
from ..graph.charge_spin import GLOBAL_INPUTS, GlobalState, read_global_state
from ..graph.neighbors import neighbor_list
from ..graph.structure import check_geometry

DEFAULT_KEYS = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress",
                "virials": "REF_virials", "config_type": "config_type"}
#: the config_type of frames that give an element's isolated-atom energy E0
ISOLATED_ATOM = "IsolatedAtom"
DEFAULT_CONFIG_TYPE = "Default"
#: number of periodic directions -> the kind of system
PERIODICITY = {3: "3-D bulk", 2: "2-D slab", 1: "1-D wire", 0: "0-D molecule"}


class DataError(ASEMPNNError, ValueError):
    """A data file cannot be read or a frame lacks a label or has one of the wrong shape."""


class LabelError(DataError):
    """A frame's label or geometry is unusable: NaN/inf, wrong shape, degenerate cell, no
    label at all. The message names ``file:index`` and the key."""


@dataclasses.dataclass
class Sample:
    """One labelled structure.

    Attributes:
        atoms: the structure (numbers, positions, cell, pbc only).
        energy: total energy, eV, or None.
        forces: (n_atoms, 3) eV/A, or None.
        stress: (3, 3) eV/A^3 (ASE sign), only for 3-D periodic frames, else None.
        source: "file:frame" for error messages.
        config_type: the frame's config_type ("Default" when the file gives none).
        weight: the frame's weight in the loss (``config_type_weights``), 1 by default.
    """

    atoms: Atoms
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    source: str
    config_type: str = DEFAULT_CONFIG_TYPE
    weight: float = 1.0

    @property
    def is_isolated_atom(self) -> bool:
        """True for an IsolatedAtom frame (its energy is its element's E0)."""
        return self.config_type == ISOLATED_ATOM


def label_keys(keys: dict[str, str] | None = None) -> dict[str, str]:
    """DEFAULT_KEYS updated with ``keys`` ({"energy"|"forces"|"stress"|"virials"|"config_type":
    key}); another name raises ValueError."""
    keys = dict(keys or {})
    unknown = sorted(set(keys) - set(DEFAULT_KEYS))
    if unknown:
        raise ValueError(f"unknown label(s) {unknown} in keys; valid: {sorted(DEFAULT_KEYS)}")
    return {**DEFAULT_KEYS, **keys}


def periodicity(atoms: Atoms) -> str:
    """The kind of system from its number of periodic axes: "3-D bulk", "2-D slab", "1-D wire"
    or "0-D molecule"."""
    return PERIODICITY[int(np.count_nonzero(atoms.pbc))]


class _Bad(Exception):
    """One problem with one label (collected, then reported with the frame's source)."""


def _find(atoms: Atoms, key: str, kind: str | None) -> tuple[Any, str] | None:
    """(value, name) of a label in info/arrays under ``key``, else in the stored results of a
    calculator under ``kind`` (None: no fallback); None when absent."""
    if key in atoms.info:
        return atoms.info[key], key
    if key in atoms.arrays:
        return atoms.arrays[key], key
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    if kind is not None and results.get(kind) is not None:
        return results[kind], f"stored {kind}"
    return None


def _numeric(value: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _Bad(f"{name} is not numeric: {value!r}") from exc


def _energy(value: Any, name: str) -> float:
    """A total energy (eV): one finite number."""
    array = _numeric(value, name)
    if array.size != 1:
        raise _Bad(f"{name} has shape {array.shape}, expected a single number")
    if not np.isfinite(array).all():
        raise _Bad(f"{name} is not finite ({float(array.ravel()[0])})")
    return float(array.ravel()[0])


def _forces(value: Any, name: str, n_atoms: int) -> np.ndarray:
    """Forces (n_atoms, 3) eV/A, all finite."""
    array = _numeric(value, name)
    if array.shape != (n_atoms, 3):
        raise _Bad(f"{name} has shape {array.shape}, expected ({n_atoms}, 3)")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad):
        raise _Bad(f"{name} has a non-finite value at atom {bad[0]}"
                   + (f" (and {len(bad) - 1} more atoms)" if len(bad) > 1 else ""))
    return array


def _tensor(value: Any, name: str) -> np.ndarray:
    """A symmetric 3x3 tensor (stress or virials) from 6 Voigt, 9 or 3x3 finite values."""
    array = _numeric(value, name)
    if array.shape not in ((6,), (9,), (3, 3)):
        raise _Bad(f"{name} has shape {array.shape}, expected 6 (Voigt), 9 or 3x3")
    if not np.isfinite(array).all():
        raise _Bad(f"{name} has a non-finite value")
    if array.shape == (6,):
        return voigt_6_to_full_3x3_stress(array)
    return array.reshape(3, 3)


def _geometry_problem(atoms: Atoms) -> str | None:
    """What is wrong with the positions or (periodic) cell, or None."""
    positions = np.asarray(atoms.positions, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad):
        return f"positions have a non-finite value at atom {bad[0]}"
    try:
        check_geometry(positions, np.asarray(atoms.cell.array, dtype=np.float64),
                       np.asarray(atoms.pbc, dtype=bool))
    except InvalidStructureError as exc:
        return str(exc)
    return None


def _label(atoms: Atoms, keys: dict[str, str], kind: str, problems: list[str], parse, *args):
    """Find and parse one label; a problem is appended to ``problems`` (result None)."""
    found = _find(atoms, keys[kind], kind if kind != "virials" else None)
    if found is None:
        return None
    try:
        return parse(found[0], found[1], *args)
    except _Bad as exc:
        problems.append(str(exc))
        return None


def present_labels(atoms: Atoms, keys: dict[str, str] | None = None) -> set[str]:
    """Which of "energy", "forces", "stress", "virials" a frame has (valid or not)."""
    keys = label_keys(keys)
    return {kind for kind in ("energy", "forces", "stress", "virials")
            if _find(atoms, keys[kind], kind if kind != "virials" else None) is not None}


def parse_frame(atoms: Atoms, keys: dict[str, str] | None = None, require_forces: bool = False
                ) -> tuple[Sample | None, list[str]]:
    """(Sample, []) for a good frame, (None, problems) otherwise; every problem of the frame
    is listed (without the source), e.g. "REF_forces has a non-finite value at atom 3"."""
    keys = label_keys(keys)
    problems: list[str] = []
    geometry = _geometry_problem(atoms)
    if geometry:
        problems.append(geometry)
    n_atoms = len(atoms)
    energy = _label(atoms, keys, "energy", problems, _energy)
    forces = _label(atoms, keys, "forces", problems, _forces, n_atoms)
    stress = _label(atoms, keys, "stress", problems, _tensor)
    virials = _label(atoms, keys, "virials", problems, _tensor)
    if not atoms.pbc.all():
        stress = None  # no volume, no stress: ignored on slabs, wires and molecules
    elif stress is None and virials is not None and not geometry:
        stress = -virials / atoms.get_volume()  # mace-torch's virials: -dE/d(strain), eV
    config_type = str(atoms.info.get(keys["config_type"], DEFAULT_CONFIG_TYPE))
    try:
        state = read_global_state(atoms.info, atoms.numbers)
    except InvalidStructureError as exc:
        problems.append(str(exc))
    problems += _missing_labels(atoms, keys, energy, forces, stress, problems, require_forces)
    if config_type == ISOLATED_ATOM and (n_atoms != 1 or energy is None):
        problems.append(f"a {ISOLATED_ATOM} frame needs one atom and an energy "
                        f"('{keys['config_type']}' = {ISOLATED_ATOM}, {n_atoms} atoms)")
    if problems:
        return None, problems
    clean = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    if state != GlobalState():  # the canonical keys, read again by make_structure
        clean.info.update(charge=state.charge, spin=state.multiplicity)
    return Sample(clean, energy, forces, stress, "", config_type), []


def _missing_labels(atoms: Atoms, keys: dict[str, str], energy, forces, stress,
                    problems: list[str], require_forces: bool) -> list[str]:
    """Problems for a frame with no usable label, or without forces when they are required."""
    if problems:  # a malformed label is reported as such, not as missing
        return []
    if forces is None and require_forces and not _is_isolated(atoms, keys):
        return [f"no forces (looked for '{keys['forces']}' and stored results)"]
    if energy is None and forces is None and stress is None:
        looked = ", ".join(f"'{keys[k]}'" for k in ("energy", "forces", "stress", "virials"))
        extra = (" (its stress/virials cannot be used: not 3-D periodic)"
                 if present_labels(atoms, keys) else "")
        return [f"no labels{extra} (looked for {looked} and stored results)"]
    return []


def _is_isolated(atoms: Atoms, keys: dict[str, str]) -> bool:
    return str(atoms.info.get(keys["config_type"], "")) == ISOLATED_ATOM


def sample_from_atoms(atoms: Atoms, source: str, keys: dict[str, str] | None = None,
                      require_forces: bool = True) -> Sample:
    """Read and check the labels of one frame; any problem raises LabelError naming
    ``source`` ("file:index") and the key."""
    sample, problems = parse_frame(atoms, keys, require_forces)
    if sample is None:
        raise LabelError(f"{source}: " + "; ".join(problems))
    sample.source = source
    return sample


def as_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """One path or a list of them, as a list of Paths."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no data files given")
    return paths


def _db_frames(path: Path) -> list[Atoms]:
    """Rows of an ase.db with their key_value_pairs and data in ``atoms.info``, where labels
    are looked up first (so REF_forces kept in a row's data is found as in extxyz)."""
    from ase.db import connect

    frames = []
    for row in connect(path).select():
        atoms = row.toatoms()
        atoms.info.update({**row.key_value_pairs, **row.get("data", {})})
        frames.append(atoms)
    return frames


def read_frames(path: str | Path, index: str = ":") -> list[Atoms]:
    """All frames of one file (any ase.io format; ase.db with its key_value_pairs/data)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a data file")
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    try:
        if path.suffix == ".db" and index == ":":
            frames = _db_frames(path)
        else:
            frames = read(path, index=index)
    except Exception as exc:  # ase raises many types for unreadable files
        raise DataError(f"cannot read {path}: {exception_reason(exc)}") from exc
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise DataError(f"{path} holds no structures")
    return frames


def read_samples(paths: str | Path | Sequence[str | Path], keys: dict[str, str] | None = None,
                 index: str = ":", require_forces: bool = True) -> list[Sample]:
    """All labelled frames of one or several files ase.io can read (extxyz, ase.db, ...).

    ``keys`` maps "energy", "forces", "stress", "virials", "config_type" to the keys of the
    files (defaults: DEFAULT_KEYS). The first bad frame raises LabelError; ``check_data``
    (``training.datacheck``) lists all of them.
    """
    samples = []
    for path in as_paths(paths):
        frames = read_frames(path, index)
        samples += [sample_from_atoms(a, f"{path}:{k}", keys, require_forces)
                    for k, a in enumerate(frames)]
    return samples


def split_isolated_atoms(samples: Sequence[Sample], tolerance: float = 1e-6
                         ) -> tuple[dict[str, float], list[Sample]]:
    """({element: E0 in eV} from the IsolatedAtom frames, the other frames).

    Two IsolatedAtom frames of one element whose energies differ by more than ``tolerance``
    eV raise DataError.
    """
    e0: dict[str, tuple[float, str]] = {}
    rest = []
    for sample in samples:
        if not sample.is_isolated_atom:
            rest.append(sample)
            continue
        symbol = sample.atoms.get_chemical_symbols()[0]
        if symbol in e0 and abs(e0[symbol][0] - sample.energy) > tolerance:
            raise DataError(f"{sample.source}: {ISOLATED_ATOM} energy of {symbol} "
                            f"{sample.energy} eV differs from {e0[symbol][0]} eV at "
                            f"{e0[symbol][1]}")
        e0.setdefault(symbol, (sample.energy, sample.source))
    return {symbol: value for symbol, (value, _) in e0.items()}, rest


def apply_config_type_weights(samples: Sequence[Sample], weights: dict[str, float]) -> None:
    """Set each sample's loss weight from its config_type (1 for types not in ``weights``)."""
    for sample in samples:
        sample.weight = float(weights.get(sample.config_type, 1.0))


def split_samples(samples: Sequence[Sample], fractions: Sequence[float], seed: int = 0
                  ) -> list[list[Sample]]:
    """Shuffle with ``seed`` and cut into parts of the given fractions (the last takes the rest)."""
    order = np.random.default_rng(seed).permutation(len(samples))
    bounds = np.cumsum([0] + [round(f * len(samples)) for f in fractions[:-1]])
    bounds = list(bounds) + [len(samples)]
    return [[samples[i] for i in order[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]


def species_of(samples: Sequence[Sample]) -> list[str]:
    """Element symbols present, in order of atomic number."""
    numbers = sorted({int(z) for s in samples for z in s.atoms.numbers})
    from ase.data import chemical_symbols

    return [chemical_symbols[z] for z in numbers]


def global_state(sample: Sample) -> GlobalState:
    """The sample's total charge and spin multiplicity (checked when it was read)."""
    return read_global_state(sample.atoms.info, sample.atoms.numbers)


def check_global_inputs_taken(samples: Sequence[Sample], takes: Sequence[str]) -> None:
    """Raise DataError when some frame sets a charge or spin the model does not take
    (``takes``: its ``global_inputs``), naming the first such frame and the fix."""
    for sample in samples:
        state = global_state(sample)
        set_inputs = {"charge": state.charge != 0, "spin": state.multiplicity != 1}
        missing = [name for name in GLOBAL_INPUTS if set_inputs[name] and name not in takes]
        if missing:
            raise DataError(
                f"{sample.source}: the frame has charge {state.charge:+d}, multiplicity "
                f"{state.multiplicity}, but the model takes no {' or '.join(missing)} input; "
                f"add global_inputs: {list(GLOBAL_INPUTS)} to its hyperparameters")


def fit_reference_energies(samples: Sequence[Sample], species: Sequence[str],
                           fixed: dict[str, float] | None = None) -> dict[str, float]:
    """E0 per element (eV) by least squares, E_total ~ sum_s n_s E0_s, over the frames with an
    energy: what is left after these is the interaction energy the model learns.

    Elements in ``fixed`` keep their given E0 (e.g. from IsolatedAtom frames); only the others
    are fitted, to E_total - sum_fixed n_s E0_s. Without any energy they get 0. Only
    neutral singlet frames are fitted when there are any: E0 is then the neutral atoms'
    reference, and the energy of an ion or a radical relative to it (an ionisation energy
    of 10-20 eV) is left to the model's charge and spin embedding.
    """
    fixed = {x: float(v) for x, v in (fixed or {}).items() if x in species}
    free = [x for x in species if x not in fixed]
    labelled = [s for s in samples if s.energy is not None]
    neutral = [s for s in labelled if global_state(s) == GlobalState()]
    labelled = neutral or labelled
    if not free:
        return fixed
    if not labelled:
        return {**fixed, **dict.fromkeys(free, 0.0)}
    symbols = [s.atoms.symbols for s in labelled]
    counts = np.array([[np.count_nonzero(x == e) for e in free] for x in symbols],
                      dtype=np.float64)
    known = np.array([sum(np.count_nonzero(x == e) * v for e, v in fixed.items())
                      for x in symbols])
    energies = np.array([s.energy for s in labelled]) - known
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {**fixed, **dict(zip(free, solution.tolist()))}


def energy_scale(samples: Sequence[Sample], reference_energies: dict[str, float]) -> float:
    """The energy scale (eV per model unit): the RMS force component (eV/A) over the frames
    with forces, as mace-torch's and nequip's default scaling.

    Falls back to the spread of per-atom energies left after E0 (eV) when no sample has
    forces, and to 1.0 when there is nothing to measure.

    There is no per-atom shift: a fresh potential gives an atom with no neighbours exactly
    its E0. With E0 from IsolatedAtom frames (or ``reference_energies``) the network then
    learns each element's cohesive energy itself, and under-coordinated structures (slabs,
    clusters, a lone atom) interpolate between the bulk and the isolated atom. A fitted
    per-element shift would instead give every atom the bulk's per-atom energy before any
    neighbour is seen: on EMT Cu-Ni (``benchmarks/accuracy.py``, 20 minutes) it over-bound a
    19-atom cluster by 233 meV/atom and a lone atom by 3.4 eV, and tripled the test energy
    error (6.6 against 1.2 meV/atom without it). When E0 are fitted, they absorb the mean
    per-atom energy and a shift would be ~0 anyway.
    """
    forces = [s.forces for s in samples if s.forces is not None and len(s.forces)]
    if forces:
        scale = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    else:
        per_atom = [(s.energy - sum(reference_energies.get(x, 0.0)
                                    for x in s.atoms.get_chemical_symbols())) / max(len(s.atoms), 1)
                    for s in samples if s.energy is not None]
        scale = float(np.std(per_atom)) if per_atom else 1.0
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def mean_neighbor_count(samples: Sequence[Sample], cutoff: float) -> float:
    """Neighbours within ``cutoff`` (Angstrom) per atom, averaged over all atoms of
    ``samples`` (periodic images counted); 1.0 when there are no atoms or no pairs.

    The statistic mace-torch and nequip divide their neighbour sums by (``avg_num_neighbors``),
    so that the summed messages of a typical atom are an average, of the same size in dense
    metals and sparse molecules. The neighbour lists are built here once more than in
    ``GraphCache`` (about a millisecond a frame).
    """
    pairs = atoms = 0
    for sample in samples:
        a = sample.atoms
        pairs += len(neighbor_list(a.positions, a.cell.array, a.pbc, cutoff).centers)
        atoms += len(a)
    return pairs / atoms if atoms and pairs else 1.0


class GraphCache:
    """Neighbour lists of samples built once; batches are concatenations of them."""

    def __init__(self, samples: Sequence[Sample], cutoff: float, species: Sequence[str]):
        self.samples = list(samples)
        self.records = []
        for sample in self.samples:
            try:
                self.records.append(make_structure(sample.atoms, cutoff, species))
            except ASEMPNNError as exc:  # say which frame of which file
                raise type(exc)(f"{sample.source}: {exc}") from exc

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, indices: Sequence[int], dtype: torch.dtype, device: str | torch.device = "cpu"
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(graph, targets) for the samples at ``indices``.

        targets: "energy" (n_graphs,) eV with "energy_mask" (n_graphs,), "forces"
        (n_atoms, 3) eV/A with "forces_mask" (n_atoms,), "stress" (n_graphs, 3, 3) eV/A^3
        with "stress_mask" (n_graphs,), and "weight" (n_graphs,), each frame's loss weight.
        A masked (absent) target is 0.0.
        """
        graph = collate([self.records[i] for i in indices], dtype=dtype, device=device)
        chosen = [self.samples[i] for i in indices]
        kw = {"dtype": dtype, "device": device}
        forces = [s.forces if s.forces is not None else np.zeros((len(s.atoms), 3)) for s in chosen]
        stress = [s.stress if s.stress is not None else np.zeros((3, 3)) for s in chosen]
        targets = {
            "energy": torch.tensor([s.energy if s.energy is not None else 0.0 for s in chosen],
                                   **kw),
            "energy_mask": torch.tensor([s.energy is not None for s in chosen], device=device),
            "forces": torch.as_tensor(np.concatenate(forces).reshape(-1, 3), **kw),
            "forces_mask": torch.as_tensor(np.concatenate(
                [np.full(len(s.atoms), s.forces is not None) for s in chosen]), device=device),
            "stress": torch.as_tensor(np.stack(stress), **kw),
            "stress_mask": torch.tensor([s.stress is not None and bool(s.atoms.pbc.all())
                                         for s in chosen], device=device),
            "weight": torch.tensor([s.weight for s in chosen], **kw),
        }
        return graph, targets
