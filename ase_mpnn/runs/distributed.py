"""Many structures over many processes or machines with dask.distributed, into a results db.

    ase-mpnn run relax inputs.extxyz --db results.db --model emt-cuni-schnet --workers 2

The client reads the inputs, skips those already in the database, and submits chunks of
structures (plain Atoms, never a calculator) to Dask workers: a LocalCluster of
single-threaded worker processes by default, or any running scheduler (``--scheduler
tcp://host:8786``, e.g. one started by dask-jobqueue on SLURM). Each worker loads the model
once (``ase_mpnn.loading``'s per-process cache) and evaluates or relaxes its chunk in
batches (``ase_mpnn.batch``). Results come back to the client,
which writes each structure to the database as its chunk finishes. A worker that dies has
its chunk rerun elsewhere by Dask; a client that dies loses nothing already written, and
rerunning the same command finishes the rest.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from tqdm import tqdm

from .._compat import require
from .._version import __version__
from ..batch import evaluate, relax_batch
from ..calculator import MPNNCalculator
from ..checks import require_integer
from ..errors import ASEMPNNError
from ..loading import DEFAULT_DTYPE, dtype_name, load
from ..results import attach_results
from ..simulate import md
from ..simulate.molecular_dynamics import check_md_options
from .inputs import read_inputs, run_key
from .results_db import ResultsDB

TASKS = ("static", "relax", "md")
DEFAULT_OPTIONS = {
    "static": {},
    "relax": {"fmax": 0.05, "steps": 500, "cell_filter": True},
    "md": {"ensemble": "nvt", "temperature_K": 300.0, "timestep_fs": 1.0, "steps": 100},
}


def _set_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def run_chunk(task: str, items: list[tuple[str, Atoms]], model: str | bytes,
              options: dict[str, Any], dtype: str = DEFAULT_DTYPE, device: str = "auto",
              threads: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """Run one chunk on a worker: [(input_id, outcome)] with outcome as ResultsDB.write takes.

    Failures of single structures (bad geometry, NaN forces, an MD blow-up) become outcomes
    with ``error``; only a failure of the whole chunk (e.g. an unreadable model) raises.
    """
    _set_threads(threads)
    ids, structures = [i for i, _ in items], [a for _, a in items]
    if task == "static":
        outcomes = _static(structures, model, dtype, device)
    elif task == "relax":
        outcomes = relax_batch(structures, model, dtype=dtype, device=device, **options)
    elif task == "md":
        outcomes = [_md_one(atoms, model, options, dtype, device) for atoms in structures]
    else:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    return list(zip(ids, outcomes))


def _static(structures: list[Atoms], model, dtype: str, device: str) -> list[dict[str, Any]]:
    start = time.perf_counter()
    results = evaluate(structures, model, dtype=dtype, device=device, errors="store")
    seconds = (time.perf_counter() - start) / max(len(structures), 1)
    outcomes = []
    for atoms, result in zip(structures, results):
        if "error" in result:
            outcomes.append({"atoms": atoms, "error": result["error"], "seconds": seconds})
        else:
            outcomes.append({**result, "atoms": attach_results(atoms, result), "steps": 0,
                             "converged": True, "seconds": seconds})
    return outcomes


def _md_one(atoms: Atoms, model, options: dict[str, Any], dtype: str, device: str) -> dict:
    start = time.perf_counter()
    try:
        final, summary = md(atoms, MPNNCalculator(model, device=device, dtype=dtype),
                            progress=False, **options)
    except (ASEMPNNError, ValueError) as exc:
        return {"atoms": atoms, "error": f"{type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - start}
    return {"atoms": final, "energy": final.get_potential_energy(), "steps": summary["steps"],
            "converged": True, "seconds": time.perf_counter() - start}


def chunked(items: Sequence, size: int) -> list[list]:
    """Consecutive chunks of ``size`` items (the last may be shorter)."""
    return [list(items[k:k + size]) for k in range(0, len(items), size)]


def _model_payload(model: str) -> str | bytes:
    """Model files travel as bytes (workers on other machines need no shared disk);
    built-in names travel as names."""
    path = Path(model)
    return path.read_bytes() if path.is_file() else model


def _model_meta(model: str, dtype: str) -> dict[str, str]:
    loaded = load(_model_payload(model), device="cpu", dtype=dtype)
    return {"model": str(model), "model_sha256": loaded.sha256,
            "package": f"ase-mpnn {__version__}"}


def check_task_options(task: str, options: dict[str, Any]) -> None:
    """ValueError for task options out of range, before any structure is run."""
    if task == "md":
        check_md_options(options["temperature_K"], options["timestep_fs"], options["steps"],
                         options.get("log_interval", 10))
    elif task == "relax":
        if not options["fmax"] > 0:
            raise ValueError(f"fmax must be > 0 eV/A, got {options['fmax']!r}")
        require_integer("steps", options["steps"], 0)


def check_run_options(workers: int, chunk_size: int, threads: int, retries: int) -> None:
    """ValueError naming the first option out of range."""
    for name, value, least in (("workers", workers, 0), ("chunk_size", chunk_size, 1),
                               ("threads", threads, 1), ("retries", retries, 0)):
        require_integer(name, value, least)


def _require_dask():
    """The dask.distributed module, or MissingDependencyError naming the extra."""
    return require("dask.distributed", "dask", "runs on Dask workers", package="dask")


def make_client(workers: int, scheduler: str | None, threads: int):
    """A dask Client: to ``scheduler`` if given, else a LocalCluster of ``workers`` processes
    with one Dask thread each (torch then uses ``threads`` per process)."""
    Client = _require_dask().Client
    if scheduler:
        return Client(scheduler)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # inherited by the workers
    # a Client that starts its LocalCluster itself also closes it (scheduler, nannies and
    # worker processes) when it closes; one handed a cluster leaves it running
    return Client(n_workers=workers, threads_per_worker=1, processes=True,
                  dashboard_address=":0")  # any free port


def run(task: str, inputs: Sequence[str | os.PathLike], db: str | os.PathLike, model: str, *,
        workers: int = 2, scheduler: str | None = None, threads: int = 1, chunk_size: int = 16,
        options: dict[str, Any] | None = None, dtype: str = DEFAULT_DTYPE, device: str = "auto",
        retry_failed: bool = False, retries: int = 2, progress: bool = True) -> dict[str, int]:
    """Run ``task`` on every input structure not yet in ``db``; returns counts.

    Args:
        task: "static", "relax" or "md".
        inputs: structure files (anything ase.io reads; every frame is an input).
        db: results database (SQLite path or database URL).
        model: built-in name or model file.
        workers: local worker processes (0: run here, without Dask).
        scheduler: address of a running Dask scheduler (then ``workers`` is ignored).
        threads: torch threads per worker process.
        chunk_size: structures per Dask task (each chunk is batched on its worker).
        options: task options (relax: fmax, steps, cell_filter; md: ensemble,
            temperature_K, timestep_fs, steps, ...), over DEFAULT_OPTIONS.
        retry_failed: delete failed rows first and run those structures again.
        retries: extra tries Dask gives a chunk whose worker died.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    check_run_options(workers, chunk_size, threads, retries)
    if workers or scheduler:
        _require_dask()  # before any input is read
    options = {**DEFAULT_OPTIONS[task], **(options or {})}
    check_task_options(task, options)
    frames, unreadable = read_inputs(inputs)
    results = ResultsDB(db)  # a database that cannot be written fails here, before compute
    meta = _model_meta(model, dtype)
    meta["run_key"] = run_key(task, options, meta["model_sha256"], dtype_name(dtype))
    if retry_failed:
        results.forget_failed()
    done = results.done_keys(meta["run_key"])
    todo = [f for f in frames if (f.input_id, f.structure_sha) not in done]
    bad = [u for u in unreadable if (u.input_id, "") not in done]
    counts = {"inputs": len(frames) + len(unreadable),
              "skipped": len(frames) + len(unreadable) - len(todo) - len(bad),
              "ok": 0, "failed": 0}
    for item in bad:  # recorded, and the run goes on
        results.write(item.input_id, task, {"atoms": Atoms(), "error": item.error}, meta)
        counts["failed"] += 1
    if not todo:
        return counts
    sha_of = {f.input_id: f.structure_sha for f in todo}
    chunks = chunked([(f.input_id, f.atoms) for f in todo], chunk_size)
    bar = tqdm(total=len(todo), desc=f"{task} ({len(chunks)} chunks)", unit="structure",
               disable=not progress)

    def store(chunk_outcomes: list[tuple[str, dict[str, Any]]]) -> None:
        for input_id, outcome in chunk_outcomes:
            results.write(input_id, task, _as_outcome(outcome), meta, sha_of[input_id])
            counts["failed" if outcome.get("error") else "ok"] += 1
        bar.update(len(chunk_outcomes))

    args = (_model_payload(model), options, dtype, device, threads)
    try:
        if workers == 0 and not scheduler:
            for chunk in chunks:
                try:
                    outcomes = run_chunk(task, chunk, *args)
                except Exception as exc:  # noqa: BLE001 - recorded, and the run goes on
                    outcomes = failed_chunk(chunk, exc)
                store(outcomes)
        else:
            _run_dask(task, chunks, args, workers, scheduler, threads, retries, store)
    finally:
        bar.close()
    return counts


