"""Per-atom energies -> total energy, forces, stress and per-atom stresses.

The model supplies an unscaled energy e_i for each atom. The potential turns it into
physical units and a physical reference:

    E_i = scale[s_i] * (e_i - e_iso[s_i]) + shift[s_i] + E0[s_i]

where s_i is the atom's species and e_iso is what the model gives an atom with no
neighbours. Subtracting e_iso makes an isolated atom's energy exactly E0 + shift, so E0
(``Potential.reference_energies``) is the isolated-atom reference energy (shift is the mean
per-atom interaction energy of a data set, 0 by default) and a molecule with no pair inside
the cutoff has E = sum of E0. The per-atom energies E_i are ``per_atom_energies(graph)``,
returned under ``keys.ATOMIC_ENERGIES`` (ASE's "energies").

Forces and stress come from one backward pass (as in NequIP's ForceStressOutput): a
symmetric strain eps deforms positions and cell, x -> x (1 + eps), and

    F_i = -dE/dx_i,        sigma = (1/V) dE/d(eps)  (ASE sign: tensile positive).

Per-atom stresses split the virial edge by edge, half to each end of the bond:
sigma_i = (1/V) sum_{edges e at i} 1/2 sym(r_e (x) dE/dr_e); they sum to sigma.

The Hessian H = d^2E / dx dx (``hessian``; the cell held fixed) is the derivative of the
gradient g = dE/dx, taken with ``create_graph=True``, along each unit vector: row k is
d(g . e_k)/dx. The rows go through autograd together (``is_grads_batched``: one vmapped
backward over a batch of seed vectors), in passes of ``hessian_rows`` rows (one at a time
on a CPU, where that is faster; as many as the memory budget allows on a GPU).
"""

from __future__ import annotations

import copy
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

from . import keys
from .graph import Graph
from .graph.charge_spin import check_inputs_taken
from .models.base import AtomisticModel
from .nn import scatter_sum
from .nn.chunks import release_before_backward
from .repulsion import ZBL


def _per_species(value: float | Sequence[float] | torch.Tensor, n: int, name: str) -> torch.Tensor:
    # float64 so that reference energies of many eV keep their digits until .to(dtype)
    tensor = torch.as_tensor(value, dtype=torch.float64).flatten()
    if tensor.numel() == 1:
        tensor = tensor.expand(n).clone()
    if tensor.numel() != n:
        raise ValueError(f"{name} needs one value per species ({n}), got {tensor.numel()}")
    return tensor


def edge_geometry(graph: Graph, positions: torch.Tensor, cell: torch.Tensor) -> Graph:
    """Add EDGE_VECTORS r_ij = x_j - x_i + S @ cell and EDGE_LENGTHS |r_ij| to the graph,
    and set its POSITIONS and CELL to the ones given (the strained ones inside the autograd
    pass: an add-on energy term with its own pairs, e.g. D3 dispersion, derives its vectors
    from them, so its forces and stress come out of the same backward).

    Args:
        graph: batched graph (needs EDGE_INDEX, CELL_SHIFTS, BATCH).
        positions: (n_atoms, 3), possibly strained, Angstrom.
        cell: (n_graphs, 3, 3), possibly strained, Angstrom.
    """
    centers, neighbors = graph[keys.EDGE_INDEX]
    shifts = graph[keys.CELL_SHIFTS]
    if cell.shape[0] == 1:
        offsets = shifts @ cell[0]
    else:
        offsets = torch.einsum("ei,eij->ej", shifts, cell[graph[keys.BATCH][centers]])
    # index_select: its backward is a fast index_add_, unlike advanced indexing's index_put_
    vectors = positions.index_select(0, neighbors) - positions.index_select(0, centers) + offsets
    graph = dict(graph)
    graph[keys.POSITIONS], graph[keys.CELL] = positions, cell
    graph[keys.EDGE_VECTORS] = vectors
    graph[keys.EDGE_LENGTHS] = torch.linalg.vector_norm(vectors, dim=-1)
    return graph


