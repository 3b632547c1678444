"""``check_data``: what a training set holds and what is wrong with it, before any training.

``format_report`` prints one table: frames, atoms (total, min/max per frame), elements,
label coverage (frames with energy / forces / stress / virials), periodicity kinds (3-D
bulk, 2-D slab, 1-D wire, 0-D molecule), config types, total charge and spin multiplicity
(``atoms.info`` charge/spin and their aliases, as "charge/multiplicity frames" when any
frame is not a neutral singlet), isolated-atom energies E0,
energy-per-atom and force-component ranges (and the largest |F|), stress labels ignored
(on frames that are not 3-D periodic), suspected outliers, duplicate frames and label errors.
Every problem is listed by ``file:index``; label errors are all collected (a file that
cannot be read at all is one error), not stopped at the first. ``ase-mpnn check-data`` and
``ase-mpnn train`` print it; errors make check-data exit with status 1 and stop training.

Suspected outliers (warnings, the frames are still used):

- forces: an atom with |F| above ``max_force`` (20 eV/A);
- energy: E0 per element is fitted by least squares to all frames with an energy (as the
  training does, IsolatedAtom frames left out), leaving a residual energy per atom
  r = (E - sum_s n_s E0_s) / N. Among frames of the same periodicity kind and the same
  charge and multiplicity (surfaces, vacuum and ionisation shift whole groups), a frame
  is suspected when its robust z-score |r - median| / (1.4826 MAD) exceeds ``energy_z``
  (5) and |r - median| exceeds ``energy_floor`` (0.05 eV/atom, so that tight data sets
  are not flagged for meV noise).
  The fit is repeated once without the frames flagged by the first pass, so a gross outlier
  does not drag the E0s. Kinds with fewer than 5 frames are not judged.

Duplicates: frames with the same atomic numbers, charge, multiplicity, cell and positions
to 1e-8 A (one geometry at several charges is not a duplicate).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
from ase.data import chemical_symbols

from ..errors import InvalidStructureError
from ..graph.charge_spin import GlobalState, read_global_state
from .samples import (
    DataError,
    Sample,
    as_paths,
    fit_reference_energies,
    global_state,
    label_keys,
    parse_frame,
    periodicity,
    present_labels,
    read_frames,
    species_of,
    split_isolated_atoms,
)

#: coordinates (A) closer than this count as the same
DUPLICATE_TOLERANCE = 1e-8
#: periodicity kinds with fewer frames are not judged for energy outliers
MIN_GROUP = 5


@dataclasses.dataclass
class Outlier:
    """A suspected outlier: ``source`` ("file:index") and why."""

    source: str
    reason: str


@dataclasses.dataclass
class DataReport:
    """What ``check_data`` found. Counts are over all frames read; ranges, outliers and
    duplicates over the frames without errors."""

    paths: list[str]
    n_frames: int = 0
    n_atoms: list[int] = dataclasses.field(default_factory=list)  # per frame
    elements: dict[str, int] = dataclasses.field(default_factory=dict)  # atoms per element
    coverage: dict[str, int] = dataclasses.field(default_factory=dict)  # frames per label
    periodicity: dict[str, int] = dataclasses.field(default_factory=dict)
    config_types: dict[str, int] = dataclasses.field(default_factory=dict)
    #: frames per "charge/multiplicity", e.g. {"+0/1": 900, "+1/2": 900}
    global_states: dict[str, int] = dataclasses.field(default_factory=dict)
    isolated_atoms: dict[str, float] = dataclasses.field(default_factory=dict)  # E0, eV
    energy_per_atom: tuple[float, float] | None = None  # (min, max) eV/atom
    force_components: tuple[float, float] | None = None  # (min, max) eV/A
    max_force: float | None = None  # largest |F| of an atom, eV/A
    ignored_stress: int = 0  # frames whose stress/virials are unused (not 3-D periodic)
    outliers: list[Outlier] = dataclasses.field(default_factory=list)
    duplicates: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (dup, of)
    errors: list[str] = dataclasses.field(default_factory=list)  # "file:index: problem"
    #: the good frames of each path (str), as ``read_samples`` would return them
    samples: dict[str, list[Sample]] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when no frame had an error (outliers and duplicates are only warnings)."""
        return not self.errors

    def raise_errors(self) -> None:
        """Raise DataError listing every error, if there is any."""
        if self.errors:
            raise DataError(f"{len(self.errors)} problem(s) in the data (ase-mpnn check-data):\n"
                            + "\n".join(f"  {e}" for e in self.errors))


