"""Compiled models (``ase-mpnn compile``, ``ase_mpnn.compiled``) against the eager ones.

Each compilation takes 20 s to two minutes on one CPU core, so there are three, one per
module-scoped fixture: SchNet in float64 (through the command line) and float32, MACE in
float64. The reference is the eager potential of the same model file. The neighbour-matrix
path for features that are not scalars (NequIP, MACE with l > 0) is checked under a
whole-program trace without compiling (tests/test_layout_inputs.py,
tests/test_paired_gather.py): compiling one more model here would take CI over its time.
"""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111

from ase_mpnn import MPNNCalculator, compiled_cache
from ase_mpnn.cli import main
from ase_mpnn.compiled import (
    COMPILED_MANIFEST,
    CompiledPotential,
    compile_potential,
    read_compiled_manifest,
)
from ase_mpnn.compiled_cache import CompiledWithEagerTwin
from ase_mpnn.errors import ModelFileError
from ase_mpnn.loading import load

# compiling runs g++ on both cores for tens of seconds: on the same xdist worker as the
# Dask tests (make test: --dist loadgroup), whose kill-and-recover timings it would starve
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cpu-heavy")]

#: (model, dtype) -> absolute tolerances (energy eV, forces eV/A, stress eV/A^3)
TOLERANCES = {"float64": (1e-10, 1e-10, 1e-10), "float32": (2e-4, 2e-5, 2e-6)}


@pytest.fixture(scope="module")
def schnet64(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "schnet64.pt2"
    assert main(["compile", "emt-cuni-schnet", "-o", str(path), "--dtype", "float64"]) == 0
    return "emt-cuni-schnet", "float64", path


def _compiled(tmp_path_factory, name: str, dtype: str):
    path = tmp_path_factory.mktemp("compiled") / f"{name}-{dtype}.pt2"
    loaded = load(name, "cpu", dtype)
    compile_potential(loaded.potential, path, model_name=loaded.name,
                      model_sha256=loaded.sha256)
    return name, dtype, path


@pytest.fixture(scope="module")
def schnet32(tmp_path_factory):
    return _compiled(tmp_path_factory, "emt-cuni-schnet", "float32")


@pytest.fixture(scope="module")
def mace64(tmp_path_factory):
    return _compiled(tmp_path_factory, "emt-cuni-mace", "float64")


def structures() -> dict[str, Atoms]:
    """Bulk (108 atoms), slab, molecule, triclinic cell and a one-atom cell of Cu-Ni."""
    cell = bulk("Cu", "fcc", 3.6, cubic=True).repeat(3)
    cell.numbers[::3] = 28
    cell.rattle(0.05, seed=1)
    slab = fcc111("Ni", (3, 3, 3), vacuum=6.0, periodic=True)
    slab.pbc = [True, True, False]
    slab.rattle(0.03, seed=2)
    cluster = Atoms("Cu4Ni", positions=[[0, 0, 0], [2.4, 0, 0], [0, 2.4, 0], [0, 0, 2.4],
                                        [1.3, 1.3, 1.3]])
    triclinic = bulk("Cu", "fcc", 3.6).repeat((2, 3, 2))
    triclinic.set_cell(triclinic.cell[:] + [[0.2, 0.1, 0], [0, 0.3, 0.2], [0.1, 0, 0.1]],
                       scale_atoms=True)
    triclinic.numbers[1::4] = 28
    triclinic.rattle(0.04, seed=3)
    return {"bulk": cell, "slab": slab, "molecule": cluster, "triclinic": triclinic,
            "one atom": bulk("Ni", "fcc", 3.52)}


def _results(calc: MPNNCalculator, atoms: Atoms) -> dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    properties = ["energy", "energies", "forces"] + (["stress"] if atoms.pbc.all() else [])
    calc.calculate(atoms, properties)
    return {name: np.asarray(calc.results[name]) for name in properties}


@pytest.mark.parametrize("compiled", ["schnet64", "schnet32", "mace64"])
def test_compiled_equals_eager(compiled, request):
    """Energies, per-atom energies, forces and stress of every structure, each evaluated
    twice (the second time moved, so that the Verlet-skin list is reused), through one
    compiled file: the eager model's to the tolerance of the dtype."""
    name, dtype, path = request.getfixturevalue(compiled)
    eager = MPNNCalculator(name, dtype=dtype, device="cpu")
    fast = MPNNCalculator(str(path), dtype=dtype, device="cpu")
    assert fast.neighbors.skin > 0
    e_tol, f_tol, s_tol = TOLERANCES[dtype]
    tolerance = {"energy": e_tol, "energies": e_tol, "forces": f_tol, "stress": s_tol}
    for label, atoms in structures().items():
        for step in range(2):
            atoms.positions += 0.03 * step
            want, got = _results(eager, atoms), _results(fast, atoms)
            assert set(got) == set(want)
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=0, atol=tolerance[key],
                                           err_msg=f"{compiled} {label} step {step} {key}")


