"""``learn(config)``: explore, select, label, fine-tune and report, round after round.

Layout of OUTPUT:

- ``config.json``: the options of the run;
- ``round_NNN/``: ``committee.mpnn`` (the committee this round explores with; round 0: a
  copy of the starting one), ``explored.extxyz`` (the sampled frames with their largest
  force std, ``al_std`` eV/A), ``exploration.json`` (per trajectory: samples, largest std,
  blow-up), ``labelled.extxyz`` and ``failures.jsonl`` (the reference's answers, appended
  one by one), ``members/`` and ``training/`` (the fine-tuning), ``state.json``;
- ``report.csv``, ``report.json``, ``active_learning.png``; ``committee.mpnn``: the last.

``state.json`` lists the phases of its round that are done (PHASES) and is rewritten
atomically after each, so a killed run started again with ``resume`` redoes at most the
phase it was in: exploration is seeded (the same frames again), labelled frames and
failures are kept by hash (no reference call is repeated), finished member trainings
are kept (``train_committee``'s resume).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from ase.io import read

from ...modelfile import save_model
from .config import ActiveConfig
from .explore import explore, with_hashes
from .files import read_json, write_frames, write_json
from .finetune import fine_tune, load_committee, train_config
from .reference import LabelStore, label_round
from .report import test_errors, write_report
from .select import select_frames

PHASES = ("explored", "selected", "labelled", "trained", "reported")
EXPLORED_FILE, STATE_FILE, COMMITTEE = "explored.extxyz", "state.json", "committee.mpnn"


def round_dir(output: Path, index: int) -> Path:
    """The folder of round ``index``."""
    return output / f"round_{index:03d}"


def learn(config: ActiveConfig | dict[str, Any] | str | Path) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) active learning; returns the summary (also in
    OUTPUT/report.json): rows (report.py's COLUMNS), stopped ("converged": no explored
    frame above the threshold, or "rounds"), committee (the final file), failures."""
    config = as_config(config)
    output = Path(config.output)
    start = load_committee(config.committee)
    keys = train_config(config, start, config.data_files(), output).label_keys()
    _prepare(config, output, start)
    rows: list[dict[str, Any]] = []
    stopped = None
    for index in range(config.rounds + 1):
        state = _state(config, output, index)
        row, stopped = _round(config, output, index, state, keys)
        rows.append(row)
        _report(config, output, rows, stopped)
        if stopped:
            break
    final = round_dir(output, len(rows) - 1) / COMMITTEE
    save_model(load_committee(final), output / COMMITTEE)
    print(format_table(rows))
    print(f"stopped: {stopped}; final committee {output / COMMITTEE}")
    return read_json(output / "report.json")


def as_config(config: ActiveConfig | dict[str, Any] | str | Path) -> ActiveConfig:
    """An ActiveConfig from itself, a mapping or a YAML file."""
    if isinstance(config, ActiveConfig):
        return config
    if isinstance(config, dict):
        return ActiveConfig.from_dict(config)
    return ActiveConfig.from_yaml(config)


def _prepare(config: ActiveConfig, output: Path, start) -> None:
    """Refuse to start over a run (without resume); write config.json and round 0's
    committee."""
    previous = read_json(output / "config.json")
    if previous is not None and not config.resume:
        raise ValueError(f"{output} holds an active-learning run: resume it (--resume, or "
                         "resume: true) or choose another output")
    current = {k: v for k, v in dataclasses.asdict(config).items() if k != "resume"}
    if previous is not None:
        changed = sorted(k for k in current if previous.get(k) != current[k])
        if changed:
            print(f"resuming {output} with changed option(s): {', '.join(changed)}")
    write_json(output / "config.json", current)
    first = round_dir(output, 0) / COMMITTEE
    if not first.exists():
        save_model(start, first, training=(getattr(start, "manifest", None) or {}).get(
            "training"), active_learning={"round": 0, "start": str(config.committee)})


def _state(config: ActiveConfig, output: Path, index: int) -> dict[str, Any]:
    """Round ``index``'s state; a round that stopped only for lack of rounds reopens when
    ``rounds`` now allows more."""
    state = read_json(round_dir(output, index) / STATE_FILE,
                      {"round": index, "done": [], "seconds": 0.0, "stopped": None})
    if state["stopped"] == "rounds" and index < config.rounds:
        state["stopped"] = None
        state["done"] = [p for p in state["done"] if p in ("explored", "selected")]
    if state["stopped"] is None and "reported" in state["done"] and index >= config.rounds:
        state["stopped"] = "rounds"  # resumed with fewer rounds than were run
    return state


def _mark(output: Path, state: dict[str, Any], phase: str, started: float) -> None:
    state["done"].append(phase)
    state["seconds"] += time.monotonic() - started
    write_json(round_dir(output, state["round"]) / STATE_FILE, state)


