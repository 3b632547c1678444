"""i-PI: ``ase-mpnn serve`` as an i-PI client (``ase_mpnn.integrations.ipi``).

The client is checked against two servers: ASE's own SocketIOCalculator (in this process,
fast, no i-PI needed) and the real i-PI engine (its ``i-pi`` script, skipped without the
``ipi`` package) running NVE and 4-bead path-integral NVT over a UNIX socket. Energies i-PI
prints are compared with MPNNCalculator called directly on the frames i-PI wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.socketio import SocketIOCalculator
from ase.io import read, write
from ase.units import Hartree, kB

from ase_mpnn import MPNNCalculator
from ase_mpnn.cli import main
from ase_mpnn.integrations.ipi import parse_inet, run_ipi, serve
from ase_mpnn.integrations.ipi_input import dynamics, ipi_input

from .conftest import cu_fcc

MODEL = "emt-cuni-schnet"
FLOAT64 = {"device": "cpu", "dtype": "float64"}
#: i-PI writes energies with 9 significant digits and positions (extxyz) to 1e-8 A
ENERGY_TOLERANCE_EV = 1e-6
#: an i-PI run that takes longer than this is killed and the test fails
IPI_TIMEOUT_S = 240


def socket_name() -> str:
    """A UNIX socket name no other test (or test process) uses."""
    return f"asempnn-test-{uuid.uuid4().hex[:12]}"


def direct_energies(frames) -> np.ndarray:
    """Potential energies (eV) of ``frames`` from MPNNCalculator itself, float64."""
    calculator = MPNNCalculator(MODEL, **FLOAT64)
    return np.array([calculator.get_potential_energy(frame) for frame in frames])


# -- the client against ASE's socket server (no i-PI needed) ------------------------------

def test_serve_answers_ase_socket_server_and_exits():
    atoms = cu_fcc(repeat=2, nickel_every=5, rattle=0.05)
    name = socket_name()
    client_calc = MPNNCalculator(MODEL, skin=0.5, **FLOAT64)
    outcome = {}
    client = threading.Thread(target=lambda: outcome.update(
        summary=serve(atoms, client_calc, unix=name, connect_timeout_s=30)), daemon=True)
    client.start()
    reference = MPNNCalculator(MODEL, **FLOAT64)
    steps = []
    with SocketIOCalculator(unixsocket=name) as server:
        moving = atoms.copy()
        for step in range(5):
            moving.positions += 0.01 * np.sin(np.arange(moving.positions.size) + step
                                              ).reshape(-1, 3)
            moving.calc = server
            steps.append((moving.get_potential_energy(), moving.get_forces(),
                          moving.get_stress(), moving.copy()))
    client.join(timeout=30)
    assert not client.is_alive(), "the client did not return after the server closed"
    for energy, forces, stress, frame in steps:
        frame.calc = reference
        assert energy == pytest.approx(frame.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(forces, frame.get_forces(), atol=1e-9)
        np.testing.assert_allclose(stress, frame.get_stress(), atol=1e-10)
    summary = outcome["summary"]
    assert summary.evaluations == 5 and summary.ended_by == "exit"
    assert summary.neighbor_list_builds == 1  # 0.05 A moves stay inside the 0.5 A skin


def test_serve_refuses_another_atom_count():
    """i-PI sending more atoms than the structure has is a clear error, not a crash."""
    name = socket_name()
    errors = []

    def run_client():
        try:
            serve(cu_fcc(), MPNNCalculator(MODEL, **FLOAT64), unix=name, connect_timeout_s=30)
        except Exception as exc:  # noqa: BLE001 - recorded and checked below
            errors.append(exc)

    client = threading.Thread(target=run_client, daemon=True)
    client.start()
    with SocketIOCalculator(unixsocket=name) as server:
        atoms = cu_fcc(repeat=2)
        atoms.calc = server
        with pytest.raises(Exception):  # noqa: B017 - the server sees a closed socket
            atoms.get_potential_energy()
    client.join(timeout=30)
    assert len(errors) == 1 and "i-PI sent 32 atoms" in str(errors[0])
    assert "has 4" in str(errors[0])


def test_serve_cli_bad_input(tmp_path, capsys):
    structure = tmp_path / "au.xyz"
    write(structure, cu_fcc().copy())
    with pytest.raises(SystemExit) as parse_error:
        main(["serve", "--model", MODEL, "--structure", str(structure), "--inet", "localhost"])
    assert parse_error.value.code == 2
    assert "HOST:PORT" in capsys.readouterr().err
    atoms = cu_fcc()
    atoms.symbols[0] = "Au"
    write(structure, atoms)
    assert main(["serve", "--model", MODEL, "--structure", str(structure),
                 "--unix", socket_name()]) == 2
    assert "Au, which the model does not cover" in capsys.readouterr().err
    write(structure, cu_fcc())
    assert main(["serve", "--model", MODEL, "--structure", str(structure),
                 "--unix", socket_name(), "--connect-timeout", "0.3"]) == 2
    assert "no i-PI server at UNIX socket" in capsys.readouterr().err


def test_parse_inet():
    assert parse_inet("localhost:31415") == ("localhost", 31415)
    assert parse_inet("::1:31415") == ("::1", 31415)
    for bad in ("localhost", ":31415", "host:0", "host:70000", "host:port"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_inet(bad)


# -- the real i-PI engine ------------------------------------------------------------------

def cu_input(name: str, steps: int, motion: str, nbeads: int = 1,
             temperature_K: float = 300.0, trajectory_stride: int = 1) -> str:
    """An i-PI input: Cu from init.extxyz, one UNIX-socket force field, outputs in atomic
    units (sim.out) and positions in Angstrom by ASE's constants (sim.pos_<bead>.extxyz)."""
    return ipi_input(name, steps=steps, motion=motion, nbeads=nbeads,
                     temperature_K=temperature_K, trajectory_stride=trajectory_stride,
                     properties=["step", "conserved", "potential", "kinetic_cv",
                                 "kinetic_td", "temperature{kelvin}"],
                     seed=20240601, timeout_s=120)