def drop_edges_beyond(graph: Graph, cutoff: float) -> Graph:
    """Keep only the edges shorter than ``cutoff`` (a list built with a Verlet skin holds
    more). Needs EDGE_VECTORS; the kept vectors keep their autograd history and the lengths
    are recomputed from them, so derivatives with respect to EDGE_VECTORS stay complete."""
    keep = torch.nonzero(graph[keys.EDGE_LENGTHS] < cutoff).squeeze(1)
    graph = dict(graph)
    graph[keys.EDGE_INDEX] = graph[keys.EDGE_INDEX].index_select(1, keep)
    graph[keys.CELL_SHIFTS] = graph[keys.CELL_SHIFTS].index_select(0, keep)
    graph[keys.EDGE_VECTORS] = graph[keys.EDGE_VECTORS].index_select(0, keep)
    graph[keys.EDGE_LENGTHS] = torch.linalg.vector_norm(graph[keys.EDGE_VECTORS], dim=-1)
    # the layout of the old edges
    for key in (keys.BOND_OF_EDGE, keys.BOND_FIRST_EDGE, keys.NEIGHBOR_SLOT, keys.SLOT_COLUMNS):
        graph.pop(key, None)
    return graph


def isolated_atoms_graph(n_species: int, like: torch.Tensor) -> Graph:
    """A graph of one atom of each species, far apart: no edges. Shapes as in keys."""
    kw = {"dtype": like.dtype, "device": like.device}
    index = torch.arange(n_species, device=like.device)
    return {
        keys.SPECIES: index,
        keys.POSITIONS: torch.zeros(n_species, 3, **kw),
        keys.CELL: torch.zeros(n_species, 3, 3, **kw),
        keys.PBC: torch.zeros(n_species, 3, dtype=torch.bool, device=like.device),
        keys.EDGE_INDEX: torch.zeros(2, 0, dtype=torch.int64, device=like.device),
        keys.CELL_SHIFTS: torch.zeros(0, 3, **kw),
        keys.BATCH: index,
        keys.N_ATOMS: torch.ones(n_species, dtype=torch.int64, device=like.device),
        keys.EDGE_VECTORS: torch.zeros(0, 3, **kw),
        keys.EDGE_LENGTHS: torch.zeros(0, **kw),
    }


def safe_volume(cell: torch.Tensor, periodic: torch.Tensor) -> torch.Tensor:
    """|det(cell)| (n_graphs,) in A^3 for 3-D periodic graphs, 1 for the others.

    A graph that is not periodic in all three directions has no volume. It gets a finite
    stand-in (never NaN or inf, never 0 to divide by): the gradient of a masked entry is
    zero, and zero times NaN is NaN, so a NaN here would poison every gradient of a batch
    that mixes slabs or molecules with bulk cells.

    The determinant is the triple product a . (b x c) of the cell's rows: a few
    element-wise operations, where ``torch.linalg.det`` runs an LU factorisation and, in a
    compiled program, leaves AOTInductor a call it has no C shim for.
    """
    volume = (cell[:, 0] * torch.linalg.cross(cell[:, 1], cell[:, 2], dim=-1)).sum(-1).abs()
    return torch.where(periodic, volume, torch.ones_like(volume))


def _mark_undefined(values: torch.Tensor, defined: torch.Tensor) -> torch.Tensor:
    """``values`` (n, ...) with NaN in the rows where ``defined`` (n,) is False.

    ``values`` is finite everywhere, so the backward of ``torch.where`` (zero to the
    unselected branch) stays finite; the NaN is a constant and only marks "no stress".
    """
    mask = defined.reshape(-1, *([1] * (values.dim() - 1)))
    return torch.where(mask, values, torch.full_like(values, torch.nan))


