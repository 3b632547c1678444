"""Time per energy+forces+stress call: the peers' own ASE calculators against ours.

    python benchmarks/peers.py [--setup] [--sizes 108 1372] [--dtypes float32 float64]
                               [--threads 2] [--rounds 5] [--peers schnetpack mace nequip]
                               [--no-nequip-aoti] [--json out.json]

Peers (random weights, each in its own side environment under ``.bench-peers/<peer>/``,
made on first use or with ``--setup``, torch pinned to this project's 2.13.0 and the peer
at whatever pip resolves; ``benchmarks/_peer_worker.py`` says how each is built):

- SchNetPack's SchNet in ``SpkCalculator``. Timed through ASE's getters, as users call it
  (it reruns its model for each property asked); a row "schnetpack 1 call" times one
  ``calculate(atoms, [energy, forces, stress])`` instead (SchNetPack without the reruns).
- mace-torch's ScaleShiftMACE in ``MACECalculator``.
- nequip's NequIPGNNModel in ``NequIPCalculator``: eager, and compiled with AOTInductor as
  ``nequip-compile --target ase`` does (nequip's recommended form; both rows are judged).

Each peer gets its own environment because their pins exclude each other (mace-torch pins
e3nn 0.4.4, nequip needs e3nn >= 0.6). Ours: ase-mpnn's SchNet, MACE and NequIP at the
same settings in ``MPNNCalculator``, timed with a fresh neighbour list every call (skin 0,
as the peers do) and with the default Verlet skin (0.5 A; the small per-call moves never
force a rebuild, so this is its best case), in this environment.

Cells: rattled (0.05 A) fcc Cu, a = 3.61 A, cubic cell repeated k times (4 k^3 atoms:
108 = 3^3 x 4, 1372 = 7^3 x 4), cutoff 5 A, models for Cu and Ni. A call is
``get_potential_energy(); get_forces(); get_stress()`` after displacing every atom by fresh
0.005 A noise. Every calculator runs in a worker process with ``--threads`` torch threads
(OMP_NUM_THREADS likewise); the workers take turns round by round, and each number is
the best over ``--rounds`` rounds of the mean ms per call within a round (a round lasts at
least ``--min-round-s``). Workers' stderr (the peers' warnings, tracebacks) goes to
``.bench-peers/<name>-worker.log``.

Ours is also timed compiled ahead of time (``MPNNCalculator(..., compile=True)``, skin 0;
the first run compiles each model and dtype into ``.bench-peers/compiled-cache``, later
runs load it), unless ``--no-our-compiled``. Our eager SchNet uses the native kernels
(``ase-mpnn kernels``), built into that folder on the first run.

Targets (peer ms / our ms, ours the faster of eager and compiled, both with a fresh list
every call): >= 1.5 against SchNetPack as ASE's getters call it and against mace-torch,
>= 1.3 against SchNetPack's single calculate(), >= 1.2 against nequip (eager and AOT),
at every size and dtype. Exit status 1 when one is missed, else 0; a peer that could not
be installed or run is reported as skipped and judged on nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import venv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SIDE = REPO / ".bench-peers"
WORKER = Path(__file__).resolve().with_name("_peer_worker.py")
CONSTRAINTS = REPO / "constraints.txt"
TORCH_PIN = "torch==2.13.0"


@dataclass(frozen=True)
class Peer:
    """A peer package: what pip installs, which of our architectures it is matched with,
    and the least ratio (its ms / ours) the issue asks for."""

    name: str
    requirement: str
    architecture: str
    target: float
    one_call_target: float | None = None  # SchNetPack's single calculate() (issue 18)


PEERS = {
    "schnetpack": Peer("schnetpack", "schnetpack", "schnet", 1.5, one_call_target=1.3),
    "mace": Peer("mace", "mace-torch", "mace", 1.5),
    "nequip": Peer("nequip", "nequip", "nequip", 1.2),
}
OUR_SKINS = (0.0, 0.5)  # Angstrom; 0 rebuilds the list every call, as the peers do
#: our forms judged against the peers, all with a fresh list every call: eager, and
#: compiled ahead of time (MPNNCalculator(..., compile=True), cached in .bench-peers/)
OURS_JUDGED = ("ours skin 0", "ours compiled")
K_OF_ATOMS = {4 * k ** 3: k for k in range(1, 13)}  # atoms in the cubic fcc cell -> k


# ---------------------------------------------------------------------------------------
# side environments
# ---------------------------------------------------------------------------------------

def env_dir(peer: Peer) -> Path:
    """The peer's side virtual environment."""
    return SIDE / peer.name