def run_engine(tmp_path, atoms, **xml) -> tuple[dict[str, np.ndarray], object]:
    """Run i-PI with an ``ase-mpnn serve`` client (float64); its properties by column."""
    pytest.importorskip("ipi", reason="the i-PI engine: pip install 'ase-mpnn[ipi]'")
    write(tmp_path / "init.extxyz", atoms, format="extxyz")
    name = socket_name()
    (tmp_path / "input.xml").write_text(cu_input(name, **xml))
    run = run_ipi(tmp_path / "input.xml", model=MODEL, structure=tmp_path / "init.extxyz",
                  unix=name, cwd=tmp_path, dtype="float64", timeout_s=IPI_TIMEOUT_S).check()
    table = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    columns = ["step", "conserved", "potential", "kinetic_cv", "kinetic_td", "temperature"]
    return dict(zip(columns, table.T)), run


NVE = dynamics("nve", timestep_fs=2)


@pytest.mark.slow
def test_ipi_nve_energies_equal_the_calculator(tmp_path):
    atoms = cu_fcc(repeat=2, nickel_every=4, rattle=0.05)
    properties, run = run_engine(tmp_path, atoms, steps=20, motion=NVE)
    assert run.client_returncode == 0 and "Traceback" not in run.client_output
    assert "run ended by i-PI (exit)" in run.client_output
    frames = read(tmp_path / "sim.pos_0.extxyz", ":")
    assert len(frames) == len(properties["step"]) == 21  # step 0 and 20 steps
    for frame in frames:  # i-PI may rotate the cell into its own frame: any frame will do
        frame.symbols = atoms.symbols
    ipi_ev = properties["potential"] * Hartree
    np.testing.assert_allclose(ipi_ev, direct_energies(frames), rtol=1e-6,
                               atol=ENERGY_TOLERANCE_EV)
    assert np.ptp(ipi_ev) > 1e-3  # the atoms moved: the frames really differ
    # forces are what drive the atoms: the conserved energy stays within 1 meV
    assert np.ptp(properties["conserved"] * Hartree) < 1e-3