def _run_dask(task, chunks, args, workers, scheduler, threads, retries, store) -> None:
    """Submit every chunk; a chunk that fails as a whole (its worker died on every try) is
    split into single structures and run again. A single structure whose worker died is run
    once more alone, after everything else: Dask blames every task that was on a dying
    worker, so an innocent structure that shared a worker with the culprit can be blamed
    too. Only a structure that kills its worker while nothing else runs is recorded as
    failed. A LocalCluster of our own that has lost a worker for good is replaced by a new
    one, which takes the chunks not yet done."""
    suspects: list[tuple[str, Atoms]] = []
    started = time.perf_counter()
    left = list(chunks)
    while left:
        with make_client(workers, scheduler, threads) as client:
            cluster = _Submitter(client, task, args, retries)
            left = _run_chunks(cluster, left, store, suspects,
                               expected_workers=None if scheduler else workers)
            if scheduler is None or left:
                continue
            # a lone rerun may wait forever when the culprit has worn out the workers'
            # restarts: it gets as long as the whole first pass took, at least
            # ALONE_MIN_SECONDS
            patience = max(ALONE_MIN_SECONDS, time.perf_counter() - started)
            for item in suspects:  # one at a time, nothing else on the cluster
                cluster.scatter()
                store(_run_alone(cluster.submit([item]), [item], patience))
            return
    for item in suspects:
        # our own machine: a fresh process of its own, where nothing else can be blamed
        # and no nanny's restarts can be worn out
        store(run_alone_in_process(task, item, args))