def _round(config: ActiveConfig, output: Path, index: int, state: dict[str, Any],
           keys: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """Do the phases of round ``index`` not done yet; (its report row, why the run stops
    or None)."""
    here = round_dir(output, index)
    if "explored" not in state["done"]:
        started = time.monotonic()
        frames, trajectories = explore(config, here / COMMITTEE, index)
        write_frames(here / EXPLORED_FILE, frames)
        write_json(here / "exploration.json", trajectories)
        _mark(output, state, "explored", started)
    frames = with_hashes(_read_frames(here / EXPLORED_FILE))
    if "selected" not in state["done"]:
        started = time.monotonic()
        state["selected"] = select_frames(frames, config.threshold, config.max_new_per_round,
                                          config.min_separation)
        if not state["selected"]:
            state["stopped"] = "converged"
        elif index >= config.rounds:
            state["stopped"] = "rounds"
        _mark(output, state, "selected", started)
    rounds = [round_dir(output, k) for k in range(index + 1)]
    if not state["stopped"] and "labelled" not in state["done"]:
        started = time.monotonic()
        label_round([frames[i] for i in state["selected"]], here, index, config.reference,
                    config.reference_kwargs, LabelStore(rounds), keys, config.progress)
        _mark(output, state, "labelled", started)
    if not state["stopped"] and "trained" not in state["done"]:
        started = time.monotonic()
        fine_tune(config, here / COMMITTEE, rounds, round_dir(output, index + 1) / COMMITTEE)
        _mark(output, state, "trained", started)
    if "reported" not in state["done"]:
        started = time.monotonic()
        state["row"] = _row(config, index, frames, LabelStore(rounds), here, keys)
        _mark(output, state, "reported", started)
        state["row"]["minutes"] = round(state["seconds"] / 60, 3)
        write_json(here / STATE_FILE, state)
    return state["row"], state["stopped"]


def _read_frames(path: Path) -> list:
    return read(path, ":", format="extxyz") if path.stat().st_size else []


def _row(config: ActiveConfig, index: int, frames: list, store: LabelStore, here: Path,
         keys: dict[str, str]) -> dict[str, Any]:
    """Report row of round ``index`` (see report.COLUMNS)."""
    labelled, failed = store.calls(index)
    stds = [atoms.info["al_std"] for atoms in frames]
    trajectories = read_json(here / "exploration.json", [])
    row = {"round": index, "new_frames": labelled, "reference_calls": labelled + failed,
           "failures": failed,
           "total_reference_calls": len(store.labelled) + len(store.failures),
           "total_new_frames": len(store.labelled), "explored_frames": len(frames),
           "blowups": sum(t["blew_up"] is not None for t in trajectories),
           "max_std_eV_per_A": max(stds, default=None),
           "fraction_above_threshold": (sum(s > config.threshold for s in stds) / len(stds)
                                        if stds else None)}
    row.update(test_errors(here / COMMITTEE, config.test_files(), keys, config.dtype,
                           config.progress))
    return row


def _report(config: ActiveConfig, output: Path, rows: list[dict[str, Any]],
            stopped: str | None) -> None:
    dirs = [round_dir(output, k) for k in range(len(rows))]
    store = LabelStore(dirs)
    blowups = [{"round": k, **t} for k, d in enumerate(dirs)
               for t in read_json(d / "exploration.json", []) if t["blew_up"]]
    extra = {"stopped": stopped, "threshold_eV_per_A": config.threshold,
             "committee": str(output / COMMITTEE) if stopped else None,
             "failures": sorted(store.failures.values(), key=lambda f: f["round"]),
             "blowups": blowups}
    write_report(output, rows, extra, config.threshold)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The report as a text table: round, new frames, reference calls (total), largest
    explored std, fraction above threshold, test errors and the force-MAE factor vs round 0."""
    head = (f"{'round':>5} {'new':>4} {'calls':>6} {'total':>6} {'max std':>8} {'above':>6} "
            f"{'E MAE':>8} {'F MAE':>8} {'F std':>8} {'x':>5} {'min':>6}")
    lines = [head, " " * 29 + "eV/A" + " " * 8 + "meV/atom" + "   meV/A" + "    meV/A"]
    first = rows[0].get("test_forces_mae_meV_per_A") if rows else None
    for row in rows:
        f_mae = row.get("test_forces_mae_meV_per_A")
        factor = first / f_mae if first and f_mae else None
        lines.append(f"{row['round']:>5} {row['new_frames']:>4} {row['reference_calls']:>6} "
                     f"{row['total_reference_calls']:>6} {_num(row['max_std_eV_per_A'], 3)} "
                     f"{_num(row['fraction_above_threshold'], 2, 6)} "
                     f"{_num(row.get('test_energy_mae_meV_per_atom'), 2)} "
                     f"{_num(f_mae, 1)} {_num(row.get('test_mean_forces_std_meV_per_A'), 1)} "
                     f"{_num(factor, 2, 5)} {_num(row['minutes'], 1, 6)}")
    return "\n".join(lines)


def _num(value: float | None, digits: int, width: int = 8) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"
