"""Serve an ase-mpnn potential to i-PI (path-integral MD, replica exchange, ...).

i-PI (Litman et al., J. Chem. Phys. 161, 062504 (2024), https://ipi-code.org) drives the
nuclear motion and asks its force-field clients for energies, forces and virials over a
UNIX or TCP socket. :func:`serve` is such a client: ASE's
:class:`ase.calculators.socketio.SocketClient` (the i-PI wire protocol, atomic units on
the wire, eV and Angstrom on our side) around one :class:`ase_mpnn.MPNNCalculator`. The
model is loaded once and the calculator's Verlet-skin neighbour list is kept from one
request to the next (MD steps and path-integral beads alike), so a step costs one model
call plus the socket round trip.

    ase-mpnn serve --model emt-cuni-schnet --structure init.extxyz --unix cu  # the CLI
    >>> summary = serve(read("init.extxyz"), MPNNCalculator("emt-cuni-schnet"),
    ...                 unix="cu")  # doctest: +SKIP

The client needs the structure i-PI starts from (the same file its ``<initialize>``
reads) only for the chemical species and their order: i-PI sends positions and the cell at
every request, never the species. A UNIX socket named NAME is the file ``/tmp/ipi_NAME``
on both sides (i-PI's default ``sockets_prefix``).

:func:`run_ipi` starts the i-PI engine and one ``ase-mpnn serve`` client as subprocesses
and waits for both under a time limit (tests, ``workflows/pimd_ipi.py``,
``benchmarks/ipi.py``); it needs the engine, ``pip install 'ase-mpnn[ipi]'``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.socketio import SocketClient, SocketClosed

from ..errors import ASEMPNNError, UnknownElementError

__all__ = ["IPIRun", "ServeSummary", "parse_inet", "run_ipi", "serve"]

#: how long :func:`serve` keeps trying to connect while i-PI is still starting, seconds
CONNECT_TIMEOUT_S = 60.0
_RETRY_S = 0.1


class IPIProtocolError(ASEMPNNError, ValueError):
    """i-PI asked for something the structure given to the client cannot answer."""


@dataclass
class ServeSummary:
    """What one :func:`serve` session did.

    Attributes:
        evaluations: force evaluations answered (MD steps times beads, roughly).
        seconds: wall time from connection to the end of the run, s.
        neighbor_list_builds: Verlet lists built; the rest of the evaluations reused one.
        ended_by: "exit" (i-PI sent EXIT, or closed the socket between two messages, which
            ASE's client takes as the same) or "closed" (the connection broke mid-message).
            A client cannot tell an i-PI that was killed from one that finished.
    """

    evaluations: int
    seconds: float
    neighbor_list_builds: int
    ended_by: str

    def line(self) -> str:
        """One line for a log."""
        return (f"{self.evaluations} force evaluations in {self.seconds:.1f} s; neighbour list "
                f"built {self.neighbor_list_builds} times; run ended by i-PI ({self.ended_by})")


def parse_inet(address: str) -> tuple[str, int]:
    """"HOST:PORT" -> (host, port); a bad address raises ValueError naming it."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"an i-PI TCP address is HOST:PORT, port 1-65535; got {address!r}")
    return host, int(port)


def check_species(atoms: Atoms, calculator) -> None:
    """Raise UnknownElementError when ``atoms`` holds elements the model does not know."""
    known = set(calculator.potential.species)
    missing = sorted(set(atoms.get_chemical_symbols()) - known)
    if missing:
        raise UnknownElementError(
            f"the structure holds {', '.join(missing)}, which the model does not cover "
            f"(it knows {sorted(known)})")


def serve(atoms: Atoms, calculator: Calculator, *, unix: str | None = None, host: str = "localhost",
          port: int | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S,
          use_stress: bool | None = None) -> ServeSummary:
    """Answer i-PI's force requests with ``calculator`` until i-PI ends the run.

    Args:
        atoms: the structure i-PI starts from; only its species (and their order) are
            used, i-PI sends positions (Angstrom after conversion) and the cell each time.
        calculator: an MPNNCalculator (any ASE calculator works; the neighbour-list count
            is read from ``calculator.neighbors`` when it has one).
        unix: name of a UNIX socket (``/tmp/ipi_<unix>``); else ``host``:``port`` (TCP).
        connect_timeout_s: keep retrying the connection this long while i-PI starts.
        use_stress: send the virial (-V * stress, eV) too; default: when all three
            directions are periodic.

    Returns:
        a ServeSummary. The function returns normally when i-PI sends EXIT or closes the
        connection (the end of its run); a failure of the calculator propagates.
    """
    check_species(atoms, calculator)
    atoms = atoms.copy()
    atoms.calc = calculator
    if use_stress is None:
        use_stress = bool(atoms.pbc.all())
    client = _connect(unix, host, port, connect_timeout_s)
    _check_atom_count(client, len(atoms))
    started, evaluations, ended_by = time.perf_counter(), 0, "exit"
    try:
        for _ in client.irun(atoms, use_stress=use_stress):
            evaluations += 1
    except (SocketClosed, ConnectionResetError, BrokenPipeError):
        ended_by = "closed"  # i-PI went away between two messages: its run is over
    finally:
        client.close()
    neighbors = getattr(calculator, "neighbors", None)
    return ServeSummary(evaluations, time.perf_counter() - started,
                        getattr(neighbors, "builds", -1), ended_by)


def _connect(unix: str | None, host: str, port: int | None,
             timeout_s: float) -> SocketClient:
    """A SocketClient connected to i-PI, retried while its socket does not exist yet."""
    deadline = time.monotonic() + timeout_s
    where = f"UNIX socket /tmp/ipi_{unix}" if unix else f"{host}:{port}"
    while True:
        try:
            if unix:
                return SocketClient(unixsocket=unix)
            return SocketClient(host=host, port=port)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"no i-PI server at {where} after {timeout_s:g} s ({exc.strerror}); start "
                    "i-PI first, with the same socket in its <ffsocket>") from None
            time.sleep(_RETRY_S)