def check_data(paths: str | Path | Sequence[str | Path], keys: dict[str, str] | None = None,
               *, max_force: float = 20.0, energy_z: float = 5.0, energy_floor: float = 0.05
               ) -> DataReport:
    """Read every frame of ``paths`` with the label ``keys`` (as ``read_samples``) and report
    on them, collecting all errors; see the module docstring for the outlier rules.

    Args:
        paths: one file or several (any ase.io format, ase.db).
        keys: {"energy"|"forces"|"stress"|"virials"|"config_type": key}, default REF_*.
        max_force: |F| above this (eV/A) is a suspected outlier.
        energy_z: the energy outlier rule's threshold on the robust z score.
        energy_floor: the energy outlier rule's smallest deviation counted, eV/atom.
    """
    keys = label_keys(keys)
    report = DataReport(paths=[str(p) for p in as_paths(paths)])
    for path in report.paths:
        try:
            frames = read_frames(path)
        except DataError as exc:
            report.errors.append(str(exc))
            continue
        report.samples[path] = []
        for index, atoms in enumerate(frames):
            _count_frame(report, atoms, keys)
            sample, problems = parse_frame(atoms, keys)
            if sample is None:
                report.errors += [f"{path}:{index}: {p}" for p in problems]
            else:
                sample.source = f"{path}:{index}"
                report.samples[path].append(sample)
    _summarise(report, [s for group in report.samples.values() for s in group],
               max_force, energy_z, energy_floor)
    return report


def _count_frame(report: DataReport, atoms, keys: dict[str, str]) -> None:
    """Counts of one raw frame: atoms, elements, labels, periodicity, config type."""
    report.n_frames += 1
    report.n_atoms.append(len(atoms))
    numbers, counts = np.unique(atoms.numbers, return_counts=True)
    for z, count in zip(numbers, counts):
        symbol = chemical_symbols[z]
        report.elements[symbol] = report.elements.get(symbol, 0) + int(count)
    labels = present_labels(atoms, keys)
    for label in labels:
        report.coverage[label] = report.coverage.get(label, 0) + 1
    kind = periodicity(atoms)
    report.periodicity[kind] = report.periodicity.get(kind, 0) + 1
    config_type = str(atoms.info.get(keys["config_type"], "Default"))
    report.config_types[config_type] = report.config_types.get(config_type, 0) + 1
    if labels & {"stress", "virials"} and not atoms.pbc.all():
        report.ignored_stress += 1
    try:  # a bad charge or spin is reported as an error of the frame by parse_frame
        state = _state_name(read_global_state(atoms.info, atoms.numbers))
        report.global_states[state] = report.global_states.get(state, 0) + 1
    except InvalidStructureError:
        pass


def _state_name(state: GlobalState) -> str:
    """"+1/2": charge and multiplicity."""
    return f"{state.charge:+d}/{state.multiplicity}"


def _group(sample: Sample) -> str:
    """The frame's periodicity kind, with its charge and multiplicity unless neutral singlet."""
    state = global_state(sample)
    kind = periodicity(sample.atoms)
    return kind if state == GlobalState() else f"{kind} {_state_name(state)}"


def _summarise(report: DataReport, samples: list[Sample], max_force: float, energy_z: float,
               energy_floor: float) -> None:
    """Ranges, isolated-atom E0s, outliers and duplicates of the good frames."""
    try:
        report.isolated_atoms, _ = split_isolated_atoms(samples)
    except DataError as exc:
        report.errors.append(str(exc))
    per_atom = [s.energy / len(s.atoms) for s in samples if s.energy is not None]
    if per_atom:
        report.energy_per_atom = (min(per_atom), max(per_atom))
    forces = [s.forces for s in samples if s.forces is not None and len(s.forces)]
    if forces:
        flat = np.concatenate(forces)
        report.force_components = (float(flat.min()), float(flat.max()))
        report.max_force = float(np.linalg.norm(flat, axis=1).max())
    report.outliers = (force_outliers(samples, max_force)
                       + energy_outliers(samples, energy_z, energy_floor))
    report.duplicates = find_duplicates(samples)