class _Submitter:
    """Submits chunks to one Dask client with the model sent once to every worker."""

    def __init__(self, client, task: str, args: tuple, retries: int):
        self.client, self.task, self.args, self.retries = client, task, args, retries
        self.scatter()

    def scatter(self) -> None:
        """Send the model again: scattered data has no recipe, so when every worker holding
        it has died it is lost and a task needing it would wait forever; work submitted
        after a worker died gets a fresh copy (hash=False: a new key, not the lost one)."""
        model = self.args[0]
        self.model = (self.client.scatter(model, broadcast=True, hash=False)
                      if isinstance(model, bytes) else model)

    def submit(self, chunk):
        return self.client.submit(run_chunk, self.task, chunk, self.model, *self.args[1:],
                                  retries=self.retries, pure=False)

    def live_workers(self) -> int:
        return len(self.client.nthreads())  # every worker, whatever the cluster's size


def _run_chunks(cluster: _Submitter, chunks: list, store, suspects: list,
                expected_workers: int | None) -> list:
    """Run ``chunks`` on ``cluster`` until done; returns the chunks not done when a cluster
    of ``expected_workers`` (our own) ran short of workers for DEGRADED_SECONDS."""
    waiting = _require_dask().as_completed()
    pending: dict[str, tuple[Any, list]] = {}  # future key -> (future, chunk)

    def submit(chunk: list) -> None:
        future = cluster.submit(chunk)
        pending[future.key] = (future, chunk)
        waiting.add(future)

    for chunk in chunks:
        submit(chunk)
    short_since, last_look = None, time.perf_counter()
    while pending:
        done = waiting.next_batch(block=False)
        if not done:
            time.sleep(0.05)
        for future in done:
            for single in _collect(cluster, future, pending.pop(future.key)[1], store,
                                   suspects):
                submit(single)
        if expected_workers is None or time.perf_counter() - last_look < POLL_SECONDS:
            continue
        last_look = time.perf_counter()
        if cluster.live_workers() >= expected_workers:
            short_since = None
            continue
        short_since = short_since or last_look
        if last_look - short_since > DEGRADED_SECONDS:
            for future, _ in pending.values():
                future.cancel()
            return [chunk for _, chunk in pending.values()]
    return []


