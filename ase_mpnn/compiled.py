"""Whole-potential compilation: energy, forces and stress as one AOTInductor program.

``compile_potential`` traces what ``Potential.forward`` does for one batched graph (edge
geometry, the model, the per-species scale, shift and E0, and the autograd pass that gives
forces and stress through a symmetric strain, as nequip-compile does) into one aten graph
(``make_fx``, symbolic shapes: the backward pass is traced as ordinary operations), exports
it with ``torch.export`` (dynamic in atoms, edges and structures) and compiles it with
AOTInductor into a ``.pt2`` archive: a shared library and the weights, no Python model.

The model file's JSON manifest travels inside the archive (an extra file,
``COMPILED_MANIFEST``) with what the program was compiled for: torch version, device and
dtype. ``CompiledPotential`` reads that manifest first (plain JSON) and refuses a file
compiled for another torch or device with an error naming both; nothing is unpickled.
The neighbour list and the graph stay in Python; pairs beyond the cutoff of a Verlet-skin
list are dropped before the call, so the compiled program sees only pairs within the
cutoff.

Inputs of the program (``INPUTS``): species (n_atoms,) int64, positions (n_atoms, 3) A,
cell (n_graphs, 3, 3) A, pbc (n_graphs, 3) bool, edge_index (2, n_edges) int64,
cell_shifts (n_edges, 3), batch (n_atoms,) int64, and the bond pairing of the edges
(``ase_mpnn.nn.edge_pairs``): bond_of_edge (n_edges,) int64, bond_first_edge (n_bonds,)
int64. The pairing is computed outside the program (its size depends on the data) and
lets the program evaluate radial networks once per bond, as eager runs do; files of format
version 1 take the first seven inputs only. A model with a neighbour-matrix path (MACE,
NequIP: ``ase_mpnn.nn.neighbor_matrix``) gets a second program, "slots", that also takes
the layout: neighbor_slot (n_edges,) int64 and slot_columns (n_slots,), and each graph
runs on the layout an eager run would choose for it (``PROGRAMS``). Outputs (``OUTPUTS``): energy
(n_graphs,) eV, per-atom energies (n_atoms,) eV, forces (n_atoms, 3) eV/A, stress
(n_graphs, 3, 3) eV/A^3 (NaN for structures not periodic in all three directions).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch import nn

from . import keys
from ._version import __version__
from .errors import ModelFileError
from .graph import Graph, build_graph
from .graph.charge_spin import check_inputs_taken
from .nn.edge_pairs import edge_pairs
from .nn.neighbor_matrix import neighbor_slots
from .nn.paired_gather import full_list
from .nn.tracing import whole_program_trace
from .potential import EnergyTerm, Potential, _evaluate_term, edge_geometry

FORMAT_NAME = "ase-mpnn-compiled"
#: 2: the bond pairing and neighbour-matrix layout are inputs ("programs"); 3: the
#: neighbour-matrix program takes only full lists (ase_mpnn.nn.paired_gather), so readers
#: of version 2, which hand it any list, refuse it
FORMAT_VERSION = 3
#: the extra file of the .pt2 archive holding the manifest (JSON)
COMPILED_MANIFEST = "ase_mpnn_manifest.json"
INPUTS = (keys.SPECIES, keys.POSITIONS, keys.CELL, keys.PBC, keys.EDGE_INDEX,
          keys.CELL_SHIFTS, keys.BATCH, keys.BOND_OF_EDGE, keys.BOND_FIRST_EDGE)
BOND_INPUTS = (keys.BOND_OF_EDGE, keys.BOND_FIRST_EDGE)
SLOT_INPUTS = (keys.NEIGHBOR_SLOT, keys.SLOT_COLUMNS)
#: the programs of a file and their inputs: "model" on the edges, and, for models with a
#: neighbour-matrix path (ase_mpnn.nn.neighbor_matrix), "slots" for graphs in that layout
PROGRAMS = {"model": INPUTS, "slots": INPUTS + SLOT_INPUTS}
OUTPUTS = (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.STRESS)


class _WholePotential(nn.Module):
    """Potential.forward (forces and stress) of one batched graph, as positional tensors.

    The isolated-atom outputs e_iso are computed once here and held as a buffer: inside
    the trace they are a constant, as they are for frozen weights in eager runs."""

    def __init__(self, potential: Potential, inputs: tuple[str, ...] = INPUTS):
        super().__init__()
        self.potential = potential
        self.inputs = inputs
        like = next(potential.parameters())
        self.register_buffer("e_iso", potential.isolated_atom_outputs(like).detach().clone())

    def energies(self, graph: Graph) -> torch.Tensor:
        return self.potential.per_atom_energies_from(graph, self.e_iso)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        graph = dict(zip(self.inputs, tensors))
        term = EnergyTerm(self.energies, self.potential.cutoff, False)
        out = _evaluate_term(graph, term, forces=True, stress=True, atomic_stresses=False,
                             create_graph=False)
        return tuple(out[key] for key in OUTPUTS)


def example_graph(potential: Potential, dtype: torch.dtype, device: torch.device) -> Graph:
    """A batch of five small periodic cells of the potential's species, to trace with.

    Its sizes (structures, atoms, edges, bonds, neighbour-matrix columns) differ from each
    other and from 2 and 3, so the symbolic trace cannot confuse one size with another or
    with a fixed dimension."""
    spacing = 0.45 * potential.cutoff
    structures = []
    for k in range(5):
        n = 2 + k % 2  # 2x2x2 and 3x3x3 grids
        grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
        rng = np.random.default_rng(k)
        positions = spacing * (grid + 0.05 * rng.standard_normal(grid.shape))
        symbols = [potential.species[(i + k) % len(potential.species)]
                   for i in range(len(grid))]
        structures.append(Atoms(symbols, positions=positions, cell=np.eye(3) * n * spacing,
                                pbc=True))
    graph = with_bond_pairing(build_graph(structures, potential.cutoff, potential.species,
                                          dtype=dtype, device=device))
    graph = with_neighbor_slots(graph)
    sizes = {"graphs": 5, "atoms": graph[keys.POSITIONS].shape[0],
             "edges": graph[keys.EDGE_INDEX].shape[1],
             "bonds": graph[keys.BOND_FIRST_EDGE].shape[0],
             "slots": graph[keys.SLOT_COLUMNS].shape[0]}
    assert len(set(sizes.values()) | {2, 3}) == 7, sizes
    return graph


def with_bond_pairing(graph: Graph) -> Graph:
    """The graph with the bond pairing of its edges (``keys.BOND_OF_EDGE``,
    ``keys.BOND_FIRST_EDGE``; ``ase_mpnn.nn.edge_pairs``), as the program takes it."""
    centers, neighbors = graph[keys.EDGE_INDEX]
    graph = dict(graph)
    graph[keys.BOND_OF_EDGE], graph[keys.BOND_FIRST_EDGE] = edge_pairs(
        centers, neighbors, graph[keys.CELL_SHIFTS])
    return graph


def with_neighbor_slots(graph: Graph, any_padding: bool = False) -> Graph | None:
    """The graph with its neighbour-matrix layout (``keys.NEIGHBOR_SLOT``,
    ``keys.SLOT_COLUMNS``), or None where eager runs would not use that layout
    (``ase_mpnn.nn.neighbor_matrix.neighbor_slots``: too much padding, unless
    ``any_padding``, or no edges)."""
    slots = neighbor_slots(graph[keys.EDGE_INDEX][0], graph[keys.SPECIES].shape[0],
                           math.inf if any_padding else None)
    if slots is None:
        return None
    graph = dict(graph)
    graph[keys.NEIGHBOR_SLOT] = slots[0]
    graph[keys.SLOT_COLUMNS] = torch.zeros(slots[1], dtype=torch.int64,
                                           device=slots[0].device)
    return graph


def uses_neighbor_matrix(potential: Potential) -> bool:
    """True when some convolution of the model has a neighbour-matrix path (MACE, NequIP)
    or sums filters (SchNet-like; ``ase_mpnn.nn.filter_sum.slot_layout``)."""
    return any(getattr(module, "matrix_path", None) is not None
               or getattr(module, "sums_on_neighbor_matrix", False)
               for module in potential.modules())


def _dynamic_shapes(inputs: tuple[str, ...]) -> tuple[dict[int, Any] | None, ...]:
    atoms = torch.export.Dim("n_atoms", min=1, max=1 << 30)
    edges = torch.export.Dim("n_edges", min=0, max=1 << 34)
    bonds = torch.export.Dim("n_bonds", min=0, max=1 << 34)
    slots = torch.export.Dim("n_slots", min=1, max=1 << 24)
    graphs = torch.export.Dim("n_graphs", min=1, max=1 << 30)
    by_key = {keys.SPECIES: {0: atoms}, keys.POSITIONS: {0: atoms}, keys.CELL: {0: graphs},
              keys.PBC: {0: graphs}, keys.EDGE_INDEX: {1: edges}, keys.CELL_SHIFTS: {0: edges},
              keys.BATCH: {0: atoms}, keys.BOND_OF_EDGE: {0: edges},
              keys.BOND_FIRST_EDGE: {0: bonds}, keys.NEIGHBOR_SLOT: {0: edges},
              keys.SLOT_COLUMNS: {0: slots}}
    return tuple(by_key[key] for key in inputs)


def export_potential(potential: Potential, graph: Graph, inputs: tuple[str, ...] = INPUTS
                     ) -> torch.export.ExportedProgram:
    """The exported program of ``_WholePotential(potential)`` taking ``inputs`` (graph
    keys, in order), dynamic in atoms, edges, bonds, structures and neighbour-matrix
    columns; ``graph`` (e.g. ``example_graph``) gives the example inputs."""
    from torch.fx.experimental.proxy_tensor import make_fx

    module = _WholePotential(potential, inputs)
    args = tuple(graph[key] for key in inputs)
    # torch.export cannot trace torch.autograd.grad itself (torch 2.13); make_fx records
    # the backward as aten operations, and that graph exports like any other
    with whole_program_trace():
        traced = make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args)
    return torch.export.export(traced, args, dynamic_shapes=_dynamic_shapes(inputs),
                               strict=False)


def _check_compilable(potential: Any) -> Potential:
    if not isinstance(potential, Potential):
        raise ValueError(f"only a single model can be compiled, not a "
                         f"{type(potential).__name__} (compile each committee member)")
    if potential.global_inputs:
        raise ValueError(f"this model takes {', '.join(potential.global_inputs)} from "
                         "atoms.info; compiled models do not take them yet")
    return potential


def compile_potential(potential: Potential, output: str | os.PathLike, *,
                      model_name: str = "", model_sha256: str = "") -> Path:
    """Compile a frozen potential (e.g. ``ase_mpnn.loading.load(...).potential``) into a
    ``.pt2`` file for the device and dtype its weights are on; returns the file's path.
    ``model_name`` and ``model_sha256`` (where it came from) go into the manifest.
    ``ase_mpnn.compiled_check.compile_checked`` also runs the program once before keeping it.

    A model with a neighbour-matrix path (MACE, NequIP) gets two programs, one per layout
    (``PROGRAMS``); ``CompiledPotential`` runs each graph on the layout eager runs choose.
    Takes about 20 s (SchNet) to three minutes (MACE, two programs) on one CPU core.
    """
    from torch.export.pt2_archive._package import package_pt2

    output = Path(output)
    if output.suffix != ".pt2":
        raise ValueError(f"a compiled model's file name ends in .pt2, got {output.name!r}")
    potential = _check_compilable(potential)
    weights = next(potential.parameters())
    start = time.perf_counter()
    example = example_graph(potential, weights.dtype, weights.device)
    programs = {name: inputs for name, inputs in PROGRAMS.items()
                if name == "model" or uses_neighbor_matrix(potential)}
    files = {}
    for name, inputs in programs.items():
        program = export_potential(potential, example, inputs)
        files[name] = torch._inductor.aot_compile(program.module(), program.example_inputs[0],
                                                  options={"aot_inductor.package": True})
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "torch_version": torch.__version__, "device": weights.device.type,
        "dtype": str(weights.dtype).replace("torch.", ""), "package_version": __version__,
        "inputs": list(INPUTS), "outputs": list(OUTPUTS),
        "programs": {name: list(inputs) for name, inputs in programs.items()},
        "compile_seconds": round(time.perf_counter() - start, 1),
        "model_name": model_name, "model_sha256": model_sha256,
        # the model file's manifest (a potential built in memory: what the calculator reads)
        "model": getattr(potential, "manifest", None) or {
            "architecture": potential.architecture, "species": list(potential.species),
            "cutoff": potential.cutoff},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=output.parent, suffix=".pt2", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        package_pt2(str(partial), aoti_files=files,
                    extra_files={COMPILED_MANIFEST: json.dumps(manifest, indent=1)})
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return output


def read_compiled_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a compiled model file (plain JSON; nothing else is read)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/extra/" + COMPILED_MANIFEST)]
            if not names:
                raise ModelFileError(f"{path} is not a compiled ase-mpnn model (no "
                                     f"{COMPILED_MANIFEST}); compile one with 'ase-mpnn "
                                     "compile'")
            manifest = json.loads(archive.read(names[0]))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"cannot read compiled model {path}: {exc} (damaged or "
                             "truncated?)") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: not an ase-mpnn compiled model manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{path}: compiled-model format version "
                             f"{manifest.get('format_version')} is newer than this ase-mpnn "
                             f"({__version__}) reads ({FORMAT_VERSION}); upgrade ase-mpnn")
    return manifest


def is_compiled_file(source: Any) -> bool:
    """True for a path to an existing ``.pt2`` file."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(source).expanduser()
    return path.suffix == ".pt2" and path.is_file()