@pytest.mark.parametrize("model", ["mace64", "schnet64"])
def test_each_program_of_a_file_equals_eager(model, request):
    """A MACE or SchNet file holds two programs, the edge layout and the neighbour-matrix
    layout; each, forced on every structure (the slab's and the molecule's padding
    included), gives the eager energies, forces and stress; the calculator picks the
    slotted one for a bulk cell. SchNet sums its filters on the matrix."""
    from ase_mpnn import keys
    from ase_mpnn.graph import build_graph

    name, dtype, path = request.getfixturevalue(model)
    eager = load(name, "cpu", dtype).potential
    compiled = CompiledPotential(path)
    assert set(compiled.programs) == {"model", "slots"}
    assert set(read_compiled_manifest(path)["programs"]) == {"model", "slots"}
    for label, atoms in structures().items():
        graph = build_graph(atoms, compiled.cutoff, compiled.species, dtype=torch.float64)
        periodic = bool(atoms.pbc.all())
        want = eager(graph, forces=True, stress=periodic)
        programs = ["model", "slots"] if graph[keys.EDGE_INDEX].shape[1] else ["model"]
        for program in programs:
            got = compiled(graph, forces=True, stress=periodic, program=program)
            for key in (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES) + (
                    (keys.STRESS,) if periodic else ()):
                torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-10,
                                           msg=f"{label} {program} {key}")
    bulk_graph = build_graph(structures()["bulk"], compiled.cutoff, compiled.species,
                             dtype=torch.float64)
    assert compiled._program_for(bulk_graph)[0] == "slots"
    with pytest.raises(ValueError, match="no program 'other'"):
        compiled(bulk_graph, program="other")


def test_a_list_missing_a_reverse_runs_on_the_edges(mace64):
    """The neighbour-matrix program reads each row's reverse (ase_mpnn.nn.paired_gather):
    a list without every reverse (e.g. a LAMMPS-style partial one) goes to the edge
    program, gives the eager results there, and is refused by the other by name."""
    from ase_mpnn import keys
    from ase_mpnn.graph import build_graph

    name, dtype, path = mace64
    eager = load(name, "cpu", dtype).potential
    compiled = CompiledPotential(path)
    graph = build_graph(structures()["bulk"], compiled.cutoff, compiled.species,
                        dtype=torch.float64)
    keep = torch.arange(1, graph[keys.EDGE_INDEX].shape[1])
    graph[keys.EDGE_INDEX] = graph[keys.EDGE_INDEX][:, keep]
    graph[keys.CELL_SHIFTS] = graph[keys.CELL_SHIFTS][keep]
    assert compiled._program_for(graph)[0] == "model"
    with pytest.raises(ValueError, match="needs a full neighbour list"):
        compiled(graph, program="slots")
    want = eager(graph, forces=True, stress=True)
    got = compiled(graph, forces=True, stress=True)
    for key in (keys.ENERGY, keys.FORCES, keys.STRESS):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-10, msg=key)


def test_batch_of_structures(schnet64):
    """Several structures in one call (a batch of graphs) equal the eager batch."""
    name, dtype, path = schnet64
    batch = [atoms for atoms in structures().values()]
    want = MPNNCalculator(name, dtype=dtype, device="cpu").calculate_batch(batch)
    got = MPNNCalculator(str(path), dtype=dtype, device="cpu").calculate_batch(batch)
    for a, b in zip(want, got):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-10)


def test_manifest_round_trip(schnet64):
    """The manifest records torch, device and dtype, and the model file's own manifest."""
    name, dtype, path = schnet64
    manifest = read_compiled_manifest(path)
    loaded = load(name, "cpu", dtype)
    assert manifest["torch_version"] == torch.__version__
    assert (manifest["device"], manifest["dtype"]) == ("cpu", "float64")
    assert manifest["model_sha256"] == loaded.sha256
    assert manifest["model"] == loaded.potential.manifest
    compiled = CompiledPotential(path)
    assert compiled.species == loaded.potential.species
    assert compiled.cutoff == loaded.potential.cutoff
    assert compiled.architecture == loaded.potential.architecture