def _collect(cluster: _Submitter, future, chunk, store, suspects) -> list[list]:
    """Store a finished chunk's outcomes; returns the single-structure chunks to submit
    when the chunk's worker died (a single one whose worker died becomes a suspect)."""
    try:
        # a finished future whose result died with its worker is recomputed from the
        # scattered model, which may be lost too: never wait on it forever
        outcomes = future.result(timeout=RESULT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker after every retry
        killed = type(exc).__name__ in ("KilledWorker", "TimeoutError")
        if killed:
            future.cancel()
        future.release()
        if killed and len(chunk) > 1:
            cluster.scatter()
            return [[item] for item in chunk]
        if killed:
            suspects.extend(chunk)
        else:
            store(failed_chunk(chunk, exc))
        return []
    store(outcomes)
    future.release()
    return []


#: how long our own LocalCluster may run short of workers before it is replaced by a new
#: one, seconds: a nanny restarts a dead worker within seconds, but one whose new worker
#: died while the nanny was still starting it never does, and the run would wait forever
DEGRADED_SECONDS = 60.0
#: how often the client looks at its cluster while it waits for results, seconds
POLL_SECONDS = 5.0
#: fresh processes a suspect structure is run in, one after the other, before it is
#: recorded as one that kills its worker
LONE_TRIES = 2


def run_alone_in_process(task: str, item: tuple[str, Atoms], args: tuple,
                         tries: int = LONE_TRIES) -> list[tuple[str, dict]]:
    """Run one structure whose Dask worker died in a spawned process of its own, up to
    ``tries`` times; it is recorded as failed only if it kills that process every time.
    ``args`` are ``run_chunk``'s after its chunk: (model, options, dtype, device, threads)."""
    context = multiprocessing.get_context("spawn")  # no fork of a process running threads
    died: BaseException | None = None
    for _ in range(tries):
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            try:
                return pool.submit(run_chunk, task, [item], *args).result()
            except BrokenProcessPool as exc:
                died = exc
            except Exception as exc:  # noqa: BLE001 - recorded, and the run goes on
                return failed_chunk([item], exc)
    return failed_chunk([item], died, killed=True)


#: shortest wait for the lone rerun of a structure whose worker died, seconds
ALONE_MIN_SECONDS = 60.0
#: wait for the result of a future as_completed has yielded, seconds: it is there at once
#: unless it was lost with its worker (then the chunk is treated as on a killed worker)
RESULT_SECONDS = 60.0


def _run_alone(future, chunk: list[tuple[str, Atoms]], patience: float
               ) -> list[tuple[str, dict]]:
    """The outcomes of one future awaited on its own for at most ``patience`` seconds; a
    failure (or no result in time: its workers keep dying) is recorded per structure."""
    try:
        return future.result(timeout=patience)
    except TimeoutError:
        future.cancel()
        return failed_chunk(chunk, RuntimeError(
            f"no result {patience:.0f} s after it was run alone"), killed=True)
    except Exception as exc:  # noqa: BLE001 - recorded, and the run goes on
        return failed_chunk(chunk, exc, killed=type(exc).__name__ == "KilledWorker")
    finally:
        future.release()


def failed_chunk(chunk: list[tuple[str, Atoms]], exc: BaseException,
                 killed: bool = False) -> list[tuple[str, dict]]:
    """Every structure of a chunk that failed as a whole, recorded with the error."""
    reason = ("a fresh process of its own" if isinstance(exc, BrokenProcessPool)
              else "Dask's distributed.scheduler.allowed-failures")
    error = (f"a worker process died on this structure on every try ({type(exc).__name__}: "
             f"{reason})" if killed
             else f"chunk failed: {type(exc).__name__}: {exc}")
    return [(input_id, {"atoms": atoms, "error": error}) for input_id, atoms in chunk]


def _as_outcome(outcome: dict[str, Any]) -> dict[str, Any]:
    """A result whose energy is not finite is stored as a failure."""
    if outcome.get("error") is None and not np.isfinite(outcome.get("energy", np.nan)):
        return {**outcome, "error": "non-finite energy"}
    return outcome