def _upgrade_state_dict(state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: files written before the rename call E0 "atomic_energies"."""
    old, new = f"{prefix}atomic_energies", f"{prefix}reference_energies"
    if old in state_dict and new not in state_dict:
        state_dict[new] = state_dict.pop(old)


class Potential(nn.Module):
    """A model plus the per-species energy scale, shift and reference energies E0.

    Args:
        model: any AtomisticModel.
        scale: energy scale per species (or one for all), eV per model unit.
        shift: per-atom energy shift per species (or one for all), eV.
        reference_energies: isolated-atom reference energies E0, eV; a list in the order of
            ``model.species`` or a dict {symbol: E0}; missing symbols get 0.
        repulsion: an optional short-range term added to the per-atom energies
            (``ase_mpnn.repulsion.ZBL``), its range within the model's cutoff.

    Buffers (n_species,), float64 until ``.to(dtype)``: ``scale``, ``shift`` and
    ``reference_energies`` (E0; model files written before the rename store it as
    ``atomic_energies`` and still load strictly).
    """

    def __init__(
        self,
        model: AtomisticModel,
        scale: float | Sequence[float] = 1.0,
        shift: float | Sequence[float] = 0.0,
        reference_energies: Sequence[float] | dict[str, float] | None = None,
        repulsion: ZBL | None = None,
    ):
        super().__init__()
        self.model = model
        self.repulsion = repulsion
        if repulsion is not None and repulsion.r_outer > model.cutoff:
            raise ValueError(f"the repulsion reaches {repulsion.r_outer} A, beyond the model's "
                             f"cutoff ({model.cutoff} A): its pairs would be missing")
        n = len(model.species)
        if isinstance(reference_energies, dict):
            unknown = set(reference_energies) - set(model.species)
            if unknown:
                raise ValueError(
                    f"reference_energies for {sorted(unknown)}, not in {model.species}"
                )
            reference_energies = [reference_energies.get(s, 0.0) for s in model.species]
        self.register_buffer("scale", _per_species(scale, n, "scale"))
        self.register_buffer("shift", _per_species(shift, n, "shift"))
        self.register_buffer(
            "reference_energies",
            _per_species(reference_energies or 0.0, n, "reference_energies"),
        )
        self._register_load_state_dict_pre_hook(_upgrade_state_dict)

    def _apply(self, *args, **kwargs):
        # .to()/.double()/.cuda() may swap tensors: forget what was cached about them
        self.__dict__.pop("_model_tensors", None)
        self.__dict__.pop("_isolated_cache", None)
        return super()._apply(*args, **kwargs)

    @property
    def species(self) -> list[str]:
        """Element symbols covered, in the order of the species index."""
        return self.model.species

    @property
    def cutoff(self) -> float:
        """Neighbour cutoff radius, Angstrom."""
        return self.model.cutoff

    @property
    def architecture(self) -> str:
        """The model's architecture name (e.g. "SchNet")."""
        return self.model.architecture

    @property
    def global_inputs(self) -> tuple[str, ...]:
        """Structure-wide inputs the model takes from atoms.info: a subset of ("charge",
        "spin"). A graph that sets one it does not take raises UnsupportedInputError."""
        return self.model.global_inputs

    @property
    def outputs(self) -> tuple[str, ...]:
        """The graph keys forward can return."""
        return (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.STRESS,
                keys.ATOMIC_STRESSES)

    def isolated_atom_outputs(self, like: torch.Tensor) -> torch.Tensor:
        """e_iso (n_species,): the model's output for an atom with no neighbours.

        Recomputed while weights are trainable (gradients must flow through it); cached for
        frozen weights, keyed on their storage and version counters, so in-place updates
        (load_state_dict, optimiser steps) are never missed.
        """
        tensors = self.__dict__.get("_model_tensors")
        if tensors is None:  # the module structure is fixed; only the values change
            tensors = tuple(self.model.parameters()) + tuple(self.model.buffers())
            self.__dict__["_model_tensors"] = tensors
        if any(t.requires_grad for t in tensors) and torch.is_grad_enabled():
            return self.model(isolated_atoms_graph(len(self.species), like))
        key = (like.dtype, like.device, tuple((t.data_ptr(), t._version) for t in tensors))
        cached = self.__dict__.get("_isolated_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, self.model(isolated_atoms_graph(len(self.species), like)))
            self.__dict__["_isolated_cache"] = cached
        return cached[1]

    def with_compiled_model(self, **options) -> "Potential":
        """A twin of this potential (same weights and buffers) whose model runs through
        ``torch.compile(model, dynamic=True, **options)``.

        Only the model (graph -> per-atom energies) is compiled; strain, edge geometry and
        the autograd pass that gives forces and stress stay outside, so stress is exact by
        the same construction. The first calls compile (tens of seconds on a CPU) and a
        new graph shape may recompile once; the result is for long runs (MD) on one system
        size. This potential itself is left unchanged.
        """
        twin = copy.copy(self)  # shares parameters, buffers and submodules
        twin.__dict__["_model_call"] = torch.compile(self.model, dynamic=True, **options)
        return twin

    def eager(self) -> "Potential":
        """This potential with its model run eagerly (itself unless compiled): a compiled
        model's backward cannot be differentiated again, as a Hessian needs."""
        if "_model_call" not in self.__dict__:
            return self
        twin = copy.copy(self)
        del twin.__dict__["_model_call"]
        return twin

    def per_atom_energies(self, graph: Graph) -> torch.Tensor:
        """E_i (n_atoms,) in eV for a graph that already carries edge geometry.

        A graph with a total charge or spin multiplicity the model does not take raises
        UnsupportedInputError (a charge-blind model would silently give the neutral
        singlet's energy)."""
        check_inputs_taken(graph, self.model.global_inputs, f"this {self.architecture} model")
        return self.per_atom_energies_from(graph, self.isolated_atom_outputs(graph[keys.POSITIONS]))

    def per_atom_energies_from(self, graph: Graph, e_iso: torch.Tensor) -> torch.Tensor:
        """E_i (n_atoms,) in eV given the model's isolated-atom outputs e_iso (n_species,)
        (``per_atom_energies`` without the checks and the cache: what an exported
        potential traces, e_iso being a constant there)."""
        species = graph[keys.SPECIES]
        model = self.__dict__.get("_model_call", self.model)
        e = model(graph) - e_iso[species]
        energies = self.scale[species] * e + self.shift[species] + self.reference_energies[species]
        if self.repulsion is not None:  # a physical wall under the network (ZBL)
            energies = energies + self.repulsion(graph)
        return energies

    def energy_terms(self) -> list[EnergyTerm]:
        """The energy functions this potential sums over: its own, with its cutoff."""
        return [EnergyTerm(self.per_atom_energies, self.cutoff, False)]

    def hessian(self, graph: Graph, rows_per_pass: int | None = None,
                atoms: Sequence[int] | None = None) -> torch.Tensor:
        """d^2E/dx dx (3 n_atoms, 3 n_atoms), eV/A^2, of the graph's atoms (cell fixed);
        only the rows of ``atoms`` when given (``hessian_of_terms``).

        ``rows_per_pass``: rows per batched backward (default: ``hessian_rows``).
        """
        return hessian_of_terms(graph, self.eager().energy_terms(), rows_per_pass, atoms)

    def forward(
        self,
        graph: Graph,
        forces: bool = True,
        stress: bool = False,
        atomic_stresses: bool = False,
        create_graph: bool = False,
    ) -> Graph:
        """Evaluate a (batched) graph.

        Args:
            graph: from ase_mpnn.graph.build_graph.
            forces: compute FORCES (n_atoms, 3), eV/A.
            stress: compute STRESS (n_graphs, 3, 3), eV/A^3; NaN for structures that are
                not periodic in all three directions (no volume). The NaN is a marker set
                after the division by a finite stand-in volume (``safe_volume``), so a loss
                that indexes those entries out has finite gradients.
            atomic_stresses: compute ATOMIC_STRESSES (n_atoms, 3, 3), eV/A^3.
            create_graph: keep the autograd graph of the derivatives (for training on forces).

        Returns:
            dict with ENERGY (n_graphs,), ATOMIC_ENERGIES (n_atoms,) and those requested.
        """
        return evaluate_terms(graph, self.energy_terms(), forces, stress, atomic_stresses,
                              create_graph)[0]


class EnergyTerm(NamedTuple):
    """One energy function of a graph carrying edge geometry, with its own cutoff.

    Attributes:
        per_atom_energies: graph -> E_i (n_atoms,), eV.
        cutoff: Angstrom; the pairs beyond it are dropped before the call when the graph
            holds longer ones (a Verlet-skin list, or a committee member of shorter range).
        always_drop: drop the pairs beyond ``cutoff`` even without LIST_CUTOFF in the graph.
    """

    per_atom_energies: Callable[[Graph], torch.Tensor]
    cutoff: float
    always_drop: bool


def evaluate_terms(graph: Graph, terms: Sequence[EnergyTerm], forces: bool = True,
                   stress: bool = False, atomic_stresses: bool = False,
                   create_graph: bool = False) -> list[Graph]:
    """Energies and their derivatives for each of several energy functions on one graph.

    The terms (a committee's members) share the graph and its neighbour list; each runs
    its own forward and backward pass in turn, so only one term's autograd graph is held
    at a time. (One backward through all terms, each with its own position and strain
    leaves, gives the same numbers but was measured 1.5x slower for four SchNet members
    at 108 atoms: the interleaved graphs are larger than the caches.)

    Returns:
        One output dict per term, as ``Potential.forward`` documents.
    """
    return [_evaluate_term(graph, term, forces, stress, atomic_stresses, create_graph)
            for term in terms]


def _evaluate_term(graph: Graph, term: EnergyTerm, forces: bool, stress: bool,
                   atomic_stresses: bool, create_graph: bool) -> Graph:
    """One energy function's energies, forces, stress and per-atom stresses (one backward)."""
    batch, n_graphs = graph[keys.BATCH], graph[keys.CELL].shape[0]
    wants_strain = stress or atomic_stresses
    with torch.enable_grad():
        positions, cell = graph[keys.POSITIONS], graph[keys.CELL]
        if forces:
            positions = positions.detach().requires_grad_(True)
        wrt = {"forces": positions if forces else None, "stress": None, "edges": None}
        if wants_strain:
            strain = torch.zeros_like(cell, requires_grad=True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            positions = positions + torch.einsum("ni,nij->nj", positions, symmetric[batch])
            cell = cell + cell @ symmetric
            wrt["stress"] = strain
        geometry = edge_geometry(graph, positions, cell)
        if term.always_drop or keys.LIST_CUTOFF in graph:
            geometry = drop_edges_beyond(geometry, term.cutoff)
        if atomic_stresses:
            wrt["edges"] = geometry[keys.EDGE_VECTORS]
        energies = term.per_atom_energies(geometry)
        energy = scatter_sum(energies, batch, n_graphs)
        release_before_backward(geometry[keys.EDGE_INDEX].shape[1])
        grad = _gradients(energy, wrt, create_graph)
    out = {keys.ENERGY: energy, keys.ATOMIC_ENERGIES: energies}
    if forces:
        out[keys.FORCES] = -grad["forces"]
    if wants_strain:
        periodic = graph[keys.PBC].all(dim=1)
        volume = safe_volume(graph[keys.CELL], periodic)
        if stress:
            out[keys.STRESS] = _mark_undefined(grad["stress"] / volume[:, None, None], periodic)
        if atomic_stresses:
            per_atom = _atomic_stresses(geometry, grad["edges"], volume)
            out[keys.ATOMIC_STRESSES] = _mark_undefined(per_atom, periodic[batch])
    return out


def _gradients(energy: torch.Tensor, wrt: dict[str, torch.Tensor | None],
               create_graph: bool) -> dict[str, torch.Tensor]:
    """dE/d(each tensor in wrt) in one backward pass; zeros where E does not depend on it."""
    names = [k for k, v in wrt.items() if v is not None]
    inputs = [wrt[k] for k in names]
    if not inputs:
        return {}
    if energy.requires_grad:
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph,
                                    allow_unused=True)
    else:  # nothing to differentiate: e.g. no edges and frozen weights
        grads = [None] * len(inputs)
    return {k: torch.zeros_like(x) if g is None else g for k, x, g in zip(names, inputs, grads)}


def _atomic_stresses(graph: Graph, edge_grads: torch.Tensor, volume: torch.Tensor
                     ) -> torch.Tensor:
    """Half of each bond's virial r_e (x) dE/dr_e to each of its two atoms, over V."""
    centers, neighbors = graph[keys.EDGE_INDEX]
    virial = graph[keys.EDGE_VECTORS][:, :, None] * edge_grads[:, None, :]
    virial = 0.25 * (virial + virial.transpose(1, 2))  # symmetrised, halved
    n_atoms = graph[keys.POSITIONS].shape[0]
    per_atom = scatter_sum(virial, centers, n_atoms) + scatter_sum(virial, neighbors, n_atoms)
    return per_atom / volume[graph[keys.BATCH]][:, None, None]


#: rows x edges of one batched Hessian pass: 8 (SchNet-64) to 13 (MACE-32) KB each in
#: float64 (peak memory measured at 108 atoms, 32 rows), so about 2 GB per pass
HESSIAN_ROW_EDGES = 150_000


def hessian_rows(graph: Graph) -> int:
    """Rows of the Hessian per backward pass for this graph (``HESSIAN_ROW_EDGES``).

    On a CPU one row at a time: a vmapped pass does the same arithmetic on tensors too large
    for the caches, measured slower per row (SchNet-64, 108 atoms, float64: 97 ms a row
    alone, 112 ms in passes of 4, 278 ms in passes of 16). On a GPU as many rows as the
    memory budget allows, so that one pass fills the device.
    """
    if graph[keys.POSITIONS].device.type == "cpu":
        return 1
    n_edges = max(int(graph[keys.EDGE_INDEX].shape[1]), 1)
    return max(1, min(3 * int(graph[keys.POSITIONS].shape[0]), HESSIAN_ROW_EDGES // n_edges))


def hessian_of_terms(graph: Graph, terms: Sequence[EnergyTerm],
                     rows_per_pass: int | None = None,
                     atoms: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """The mean over ``terms`` of d^2E/dx dx, in eV/A^2: (3 n_atoms, 3 n_atoms), or only the
    rows of ``atoms`` (indices into the graph's atoms): (3 len(atoms), 3 n_atoms).

    Row 3 k + a belongs to atom atoms[k] (all atoms by default), column 3 j + b to atom j,
    Cartesian directions a, b; the cell is held fixed. Each row costs one backward pass, so
    asking only for the rows needed (the atoms that vibrate, a unit cell's atoms for
    phonons) saves the others. For a committee (one term per member) this is the Hessian
    of the mean energy. Not symmetrised: autograd gives a symmetric matrix to rounding
    (~1e-15 relative in float64).
    """
    per_pass = hessian_rows(graph) if rows_per_pass is None else rows_per_pass
    if isinstance(per_pass, bool) or not isinstance(per_pass, int) or per_pass < 1:
        raise ValueError(f"rows_per_pass must be an integer >= 1, got {rows_per_pass!r}")
    n_atoms = graph[keys.POSITIONS].shape[0]
    device = graph[keys.POSITIONS].device
    chosen = torch.arange(n_atoms, device=device) if atoms is None else \
        torch.as_tensor(atoms, dtype=torch.int64, device=device).flatten()
    if chosen.numel() and not bool(((chosen >= 0) & (chosen < n_atoms)).all()):
        raise ValueError(f"atoms must be indices of the graph's {n_atoms} atoms, got "
                         f"{chosen.tolist()}")
    rows = (3 * chosen[:, None] + torch.arange(3, device=device)).flatten()
    total = sum(_term_hessian(graph, term, rows, per_pass) for term in terms)
    return total / len(terms)


def _term_hessian(graph: Graph, term: EnergyTerm, rows: torch.Tensor, per_pass: int
                  ) -> torch.Tensor:
    """One energy function's Hessian rows: gradient with create_graph, then the rows
    ``rows`` (indices into 3 n_atoms) ``per_pass`` at a time."""
    positions = graph[keys.POSITIONS]
    n = positions.numel()
    hessian = torch.zeros(len(rows), n, dtype=positions.dtype, device=positions.device)
    with torch.enable_grad():
        positions = positions.detach().requires_grad_(True)
        geometry = edge_geometry(graph, positions, graph[keys.CELL])
        if term.always_drop or keys.LIST_CUTOFF in graph:
            geometry = drop_edges_beyond(geometry, term.cutoff)
        energy = term.per_atom_energies(geometry).sum()
        if not energy.requires_grad:  # no edges and frozen weights: E is a constant
            return hessian
        (gradient,) = torch.autograd.grad(energy, positions, create_graph=True)
        gradient = gradient.flatten()
        if not gradient.requires_grad:  # E linear in x: zero Hessian
            return hessian
        seeds = torch.zeros(len(rows), n, dtype=positions.dtype, device=positions.device)
        seeds[torch.arange(len(rows), device=rows.device), rows] = 1.0
        for start in range(0, len(rows), per_pass):
            # row k = d(g . e_k)/dx for the seeds e_k of this pass, in one vmapped backward
            # (a single row: a plain backward)
            seed = seeds[start:start + per_pass] if per_pass > 1 else seeds[start]
            (block,) = torch.autograd.grad(gradient, positions, seed, retain_graph=True,
                                           is_grads_batched=per_pass > 1, allow_unused=True)
            if block is not None:
                hessian[start:start + per_pass] = block.reshape(-1, n)
    return hessian.detach()


def as_potential(model: AtomisticModel | Potential) -> Potential:
    """Wrap a bare model in a Potential with unit scale, zero shift and zero E0; a
    Potential, or anything evaluated like one (a Committee: it has ``energy_terms``), is
    returned as it is."""
    if isinstance(model, Potential) or callable(getattr(model, "energy_terms", None)):
        return model
    if isinstance(model, AtomisticModel):
        return Potential(model)
    raise TypeError(f"expected an AtomisticModel or Potential, got {type(model).__name__}")