def force_outliers(samples: Sequence[Sample], max_force: float = 20.0) -> list[Outlier]:
    """Frames with an atom whose |F| exceeds ``max_force`` (eV/A)."""
    found = []
    for sample in samples:
        if sample.forces is None or not len(sample.forces):
            continue
        norms = np.linalg.norm(sample.forces, axis=1)
        atom = int(norms.argmax())
        if norms[atom] > max_force:
            found.append(Outlier(sample.source, f"|F| = {norms[atom]:.1f} eV/A on atom {atom} "
                                                f"(above {max_force:g} eV/A)"))
    return found


def _residuals(samples: Sequence[Sample], fit_to: Sequence[Sample]) -> np.ndarray:
    """Energy per atom (eV/atom) of ``samples`` left after E0s fitted to ``fit_to``."""
    e0 = fit_reference_energies(fit_to, species_of(samples))
    return np.array([(s.energy - sum(e0[x] for x in s.atoms.get_chemical_symbols()))
                     / len(s.atoms) for s in samples])


def _robust_flags(residuals: np.ndarray, kinds: list[str], z_max: float, floor: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flagged, deviation from the kind's median in eV/atom, robust z) per frame."""
    flagged = np.zeros(len(residuals), dtype=bool)
    deviation = np.zeros(len(residuals))
    z = np.zeros(len(residuals))
    for kind in set(kinds):
        members = np.array([k == kind for k in kinds])
        if members.sum() < MIN_GROUP:
            continue
        values = residuals[members]
        deviation[members] = values - np.median(values)
        mad = 1.4826 * np.median(np.abs(deviation[members]))  # sigma of a normal distribution
        distance = np.abs(deviation[members])
        z[members] = distance / mad if mad > 0 else np.where(distance > 0, np.inf, 0.0)
        flagged[members] = (z[members] > z_max) & (np.abs(deviation[members]) > floor)
    return flagged, deviation, z


def energy_outliers(samples: Sequence[Sample], z_max: float = 5.0, floor: float = 0.05
                    ) -> list[Outlier]:
    """Frames whose energy per atom is far from the rest of their periodicity kind after
    per-element E0s (the rule of the module docstring)."""
    frames = [s for s in samples if s.energy is not None and not s.is_isolated_atom]
    if len(frames) < MIN_GROUP:
        return []
    kinds = [_group(s) for s in frames]
    flagged, _, _ = _robust_flags(_residuals(frames, frames), kinds, z_max, floor)
    if flagged.any() and (~flagged).sum() >= MIN_GROUP:  # refit without the gross outliers
        kept = [s for s, bad in zip(frames, flagged) if not bad]
        flagged, deviation, z = _robust_flags(_residuals(frames, kept), kinds, z_max, floor)
    else:
        flagged, deviation, z = _robust_flags(_residuals(frames, frames), kinds, z_max, floor)
    return [Outlier(s.source, f"energy per atom {d:+.3f} eV/atom from the median of the "
                              f"{kind} frames after per-element E0 (robust z {zz:.3g})")
            for s, bad, d, zz, kind in zip(frames, flagged, deviation, z, kinds) if bad]


def find_duplicates(samples: Sequence[Sample], tolerance: float = DUPLICATE_TOLERANCE
                    ) -> list[tuple[str, str]]:
    """(source, source of the earlier frame it repeats) for frames with the same atomic
    numbers, cell and positions to ``tolerance`` A.

    Frames of one composition are sorted by a projection of their summed positions and cell,
    which differs by at most (N + 3) sqrt(3) tolerance between duplicates, so only neighbours
    in that order are compared (no quadratic search over a long trajectory).
    """
    direction = np.array([1.0, np.sqrt(2.0), np.sqrt(3.0)]) / np.sqrt(6.0)
    groups: dict[bytes, list[int]] = {}
    for i, sample in enumerate(samples):
        composition = np.asarray(sample.atoms.numbers, dtype=np.int64).tobytes()
        groups.setdefault(composition + repr(global_state(sample)).encode(), []).append(i)
    found: dict[int, int] = {}
    for members in groups.values():
        n_atoms = len(samples[members[0]].atoms)
        window = (n_atoms + 3) * np.sqrt(3.0) * tolerance * 1.01
        key = {i: float((samples[i].atoms.positions.sum(axis=0)
                         + samples[i].atoms.cell.array.sum(axis=0)) @ direction) for i in members}
        order = sorted(members, key=lambda i: (key[i], i))
        for a, i in enumerate(order):
            for j in order[a + 1:]:
                if key[j] - key[i] > window:
                    break
                if j not in found and _same_geometry(samples[i], samples[j], tolerance):
                    first, second = min(i, j), max(i, j)
                    found.setdefault(second, first)
    return [(samples[j].source, samples[i].source) for j, i in sorted(found.items())]


def _same_geometry(a: Sample, b: Sample, tolerance: float) -> bool:
    return (np.allclose(a.atoms.cell.array, b.atoms.cell.array, rtol=0, atol=tolerance)
            and np.allclose(a.atoms.positions, b.atoms.positions, rtol=0, atol=tolerance))


def _counts(values: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in values.items()) or "-"


def _listed(rows: list[str], limit: int | None) -> list[str]:
    """``rows`` indented, at most ``limit`` of them (None: all) and a line for the rest."""
    shown = rows if limit is None else rows[:limit]
    extra = [f"      ... and {len(rows) - len(shown)} more"] if len(rows) > len(shown) else []
    return [f"      {row}" for row in shown] + extra


def format_report(report: DataReport, max_listed: int = 50) -> str:
    """The report as one table; outliers and duplicates are listed up to ``max_listed``
    each, errors all."""
    from ase.data import atomic_numbers

    n_atoms = report.n_atoms
    elements = dict(sorted(report.elements.items(), key=lambda kv: atomic_numbers[kv[0]]))
    coverage = {k: report.coverage.get(k, 0) for k in ("energy", "forces", "stress", "virials")}
    kinds = {k: report.periodicity[k] for k in ("3-D bulk", "2-D slab", "1-D wire",
                                                "0-D molecule") if k in report.periodicity}
    rows = [("files", ", ".join(report.paths)),
            ("frames", f"{report.n_frames}"),
            ("atoms", f"{sum(n_atoms)} (per frame: min {min(n_atoms)}, max {max(n_atoms)})"
             if n_atoms else "0"),
            ("elements (atoms)", _counts(elements)),
            ("labels (frames)", _counts(coverage)),
            ("periodicity", _counts(kinds)),
            ("config types", _counts(dict(sorted(report.config_types.items()))))]
    if set(report.global_states) - {_state_name(GlobalState())}:
        rows.append(("charge/multiplicity", _counts(dict(sorted(report.global_states.items())))))
    if report.isolated_atoms:
        rows.append(("isolated atoms E0", ", ".join(
            f"{x} {e:.6g} eV" for x, e in sorted(report.isolated_atoms.items()))))
    if report.energy_per_atom:
        rows.append(("energy per atom", "{:.4f} .. {:.4f} eV/atom".format(
            *report.energy_per_atom)))
    if report.force_components:
        rows.append(("force components", "{:.3f} .. {:.3f} eV/A (max |F| {:.3f} eV/A)".format(
            *report.force_components, report.max_force)))
    if report.ignored_stress:
        rows.append(("stress ignored", f"{report.ignored_stress} frame(s) with stress/virials "
                                       "that are not 3-D periodic"))
    lines = ["data check", *(f"  {name:20s} {value}" for name, value in rows)]
    lines.append(f"  {'suspected outliers':20s} {len(report.outliers)}")
    lines += _listed([f"{o.source}: {o.reason}" for o in report.outliers], max_listed)
    lines.append(f"  {'duplicate frames':20s} {len(report.duplicates)}")
    lines += _listed([f"{dup}: same as {first}" for dup, first in report.duplicates],
                     max_listed)
    lines.append(f"  {'errors':20s} {len(report.errors)}")
    lines += _listed(report.errors, None)
    return "\n".join(lines)