def env_python(peer: Peer) -> Path:
    """The side environment's interpreter."""
    return env_dir(peer) / "bin" / "python"


def install_peer(peer: Peer) -> str | None:
    """Create ``.bench-peers/<peer>/`` and pip-install torch (pinned) and the peer into it.

    Returns None on success, else the reason (the tail of pip's log, kept in full in
    ``.bench-peers/<peer>-install.log``).
    """
    SIDE.mkdir(exist_ok=True)
    log = SIDE / f"{peer.name}-install.log"
    stamp = env_dir(peer) / ".installed"
    stamp.unlink(missing_ok=True)
    print(f"[setup] {peer.name}: creating {env_dir(peer).relative_to(REPO)} and installing "
          f"{TORCH_PIN} {peer.requirement} (log: {log.relative_to(REPO)})", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir(peer))
    command = [str(env_python(peer)), "-m", "pip", "install", "--disable-pip-version-check",
               "-c", str(CONSTRAINTS), TORCH_PIN, peer.requirement]
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        return f"pip install failed (exit {done.returncode}): " + " | ".join(tail)
    stamp.write_text(json.dumps(peer_versions(peer)))
    return None


def peer_versions(peer: Peer) -> dict[str, str]:
    """Package versions in the peer's side environment."""
    out = subprocess.run([str(env_python(peer)), str(WORKER), "--versions"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_peer(peer: Peer, force: bool) -> str | None:
    """Install the peer when asked or when its environment is missing; None when ready."""
    if force or not (env_dir(peer) / ".installed").exists():
        return install_peer(peer)
    return None


# ---------------------------------------------------------------------------------------
# worker processes
# ---------------------------------------------------------------------------------------

class WorkerError(RuntimeError):
    """A worker answered with an error or died."""


class WorkerProcess:
    """A ``_peer_worker.py --serve`` process in one environment; stderr goes to a log."""

    def __init__(self, label: str, python: Path | str, threads: int):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONUNBUFFERED="1")
        # our compile=True programs and native kernels are cached here, not in the user's
        # ~/.cache; the kernels are built there on first use (about 20 s, once)
        env.setdefault("ASE_MPNN_CACHE", str(SIDE / "compiled-cache"))
        env.setdefault("ASE_MPNN_KERNELS", "build")
        SIDE.mkdir(exist_ok=True)
        self.label = label
        self.log_path = SIDE / f"{label}-worker.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen([str(python), str(WORKER), "--serve"], cwd=REPO,
                                        env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log, text=True)

    def ask(self, **msg: Any) -> dict:
        """Send one command, wait for its reply."""
        if self.process.poll() is not None:
            raise WorkerError(f"{self.label} worker exited ({self.process.returncode}); "
                              f"see {self.log_path}")
        self.process.stdin.write(json.dumps(msg) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise WorkerError(f"{self.label} worker died; see {self.log_path}")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"{self.label}: {reply['error']} (traceback in {self.log_path})")
        return reply

    def close(self) -> None:
        """Ask the worker to quit (kill it after 30 s) and close its log."""
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.process.stdin.flush()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()


# ---------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------

@dataclass
class Variant:
    """One calculator to time: who runs it, what it builds, and its results."""

    label: str  # e.g. "mace", "ours skin 0"
    worker: WorkerProcess
    model: str  # the worker's model name: a peer's, or "ours-ARCH"
    options: dict = field(default_factory=dict)
    judged: bool = True  # whether the targets are checked against this peer variant
    optional: bool = False  # an extra form: if it fails to set up, the rest goes on
    setup: dict = field(default_factory=dict)
    repeats: int = 1
    rounds_ms: list[float] = field(default_factory=list)

    @property
    def ms(self) -> float:
        """Best round: mean ms per call."""
        return min(self.rounds_ms) if self.rounds_ms else math.nan


def measure(variants: list[Variant], k: int, dtype: str,
            args: argparse.Namespace) -> dict[str, str]:
    """Set every variant up on the same cell, then time them in turns, round by round.

    Optional variants that fail to set up are removed from ``variants``; returns
    {label: reason} for them.
    """
    failed = {}
    for i, v in enumerate(list(variants)):
        try:
            v.setup = v.worker.ask(cmd="setup", id=str(i), model=v.model, dtype=dtype, k=k,
                                   threads=args.threads, options=v.options)
        except WorkerError as error:
            if not v.optional:
                raise
            failed[v.label] = str(error)
            variants.remove(v)
            print(f"{v.label}: SKIPPED: {error}", flush=True)
            continue
        v.repeats = max(1, math.ceil(args.min_round_s * 1e3 / max(v.setup["warm_ms"], 1e-3)))
    for _ in range(args.rounds):
        for i, v in enumerate(variants):
            v.rounds_ms.append(v.worker.ask(cmd="round", id=str(i), repeats=v.repeats)["ms"])
    for worker in {id(v.worker): v.worker for v in variants}.values():
        worker.ask(cmd="drop")
    return failed


