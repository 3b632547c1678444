"""Verlet-skin neighbour lists of many structures at once, kept as one batched graph.

``SkinNeighborList`` (``ase_mpnn.graph.skin``) keeps one structure's list between calls;
this keeps the lists of a whole batch (torch-sim's many systems in one state) and checks
them all in a few tensor operations on the batch's device. A structure whose list is no
longer provably complete gets a fresh one (``make_structure`` at cutoff + skin); the others
keep theirs.

The completeness test is the one ``skin.py`` derives: with the reference cell C0 and
positions x0 of the last build, G = C0^-1 C', the list holds every pair now within the
cutoff while sigma_min(G) (cutoff + skin) - 2 max|u| > cutoff, u being what the affine
deformation x0 G does not explain. Engines such as torch-sim wrap atoms back into the cell
after every step, which moves an atom by a lattice vector n_i C'. That is a relabelling of
images, not a motion: the stored pair (i, j, S) of the reference is the pair
(i, j, S - (n_j - n_i)) now, with vector r0 G + u_j - u_i exactly. So n_i is taken off
(rounded fractional displacement along periodic axes) before u is measured, and the shifts
handed to the model are corrected by it: wrapping never forces a rebuild, and the bound
holds for any integer n_i, so the rounding cannot make the list incomplete.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from .. import keys
from ..errors import ASEMPNNError, InvalidStructureError
from .batching import Graph
from .skin import check_skin
from .structure import MIN_DISTANCE, Structure, make_structure


class BatchedSkinList:
    """Neighbour lists at cutoff + skin for a batch of structures, reused while complete.

    Args:
        cutoff: the model's cutoff, Angstrom.
        skin: extra radius of the stored lists, Angstrom (0 rebuilds every list every call).
        species: the model's element symbols.
        min_distance: closest allowed approach, Angstrom (checked on every call).

    ``builds`` and ``reuses`` count structures (not calls) whose list was built or reused.
    """

    def __init__(self, cutoff: float, skin: float, species: Sequence[str],
                 min_distance: float = MIN_DISTANCE):
        check_skin(skin, cutoff)
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.species, self.min_distance = list(species), float(min_distance)
        self.builds = self.reuses = 0
        self._records: list[Structure] = []
        self._identity: tuple[torch.Tensor, ...] | None = None

    @property
    def list_cutoff(self) -> float:
        """Radius the stored lists are built with, Angstrom."""
        return self.cutoff + self.skin

    def graph(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
              numbers: torch.Tensor, n_atoms: torch.Tensor) -> Graph:
        """The batched graph (keys in ``ase_mpnn.keys``) of the structures given.

        Args:
            positions: (n_atoms, 3) Cartesian positions, Angstrom, all structures in order.
            cell: (n_graphs, 3, 3) lattice vectors as rows, Angstrom.
            pbc: (n_graphs, 3) bool periodicity.
            numbers: (n_atoms,) atomic numbers.
            n_atoms: (n_graphs,) atoms of each structure.

        The graph's tensors live on ``positions``' device in its dtype; POSITIONS and CELL
        are the ones given (not copies), so the graph shares their memory.
        """
        n_atoms = n_atoms.to(torch.int64)
        batch = torch.repeat_interleave(torch.arange(len(n_atoms), device=n_atoms.device),
                                        n_atoms)
        if self._same_structures(pbc, numbers, n_atoms):
            rebuild, wraps = self._stale(positions, cell, pbc, batch)
        else:
            rebuild = torch.ones(len(n_atoms), dtype=torch.bool)
            wraps = torch.zeros_like(positions, dtype=torch.float64)
            self._records = [None] * len(n_atoms)  # type: ignore[list-item]
            self._identity = (pbc.clone(), numbers.clone(), n_atoms.clone())
        stale = torch.nonzero(rebuild).flatten().tolist()
        if stale:
            self._build(stale, positions, cell, pbc, numbers, n_atoms)
            wraps[torch.isin(batch, torch.as_tensor(stale, device=batch.device))] = 0.0
        self.builds += len(stale)
        self.reuses += len(n_atoms) - len(stale)
        centers, neighbors = self._edges
        # the stored pair (i, j, S) is (i, j, S - (n_j - n_i)) of the wrapped positions
        shifts = self._shifts - wraps[neighbors] + wraps[centers]
        self._check_distances(positions, cell, shifts, batch)
        graph = {
            keys.ATOMIC_NUMBERS: numbers.to(torch.int64),
            keys.SPECIES: self._species,
            keys.POSITIONS: positions,
            keys.CELL: cell,
            keys.PBC: pbc,
            keys.EDGE_INDEX: self._edges,
            keys.CELL_SHIFTS: shifts.to(positions.dtype),
            keys.BATCH: batch,
            keys.N_ATOMS: n_atoms,
        }
        if self.skin > 0:
            graph[keys.LIST_CUTOFF] = torch.tensor(self.list_cutoff)
        return graph

    def _same_structures(self, pbc: torch.Tensor, numbers: torch.Tensor,
                         n_atoms: torch.Tensor) -> bool:
        """True when the batch holds the same structures (atoms, elements, pbc) as before."""
        if self._identity is None or self.skin == 0:
            return False
        return all(old.shape == new.shape and bool(torch.equal(old, new))
                   for old, new in zip(self._identity, (pbc, numbers, n_atoms)))

    def _stale(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
               batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which structures need a new list ((n_graphs,) bool, on the CPU), and the lattice
        translations n_i (n_atoms, 3) float64 by which each atom was wrapped since."""
        x, c = positions.detach().to(torch.float64), cell.detach().to(torch.float64)
        same_cell = (c == self._ref_cell).flatten(1).all(dim=1)
        # G with C' = C0 G; a molecule's zero cell or a NaN cell gives no usable G (its
        # structure is then rebuilt, below, or reported by the rebuild's checks)
        deformation = torch.nan_to_num(torch.linalg.solve_ex(self._ref_cell, c)[0],
                                       nan=0.0, posinf=0.0, neginf=0.0)
        identity = torch.eye(3, dtype=c.dtype, device=c.device)
        deformation = torch.where(same_cell[:, None, None], identity, deformation)
        sigma_min = torch.linalg.svdvals(deformation).amin(dim=1)
        delta = x - torch.einsum("ni,nij->nj", self._ref_positions, deformation[batch])
        to_fractional = torch.linalg.pinv(torch.nan_to_num(c * pbc[:, :, None]))  # periodic rows
        fractional = torch.einsum("ni,nij->nj", delta, to_fractional[batch])
        wraps = torch.round(fractional) * pbc[batch]
        u = delta - torch.einsum("ni,nij->nj", wraps, c[batch])
        moved = torch.zeros(len(c), dtype=c.dtype, device=c.device).scatter_reduce(
            0, batch, torch.linalg.vector_norm(u, dim=1), "amax")
        complete = sigma_min * self.list_cutoff - 2.0 * moved > self.cutoff
        # a changed cell of a structure not periodic along all axes: build afresh
        complete &= same_cell | pbc.all(dim=1)
        return (~complete).cpu(), wraps  # NaN positions compare False: rebuilt, reported

    def _build(self, stale: list[int], positions: torch.Tensor, cell: torch.Tensor,
               pbc: torch.Tensor, numbers: torch.Tensor, n_atoms: torch.Tensor) -> None:
        """Fresh lists for the structures ``stale``, and the batch's arrays made anew."""
        bounds = np.concatenate([[0], np.cumsum(n_atoms.cpu().numpy())])
        x = positions.detach().to("cpu", torch.float64).numpy()
        c = cell.detach().to("cpu", torch.float64).numpy()
        z, periodic = numbers.cpu().numpy(), pbc.cpu().numpy()
        for k in stale:
            atoms = Atoms(numbers=z[bounds[k]:bounds[k + 1]],
                          positions=x[bounds[k]:bounds[k + 1]], cell=c[k], pbc=periodic[k])
            try:
                self._records[k] = make_structure(atoms, self.list_cutoff, self.species,
                                                  self.min_distance).copy()
            except ASEMPNNError as exc:
                raise type(exc)(f"structure {k} of the batch: {exc}") from exc
        self._concatenate(bounds, positions.device)

    def _concatenate(self, bounds: np.ndarray, device: torch.device) -> None:
        """The batch's reference arrays from the per-structure records."""
        records = self._records
        edges = np.concatenate([r.edges + off for r, off in zip(records, bounds)], axis=1)
        as_float = {"dtype": torch.float64, "device": device}
        self._edges = torch.as_tensor(edges, dtype=torch.int64, device=device)
        self._shifts = torch.as_tensor(np.concatenate([r.shifts for r in records]), **as_float)
        self._species = torch.as_tensor(np.concatenate([r.species for r in records]),
                                        dtype=torch.int64, device=device)
        self._ref_positions = torch.as_tensor(np.concatenate([r.positions for r in records]),
                                              **as_float)
        self._ref_cell = torch.as_tensor(np.stack([r.cell for r in records]), **as_float)
        self._edge_graph = torch.as_tensor(
            np.repeat(np.arange(len(records)), [r.n_edges for r in records]), device=device)

    def _check_distances(self, positions: torch.Tensor, cell: torch.Tensor,
                         shifts: torch.Tensor, batch: torch.Tensor) -> None:
        """InvalidStructureError when two atoms are closer than ``min_distance`` (the lists
        hold every pair within cutoff + skin, so every pair that close)."""
        if not self._edges.shape[1] or self.min_distance <= 0:
            return
        centers, neighbors = self._edges
        x, c = positions.detach(), cell.detach().to(positions.dtype)
        vectors = (x.index_select(0, neighbors) - x.index_select(0, centers)
                   + torch.einsum("ei,eij->ej", shifts.to(x.dtype), c[self._edge_graph]))
        squared = (vectors * vectors).sum(dim=1)
        k = int(squared.argmin())
        if float(squared[k]) < self.min_distance ** 2:
            graph = int(batch[centers[k]])
            first = int((batch < graph).sum())
            raise InvalidStructureError(
                f"structure {graph} of the batch: atoms {int(centers[k]) - first} and "
                f"{int(neighbors[k]) - first} are {float(squared[k]) ** 0.5:.4f} A apart, "
                f"closer than {self.min_distance} A: is the structure corrupt?")