def _edited_copy(path, target, **changes):
    """A copy of a compiled file whose manifest has ``changes`` applied."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as copy:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/" + COMPILED_MANIFEST):
                data = json.dumps({**json.loads(data), **changes}).encode()
            copy.writestr(info, data)
    return target


def test_other_torch_version_is_refused(schnet64, tmp_path):
    path = _edited_copy(schnet64[2], tmp_path / "old.pt2", torch_version="2.0.0")
    expected = re.escape(f"compiled with torch 2.0.0, this is torch {torch.__version__}")
    with pytest.raises(ModelFileError, match=expected):
        MPNNCalculator(str(path), dtype="float64")


def test_other_device_is_refused(schnet64, tmp_path):
    path = _edited_copy(schnet64[2], tmp_path / "gpu.pt2", device="cuda")
    with pytest.raises(ModelFileError, match="compiled for device 'cuda', asked to run on "
                                             "'cpu'"):
        MPNNCalculator(str(path), dtype="float64", device="cpu")


def test_other_dtype_is_refused(schnet64):
    with pytest.raises(ModelFileError, match="compiled for float64, asked for float32"):
        MPNNCalculator(str(schnet64[2]), dtype="float32")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no manifest"])
def test_damaged_file_is_refused(schnet64, tmp_path, damage):
    path = tmp_path / "damaged.pt2"
    data = schnet64[2].read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip archive" * 100)
    else:
        with zipfile.ZipFile(schnet64[2]) as source, zipfile.ZipFile(path, "w") as copy:
            for info in source.infolist():
                if not info.filename.endswith(COMPILED_MANIFEST):
                    copy.writestr(info, source.read(info))
    with pytest.raises(ModelFileError, match="damaged.pt2"):
        MPNNCalculator(str(path), dtype="float64")


def test_per_atom_stresses_are_not_offered(schnet64):
    calc = MPNNCalculator(str(schnet64[2]), dtype="float64")
    assert "stresses" not in calc.implemented_properties
    atoms = bulk("Cu", "fcc", 3.6, cubic=True)
    atoms.calc = calc
    assert np.isfinite(atoms.get_stress()).all()


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """An empty compiled-model cache folder (ASE_MPNN_CACHE) for this module's tests."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASE_MPNN_CACHE", str(folder))
        yield folder


def test_compile_true_compiles_once_into_the_cache_and_equals_eager(compile_cache,
                                                                   monkeypatch):
    """compile=True compiles ahead of time on first use, loads the cached file after, and
    gives the eager model's energies, forces, stress, Hessian and per-atom stresses."""
    first = MPNNCalculator("emt-cuni-schnet", dtype="float64", device="cpu", compile=True)
    assert isinstance(first.potential, CompiledWithEagerTwin)
    assert len(list((compile_cache / "compiled").glob("*.pt2"))) == 1
    monkeypatch.setattr(compiled_cache, "compile_checked",
                        lambda *args, **kwargs: pytest.fail("compiled a cached model again"))
    fast = MPNNCalculator("emt-cuni-schnet", dtype="float64", device="cpu", compile=True)
    eager = MPNNCalculator("emt-cuni-schnet", dtype="float64", device="cpu")
    for label, atoms in structures().items():
        want, got = _results(eager, atoms), _results(fast, atoms)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-10,
                                       err_msg=f"{label} {key}")
    atoms = structures()["triclinic"]
    np.testing.assert_allclose(fast.get_hessian(atoms), eager.get_hessian(atoms), rtol=0,
                               atol=1e-10)
    fast.calculate(atoms, ["stresses"])
    eager.calculate(atoms, ["stresses"])
    np.testing.assert_allclose(fast.results["stresses"], eager.results["stresses"], rtol=0,
                               atol=1e-10)


@pytest.mark.parametrize("options", [{"model": "emt-cuni-schnet-committee"},
                                     {"model": "xtb-chno-schnet-charge"},
                                     {"model": "emt-cuni-schnet", "dispersion": "pbe"}])
def test_compile_true_falls_back_to_torch_compile_where_aot_cannot(compile_cache, options):
    """A committee, a charge model and a model with D3 added compile their model with
    torch.compile (at the first call) and write nothing to the cache."""
    before = sorted(compile_cache.rglob("*.pt2"))
    calc = MPNNCalculator(**options, device="cpu", compile=True)
    assert not isinstance(calc.potential, CompiledWithEagerTwin)
    assert sorted(compile_cache.rglob("*.pt2")) == before


def test_a_program_that_fails_its_check_is_refused(schnet64, tmp_path, monkeypatch):
    """The check runs a program in a child and compares it with the eager model: one that
    kills its process, or gives other numbers, is refused (torch 2.13's AOTInductor
    corrupts the heap running a NequIP of 4 features on most runs here); compile=True then
    falls back to torch.compile with a warning that says why."""
    import copy

    from ase_mpnn.compiled_check import CompiledCheckError, check_compiled

    name, dtype, path = schnet64
    eager = load(name, "cpu", dtype).potential
    check_compiled(path, eager)  # the real program passes
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CompiledCheckError, match="crashed on its first calls"):
        check_compiled(broken, eager)
    other = copy.deepcopy(eager)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(CompiledCheckError, match="differs from the eager model's"):
        check_compiled(path, other)

    def fails_its_check(*args, **kwargs):
        raise CompiledCheckError("the compiled program crashed on its first calls")

    monkeypatch.setattr(compiled_cache, "compile_checked", fails_its_check)
    monkeypatch.setenv("ASE_MPNN_CACHE", str(tmp_path / "empty-cache"))
    with pytest.warns(RuntimeWarning, match="crashed.*torch.compile instead"):
        calc = MPNNCalculator(name, device="cpu", dtype=dtype, compile=True)
    assert not isinstance(calc.potential, CompiledWithEagerTwin)