def peer_variants(peer: Peer, peer_worker: WorkerProcess, ours: WorkerProcess,
                  nequip_aoti: bool, our_compiled: bool) -> list[Variant]:
    """The peer as users call it, ours at each skin and compiled, and two extra peer forms:
    SchNetPack as one calculate() call for all three properties (judged at its own target:
    ASE's getters do not call it so, but it is SchNetPack's speed without the reruns), and
    nequip compiled with AOTInductor (judged, when asked for)."""
    variants = [Variant(peer.name, peer_worker, peer.name)]
    if peer.name == "schnetpack":
        variants.append(Variant("schnetpack 1 call", peer_worker, peer.name,
                                {"one_call": True}, optional=True))
    if peer.name == "nequip" and nequip_aoti:
        variants.append(Variant("nequip aoti", peer_worker, peer.name, {"aoti": True},
                                optional=True))
    variants += [Variant(f"ours skin {skin:g}", ours, f"ours-{peer.architecture}",
                         {"skin": skin}) for skin in OUR_SKINS]
    if our_compiled:
        variants.append(Variant("ours compiled", ours, f"ours-{peer.architecture}",
                                {"skin": 0.0, "compile": True}, optional=True))
    return variants


def target_of(peer: Peer, label: str) -> float:
    """The least ratio (peer ms / our ms) asked of this peer form."""
    if label == "schnetpack 1 call" and peer.one_call_target is not None:
        return peer.one_call_target
    return peer.target


def result_rows(peer: Peer, variants: list[Variant], atoms: int, dtype: str) -> list[dict]:
    """One row per peer variant: its ms, ours in each form, ratios, and the verdict, judged
    on our fastest judged form (eager or compiled, both with a fresh list every call)."""
    ours = {v.label: v for v in variants if v.model.startswith("ours-")}
    ours0, ours05 = ours["ours skin 0"], ours["ours skin 0.5"]
    compiled = ours.get("ours compiled")
    best = min((ours[label] for label in OURS_JUDGED if label in ours), key=lambda v: v.ms)
    rows = []
    for v in variants:
        if v.model.startswith("ours-"):
            continue
        target = target_of(peer, v.label)
        ratio = v.ms / best.ms
        rows.append({
            "peer": v.label, "architecture": peer.architecture, "atoms": atoms, "dtype": dtype,
            "peer_ms": v.ms, "ours_ms_skin0": ours0.ms, "ours_ms_skin05": ours05.ms,
            "ours_ms_compiled": compiled.ms if compiled else math.nan,
            "ratio_skin0": v.ms / ours0.ms, "ratio_skin05": v.ms / ours05.ms,
            "ratio_compiled": v.ms / compiled.ms if compiled else math.nan,
            "ratio": ratio, "judged_on": best.label,
            "target": target if v.judged else None,
            "met": ratio >= target if v.judged else None,
            "peer_parameters": v.setup["parameters"],
            "ours_parameters": ours0.setup["parameters"],
            "peer_settings": v.setup["settings"], "ours_settings": ours0.setup["settings"],
            "rounds_ms": {"peer": v.rounds_ms, **{k: o.rounds_ms for k, o in ours.items()}},
            "calls_per_round": {"peer": v.repeats, **{k: o.repeats for k, o in ours.items()}},
        })
    return rows


def print_row(row: dict) -> None:
    """One table line: times in ms, ratios peer / ours, verdict."""
    mark = {True: "ok", False: "MISSED", None: "(info)"}[row["met"]]
    target = f">={row['target']:.1f}" if row["target"] else ""
    print(f"{row['peer']:18s} {row['architecture']:7s} {row['atoms']:5d} {row['dtype']:8s} "
          f"{row['peer_ms']:9.1f} {row['ours_ms_skin0']:9.1f} {row['ours_ms_skin05']:9.1f} "
          f"{row['ours_ms_compiled']:9.1f} {row['ratio_skin0']:7.2f} "
          f"{row['ratio_compiled']:7.2f}  {target:5s} {mark}", flush=True)


HEADER = (f"{'peer':18s} {'arch':7s} {'atoms':>5s} {'dtype':8s} {'peer ms':>9s} "
          f"{'ours s0':>9s} {'ours s.5':>9s} {'ours aot':>9s} {'ratio0':>7s} {'ratioaot':>7s}"
          f"  target")