class CompiledPotential:
    """A compiled model file, evaluated like a Potential (energy, per-atom energies,
    forces, stress of a batched graph; no per-atom stresses, no Hessian, no training).

    Args:
        path: the ``.pt2`` file written by ``compile_potential``.
        device: where to run: must be the device it was compiled for.

    Raises:
        ModelFileError: not a compiled model, damaged, or compiled for another torch
            version or device (the message names both).
    """

    def __init__(self, path: str | os.PathLike, device: torch.device | None = None):
        path = Path(path)
        self.path = path
        self.compiled_manifest = read_compiled_manifest(path)
        found = self.compiled_manifest
        if found.get("torch_version") != torch.__version__:
            raise ModelFileError(
                f"{path} was compiled with torch {found.get('torch_version')}, this is torch "
                f"{torch.__version__}: compile it again with 'ase-mpnn compile'")
        self.device = torch.device(found["device"] if device is None else device)
        if self.device.type != found.get("device"):
            raise ModelFileError(
                f"{path} was compiled for device {found.get('device')!r}, asked to run on "
                f"{self.device.type!r}: compile it again with --device {self.device.type}")
        self.dtype = getattr(torch, found["dtype"])
        # each program's inputs, in order (format 1: one program, no bond pairing)
        self.programs = {name: tuple(inputs) for name, inputs in
                         (found.get("programs") or {"model": INPUTS[:7]}).items()}
        unknown = {key for inputs in self.programs.values() for key in inputs} - set(
            PROGRAMS["slots"])
        if unknown or "model" not in self.programs:
            raise ModelFileError(f"{path} holds programs or inputs this ase-mpnn does not "
                                 f"know ({sorted(self.programs)}, {sorted(unknown)}); "
                                 "upgrade ase-mpnn")
        self._marker = torch.empty(0, dtype=self.dtype, device=self.device)
        self.manifest = found.get("model") or {}
        self.manifest_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            from torch._inductor.package import load_package

            self._runners = {name: load_package(str(path), name) for name in self.programs}
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and others
            raise ModelFileError(f"cannot load compiled model {path}: "
                                 f"{' '.join(str(exc).split())[:300]}") from exc

    @property
    def species(self) -> list[str]:
        """Element symbols covered, in the order of the species index."""
        return list(self.manifest["species"])

    @property
    def cutoff(self) -> float:
        """Neighbour cutoff radius, Angstrom."""
        return float(self.manifest["cutoff"])

    @property
    def architecture(self) -> str:
        """The compiled model's architecture name (e.g. "SchNet")."""
        return str(self.manifest["architecture"])

    @property
    def global_inputs(self) -> tuple[str, ...]:
        """None: a model that takes charge or spin is not compiled."""
        return ()

    @property
    def outputs(self) -> tuple[str, ...]:
        """The graph keys ``__call__`` returns."""
        return OUTPUTS

    def parameters(self):
        """One empty tensor on the program's device and in its dtype (what batch code reads
        them from); the weights themselves live inside the program."""
        return iter((self._marker,))

    def with_compiled_model(self, **options: Any) -> "CompiledPotential":
        """Itself: it is compiled already."""
        return self

    def eager(self) -> "CompiledPotential":
        """Itself (there is no eager model inside a compiled file)."""
        return self

    def hessian(self, graph: Graph, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError("a compiled model has no Hessian: use the model file "
                                  "(.mpnn) for phonons and vibrations")

    def __call__(self, graph: Graph, forces: bool = True, stress: bool = False,
                 atomic_stresses: bool = False, create_graph: bool = False, *,
                 program: str | None = None) -> Graph:
        """Energy, per-atom energies, forces and (if ``stress``) stress of a batched graph,
        as ``Potential.forward`` gives them. ``program`` (one of ``self.programs``; for
        checks) runs that program whatever layout the graph would get."""
        if atomic_stresses or create_graph:
            raise NotImplementedError("a compiled model gives energy, forces and stress; "
                                      "per-atom stresses and training need the model file")
        check_inputs_taken(graph, (), f"this compiled {self.architecture} model")
        graph = self._within_cutoff(graph)
        name, graph = self._program_for(graph, program)
        floats = (keys.POSITIONS, keys.CELL, keys.CELL_SHIFTS)
        inputs = [graph[key].to(self.device, self.dtype) if key in floats
                  else graph[key].to(self.device) for key in self.programs[name]]
        values = self._runners[name](*inputs)
        out = dict(zip(OUTPUTS, values))
        if not stress:
            del out[keys.STRESS]
        return out

    def _program_for(self, graph: Graph, forced: str | None = None) -> tuple[str, Graph]:
        """The program to run the graph on (``forced``, else the neighbour-matrix program
        where eager runs would use that layout), and the graph with that program's layout
        inputs."""
        if forced is not None and forced not in self.programs:
            raise ValueError(f"{self.path} has no program {forced!r}: {sorted(self.programs)}")
        if BOND_INPUTS[0] in self.programs["model"]:
            graph = with_bond_pairing(graph)
        # the neighbour-matrix program reads each row's reverse (ase_mpnn.nn.paired_gather)
        full = keys.BOND_OF_EDGE not in graph or full_list(graph[keys.BOND_OF_EDGE],
                                                            graph[keys.BOND_FIRST_EDGE])
        if forced == "slots" and not full:
            raise ValueError("the neighbour-matrix program needs a full neighbour list (every "
                             "edge's reverse in it); this one is not")
        if "slots" in self.programs and forced != "model" and full:
            in_slots = with_neighbor_slots(graph, any_padding=forced == "slots")
            if in_slots is not None:
                return "slots", in_slots
            if forced == "slots":
                raise ValueError("a graph without edges has no neighbour-matrix layout")
        return "model", graph

    def _within_cutoff(self, graph: Graph) -> Graph:
        """The graph without the pairs beyond the cutoff when its list holds longer ones
        (a Verlet skin): the same selection ``drop_edges_beyond`` makes in eager runs."""
        if keys.LIST_CUTOFF not in graph:
            return graph
        with torch.no_grad():
            lengths = edge_geometry(graph, graph[keys.POSITIONS], graph[keys.CELL])[
                keys.EDGE_LENGTHS]
        keep = torch.nonzero(lengths < self.cutoff).squeeze(1)
        graph = dict(graph)
        graph[keys.EDGE_INDEX] = graph[keys.EDGE_INDEX].index_select(1, keep)
        graph[keys.CELL_SHIFTS] = graph[keys.CELL_SHIFTS].index_select(0, keep)
        return graph