@pytest.mark.slow
def test_ipi_path_integral_nvt_kinetic_energy(tmp_path):
    """4-bead PIMD with the PILE-L thermostat (Ceriotti et al., J. Chem. Phys. 133, 124104
    (2010)) at 100 K, below Cu's Debye temperature (~343 K).

    The centroid-virial estimator is 3/2 N k T plus (1/2P) sum_b (q_b - q_c) . grad V(q_b);
    in a harmonic crystal the second term is a quadratic form of the bead displacements in
    the Hessian, so it is >= 0 at every step. A P-bead estimate of a harmonic mode of
    frequency w stays below (hbar w / 4) coth(hbar w / 2 k T) per degree of freedom,
    < 1.9 times classical for the top of Cu's phonon band (~30 meV) at 100 K.
    """
    atoms = cu_fcc(repeat=2)
    temperature = 100.0
    motion = dynamics("nvt", timestep_fs=1, thermostat_tau_fs=100)
    properties, run = run_engine(tmp_path, atoms, steps=60, motion=motion, nbeads=4,
                                 temperature_K=temperature, trajectory_stride=20)
    assert run.client_returncode == 0 and "run ended by i-PI (exit)" in run.client_output
    assert "244 force evaluations" in run.client_output  # 4 beads at step 0 and 60 steps
    for key in ("potential", "kinetic_cv", "kinetic_td", "temperature"):
        assert np.isfinite(properties[key]).all(), key
    classical = 1.5 * len(atoms) * kB * temperature  # eV
    cv = properties["kinetic_cv"][20:] * Hartree  # after the ring polymers spread
    assert (cv > classical).all()
    assert cv.mean() < 1.9 * classical
    # i-PI's potential is the bead average: the calculator on the four bead frames agrees
    beads = [read(tmp_path / f"sim.pos_{bead}.extxyz", ":") for bead in range(4)]
    for frame in (frame for frames in beads for frame in frames):
        frame.symbols = atoms.symbols
    bead_mean = np.mean([direct_energies(frames) for frames in beads], axis=0)
    written = properties["potential"][::20] * Hartree
    np.testing.assert_allclose(written, bead_mean, rtol=1e-6, atol=ENERGY_TOLERANCE_EV)


@pytest.mark.slow
def test_ipi_engine_that_dies_does_not_hang(tmp_path):
    """i-PI failing on its input: the client exits by itself, run_ipi reports both."""
    pytest.importorskip("ipi", reason="the i-PI engine: pip install 'ase-mpnn[ipi]'")
    write(tmp_path / "init.extxyz", cu_fcc(), format="extxyz")
    name = socket_name()
    bad = cu_input(name, steps=5, motion="<dynamics mode='no-such-mode'/>")
    (tmp_path / "input.xml").write_text(bad)
    run = run_ipi(tmp_path / "input.xml", model=MODEL, structure=tmp_path / "init.extxyz",
                  unix=name, cwd=tmp_path, timeout_s=IPI_TIMEOUT_S,
                  client_args=["--connect-timeout", "2"])
    assert run.ipi_returncode != 0
    assert run.client_returncode != 0  # it gave up connecting, or run_ipi killed it
    with pytest.raises(RuntimeError, match="i-PI exited"):
        run.check()



@pytest.mark.slow
def test_pimd_workflow_runs(tmp_path):
    pytest.importorskip("ipi", reason="the i-PI engine: pip install 'ase-mpnn[ipi]'")
    script = Path(__file__).resolve().parents[1] / "workflows" / "pimd_ipi.py"
    subprocess.run([sys.executable, str(script), "--steps", "10", "--beads", "2",
                    "--timeout", str(IPI_TIMEOUT_S), "--out", str(tmp_path)],
                   check=True, capture_output=True, text=True, timeout=2 * IPI_TIMEOUT_S + 60)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["beads"] == 2 and np.isfinite(summary["quantum_kinetic_cv_meV_per_atom"])
    assert (tmp_path / "pimd_kinetic.png").stat().st_size > 10_000