# ---------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", action="store_true",
                        help="(re)create the side environments before measuring")
    parser.add_argument("--setup-only", action="store_true", help="install, measure nothing")
    parser.add_argument("--sizes", type=int, nargs="+", default=[108, 1372],
                        help=f"atoms per cell, each 4 k^3: {sorted(K_OF_ATOMS)}")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every worker")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-round-s", type=float, default=0.5,
                        help="least duration of one round, s (sets calls per round)")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--no-nequip-aoti", dest="nequip_aoti", action="store_false",
                        help="skip nequip compiled with AOTInductor (its recommended form, "
                             "which costs a minute or two of compilation per dtype)")
    parser.add_argument("--no-our-compiled", dest="our_compiled", action="store_false",
                        help="skip ours compiled ahead of time (compile=True; the first run "
                             "compiles each model and dtype, later runs load the cache)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args(argv)
    bad = [n for n in args.sizes if n not in K_OF_ATOMS]
    if bad:
        parser.error(f"sizes must be 4 k^3 atoms (fcc cubic cell repeated k times): {bad}")
    return args


def prepare_peers(args: argparse.Namespace) -> tuple[list[Peer], dict[str, str]]:
    """The peers ready to run, and the reason for each one that is not."""
    ready, skipped = [], {}
    for name in args.peers:
        peer = PEERS[name]
        reason = ensure_peer(peer, args.setup or args.setup_only)
        if reason is None:
            ready.append(peer)
        else:
            skipped[name] = reason
            print(f"[setup] {name}: SKIPPED: {reason}", flush=True)
    return ready, skipped


def run_peer(peer: Peer, ours: WorkerProcess, args: argparse.Namespace,
             versions: dict, skipped: dict) -> list[dict]:
    """Every size and dtype for one peer; on a failure the peer is skipped with the reason."""
    worker = WorkerProcess(peer.name, env_python(peer), args.threads)
    rows: list[dict] = []
    try:
        versions[peer.name] = worker.ask(cmd="versions")["versions"]
        for atoms in args.sizes:
            for dtype in args.dtypes:
                variants = peer_variants(peer, worker, ours, args.nequip_aoti,
                                         args.our_compiled)
                failed = measure(variants, K_OF_ATOMS[atoms], dtype, args)
                skipped.update({f"{label} ({atoms} atoms, {dtype})": reason
                                for label, reason in failed.items()})
                for row in result_rows(peer, variants, atoms, dtype):
                    print_row(row)
                    rows.append(row)
    except WorkerError as error:
        skipped[peer.name] = str(error)
        print(f"{peer.name}: SKIPPED: {error}", flush=True)
    finally:
        worker.close()
    return rows


def report(rows: list[dict], skipped: dict[str, str]) -> list[str]:
    """Print the verdict; return the missed targets."""
    missed = [f"{r['peer']} {r['atoms']} atoms {r['dtype']}: ratio {r['ratio']:.2f} "
              f"({r['judged_on']}) < {r['target']}" for r in rows if r["met"] is False]
    print()
    for name, reason in skipped.items():
        print(f"SKIPPED {name}: {reason}")
    for line in missed:
        print(f"MISSED {line}")
    judged = sum(r["met"] is not None for r in rows)
    print(f"{judged - len(missed)}/{judged} targets met (ratio = peer ms / our ms, our faster "
          f"of eager and compiled, fresh list every call)")
    return missed


def write_json(args: argparse.Namespace, versions: dict, skipped: dict[str, str],
               missed: list[str], rows: list[dict]) -> None:
    """Every number, the settings, the machine and the packages' versions."""
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"node": platform.node(), "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count()},
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "peers": {name: asdict(p) for name, p in PEERS.items() if name in args.peers},
        "versions": versions, "skipped": skipped, "missed": missed, "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    peers, skipped = prepare_peers(args)
    if args.setup_only:
        return 0
    import torch  # only for the record: the main environment's versions

    print(f"{platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} threads per worker, torch {torch.__version__}")
    ours = WorkerProcess("ours", sys.executable, args.threads)
    versions: dict[str, Any] = {"ours": ours.ask(cmd="versions")["versions"]}
    rows: list[dict] = []
    print(HEADER, flush=True)
    try:
        for peer in peers:
            rows += run_peer(peer, ours, args, versions, skipped)
    finally:
        ours.close()
    missed = report(rows, skipped)
    if args.json:
        write_json(args, versions, skipped, missed, rows)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