def _check_atom_count(client: SocketClient, n_atoms: int) -> None:
    """Make the client refuse, with a clear error, positions of another number of atoms."""
    receive = client.protocol.recvposdata

    def checked_recvposdata():
        cell, inverse, positions = receive()
        if len(positions) != n_atoms:
            raise IPIProtocolError(
                f"i-PI sent {len(positions)} atoms but the structure given to the client has "
                f"{n_atoms}: give `ase-mpnn serve --structure` the file i-PI initialises from")
        return cell, inverse, positions

    client.protocol.recvposdata = checked_recvposdata


# -- running the engine and a client together ------------------------------------------------

@dataclass
class IPIRun:
    """The outcome of :func:`run_ipi`: exit statuses and the text each process printed."""

    ipi_returncode: int
    client_returncode: int
    ipi_output: str
    client_output: str
    seconds: float

    def check(self) -> "IPIRun":
        """Raise RuntimeError, with both outputs' tails, unless both exited with status 0."""
        if self.ipi_returncode or self.client_returncode:
            raise RuntimeError(
                f"i-PI exited {self.ipi_returncode}, the client {self.client_returncode}\n"
                f"--- i-PI:\n{self.ipi_output[-3000:]}\n--- client:\n{self.client_output[-3000:]}")
        return self


def ipi_command() -> list[str]:
    """The command that starts the i-PI engine (its ``i-pi`` script beside this Python)."""
    script = Path(sys.executable).parent / "i-pi"
    found = str(script) if script.is_file() else shutil.which("i-pi")
    if found is None:
        raise ImportError("the i-PI engine (the `i-pi` command) is not installed: "
                          "pip install 'ase-mpnn[ipi]'")
    return [sys.executable, found]


def run_ipi(input_xml: str | Path, *, model: str, structure: str | Path, unix: str,
            cwd: str | Path, dtype: str = "float32", device: str = "cpu",
            skin: float | None = None, timeout_s: float = 300.0,
            client_args: Sequence[str] = ()) -> IPIRun:
    """Run ``i-pi input_xml`` in ``cwd`` with one ``ase-mpnn serve`` client on socket ``unix``.

    The XML must declare ``<ffsocket mode='unix'><address>unix</address>``. Both processes
    are killed when they are not done after ``timeout_s`` seconds (TimeoutError, with what
    they printed so far), so a hung engine never hangs the caller.
    """
    cwd = Path(cwd)
    _clear_stale_socket(unix)
    client = [sys.executable, "-m", "ase_mpnn.cli", "serve", "--model", str(model),
              "--structure", str(Path(structure).resolve()), "--unix", unix,
              "--dtype", dtype, "--device", device, *client_args]
    if skin is not None:
        client += ["--skin", str(skin)]
    started = time.perf_counter()
    ipi_log, client_log = open(cwd / "ipi.log", "w+"), open(cwd / "client.log", "w+")
    with ipi_log, client_log:
        engine = subprocess.Popen([*ipi_command(), str(Path(input_xml).resolve())], cwd=cwd,
                                  stdout=ipi_log, stderr=subprocess.STDOUT)
        driver = subprocess.Popen(client, cwd=cwd, stdout=client_log, stderr=subprocess.STDOUT)
        codes = _wait_all([engine, driver], started + timeout_s)
        ipi_log.seek(0)
        client_log.seek(0)
        outputs = ipi_log.read(), client_log.read()
    if codes is None:
        raise TimeoutError(f"i-PI and its client were not done after {timeout_s:g} s and were "
                           f"killed\n--- i-PI:\n{outputs[0][-3000:]}\n--- client:\n"
                           f"{outputs[1][-3000:]}")
    return IPIRun(*codes, *outputs, seconds=time.perf_counter() - started)


def _clear_stale_socket(unix: str) -> None:
    """Remove ``/tmp/ipi_<unix>`` left by an i-PI that died (nothing listens on it; i-PI
    would refuse to start); raise FileExistsError when a live server holds it."""
    path = Path(f"/tmp/ipi_{unix}")
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return
    raise FileExistsError(f"another i-PI is serving on {path}: choose another socket name")


def _wait_all(processes: list[subprocess.Popen], deadline: float) -> list[int] | None:
    """Exit statuses of all ``processes``, or None when they were not all done by
    ``deadline`` (all killed then). When one fails, the others get 10 s more to end (a
    client whose engine died, or an engine whose client died, may wait forever) and are
    then killed: their status is negative."""
    timed_out = True
    while time.perf_counter() < deadline:
        codes = [process.poll() for process in processes]
        if all(code is not None for code in codes):
            return codes
        if any(codes) and timed_out:  # one failed: the other gets a last moment
            deadline, timed_out = min(deadline, time.perf_counter() + 10.0), False
        time.sleep(0.05)
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    return None if timed_out else [process.returncode for process in processes]
