"""MPNNCalculator: the ASE calculator over any ase-mpnn potential.

One model call per structure fills every property: energy (= free_energy), per-atom
energies, forces and, for cells periodic in all three directions, stress; per-atom
stresses are added when asked for. The calculator reads only ``species``, ``cutoff`` and
the potential's outputs: it never branches on the architecture.

Its ``parameters`` are its settings, as in every ASE calculator: ``model`` (the name or
path it was given), ``device``, ``dtype``, ``min_distance``, ``skin``, ``compile`` and
``dispersion`` (D3(BJ) added to the model in the same autograd pass).
``calc.set(skin=0.3)`` changes one (and clears the results); an unknown name raises a
TypeError listing the valid ones. What the model is (architecture, manifest hash, cutoff,
species, package version) is ``calc.provenance``; ``todict()`` adds it to the parameters,
so ase.db rows and trajectories record which model made each result.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from . import keys
from ._version import __version__
from .batch.evaluate import MAX_ATOMS, evaluate
from .dispersion import d3bj_parameters, with_dispersion
from .errors import ModelFileError
from .graph import MIN_DISTANCE, SkinNeighborList, collate, to_atoms
from .graph.charge_spin import CHARGE_ALIASES, MULTIPLICITY_ALIASES
from .graph.skin import check_skin
from .loading import DEFAULT_DTYPE, ModelSource, dtype_name, load, resolve_device, resolve_dtype
from .results import ase_properties, to_ase_results

#: Verlet skin (Angstrom) of the calculator's neighbour list; see ase_mpnn.graph.skin
DEFAULT_SKIN = 0.5

#: keywords ASE's Calculator itself takes
_ASE_KEYWORDS = ("restart", "label", "atoms", "directory")

#: the Atoms.info entries a result depends on (a change means a new calculation)
_STATE_INFO = (*CHARGE_ALIASES, *MULTIPLICITY_ALIASES)


class MPNNCalculator(Calculator):
    """ASE calculator for message-passing neural-network potentials.

    Args:
        model: a built-in model name (``ase_mpnn.list_models()``), a model file path,
            model-file bytes, or an in-memory AtomisticModel/Potential/Committee; a list of
            them is evaluated as a committee. A committee (a list, or a committee file made
            by ``save_committee`` or ``ase-mpnn train --committee``) adds its members'
            values (``energy_comm``, ``forces_comm``, ``stress_comm``) and calibrated
            standard deviations (``energy_std``, ``energies_std``, ``forces_std`` per atom,
            ``stress_std``) to the results; energy, forces and stress are its mean.
            The calculator works on a frozen snapshot of an in-memory model's weights taken
            here (later training of the object does not change it), as when pickled.
            A compiled model file (``.pt2``, written by ``ase-mpnn compile``;
            ``ase_mpnn.compiled``) runs in the dtype and on the device it was compiled for
            and gives everything but per-atom stresses and Hessians.
        device: "auto" (CUDA if available), "cpu" or "cuda[:n]".
        dtype: "float32" (the default, ``ase_mpnn.loading.DEFAULT_DTYPE``: it passes the
            physics test kit to float32 precision and is faster; ``benchmarks/run.py``
            measures by how much) or "float64" (phonons by small displacements, tight
            relaxations, comparisons to 1e-10); torch's global default is never changed.
        min_distance: atoms closer than this (Angstrom) are rejected as corrupt input.
        skin: Verlet skin, Angstrom: the neighbour list is built at cutoff + skin and reused
            between calls while no pair can have come within the cutoff unseen (MD steps,
            relaxation steps, NPT cell changes); 0 builds a fresh list on every call.
            Results are identical either way.
        compile: compile energy, forces and stress ahead of time with AOTInductor, as
            ``ase-mpnn compile`` does (``ase_mpnn.compiled_cache``): 20 s to 2 min the
            first time a model is used with a dtype and device, then loaded from a cache
            folder in about a second; Hessians and per-atom stresses run on the eager twin
            of the same weights. A committee, a model that takes charge or spin, or one
            with D3 added runs its model through ``torch.compile`` instead
            (Potential.with_compiled_model; forces and stress from autograd outside it).
        dispersion: D3(BJ) dispersion added to the model's energy, forces and stress (one
            autograd pass; ``ase_mpnn.dispersion``): a functional name ("pbe"), a dict
            {"functional": "pbe", "three_body": True}, False (or None) for none, or "auto"
            (the default): what the model file records under "dispersion" in its manifest
            with "subtracted": true (a model trained on D3-subtracted labels gets D3 back),
            else none.
        **kwargs: ASE's own Calculator keywords (label, directory, atoms, restart); any
            other name raises a TypeError.

    Results are float64 numpy arrays in eV, eV/A and eV/A^3 (Voigt xx yy zz yz xz xy).

    Total charge and spin: ``atoms.info["charge"]`` (alias ``total_charge``) and
    ``atoms.info["spin"]``, the multiplicity 2S + 1 (aliases ``total_spin``,
    ``multiplicity``), as FAIRChem and mace-torch read them (``ase_mpnn.graph.charge_spin``).
    A model trained with them (``calc.potential.global_inputs``) uses them; any other
    model raises UnsupportedInputError for a charge other than 0 or a multiplicity other
    than 1. Changing them in ``atoms.info`` triggers a new calculation.

    Every call checks its structure (elements, finite coordinates, cell, atoms closer than
    ``min_distance``), whether or not the neighbour list is reused. One calculator may be
    shared by threads: calls are serialised by a lock, so each gets its own structure's
    results (use ``calculate_batch`` or one calculator per thread for parallel work).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "stresses"]
    default_parameters = {"device": "auto", "dtype": DEFAULT_DTYPE, "min_distance": MIN_DISTANCE,
                          "skin": DEFAULT_SKIN, "compile": False, "dispersion": "auto"}
    #: settings that need the model loaded again when they change
    _RELOAD = ("device", "dtype", "compile", "dispersion")

    def __init__(
        self,
        model: ModelSource,
        device: str = "auto",
        dtype: str = DEFAULT_DTYPE,
        min_distance: float = MIN_DISTANCE,
        skin: float = DEFAULT_SKIN,
        compile: bool = False,  # noqa: A002 (the switch's name across the peers)
        dispersion: str | dict | bool | None = "auto",
        **kwargs: Any,
    ):
        unknown = sorted(set(kwargs) - set(_ASE_KEYWORDS))
        if unknown:
            raise TypeError(_unknown_options(unknown))
        self._lock = threading.RLock()
        super().__init__(**kwargs)
        self.set(model=model, device=device, dtype=dtype, min_distance=min_distance, skin=skin,
                 compile=compile, dispersion=dispersion)

    # -- settings ------------------------------------------------------------------------
    def set(self, **kwargs: Any) -> dict[str, Any]:
        """Change settings (``model``, ``device``, ``dtype``, ``min_distance``, ``skin``,
        ``compile``, ``dispersion``); returns the changed ones and clears the results if any
        changed."""
        unknown = sorted(set(kwargs) - set(self.default_parameters) - {"model"})
        if unknown:
            raise TypeError(_unknown_options(unknown))
        source = kwargs.pop("model", None)
        settings = {name: _normalized(name, value) for name, value in kwargs.items()}
        if "skin" in settings and source is None and hasattr(self, "potential"):
            check_skin(settings["skin"], self.potential.cutoff)
        changed = super().set(**settings)
        if source is not None or set(changed) & set(self._RELOAD):
            self._load(self._source if source is None else source)
        if source is not None or changed:
            self.reset()  # results of the old settings are not kept
            self.neighbors = SkinNeighborList(self.potential.cutoff, self.parameters["skin"],
                                              self.potential.species,
                                              self.parameters["min_distance"])
        return changed if source is None else {**changed, "model": self.parameters["model"]}

    def _load(self, source: ModelSource) -> None:
        """Load ``source`` with the current device and dtype; set potential and provenance."""
        loaded = load(source, self.parameters["device"], self.parameters["dtype"])
        # bytes (or a snapshot of an in-memory object) recreate the model when unpickled;
        # a file by its absolute path (unpickling elsewhere), a built-in by its name
        self._source = loaded.data if loaded.data is not None else _portable_source(source)
        self.device, self.dtype = resolve_device(self.parameters["device"]), \
            resolve_dtype(self.parameters["dtype"])
        self.potential = loaded.potential
        dispersion = _resolve_dispersion(self.parameters["dispersion"],
                                         getattr(self.potential, "manifest", None))
        if self.parameters["compile"]:
            self.potential = _compiled(self.potential, loaded, dispersion)
        if dispersion:
            self.potential = with_dispersion(self.potential, **dispersion)
        # a committee adds its spread (energy_std, forces_std, ...) to what can be asked
        self.implemented_properties = ase_properties(self.potential.outputs)
        self.parameters["model"] = loaded.name
        self.provenance = {
            "architecture": self.potential.architecture,
            "model_sha256": loaded.sha256,
            "package": f"ase-mpnn {__version__}",
            "cutoff": self.potential.cutoff,
            "species": list(self.potential.species),
            "dispersion_added": dispersion or None,
        }

    @property
    def min_distance(self) -> float:
        """Closest allowed approach of two atoms, Angstrom."""
        return self.parameters["min_distance"]

    def todict(self, skip_default: bool = False) -> dict[str, Any]:
        """Settings and provenance, JSON-safe (what ase.db and trajectories store)."""
        return {**super().todict(skip_default=skip_default), **self.provenance}

    # -- pickling and copying rebuild the calculator from its constructor arguments -------
    def __reduce__(self) -> tuple:
        settings = {k: v for k, v in self.parameters.items() if k != "model"}
        return (_rebuild_calculator, (self._source, settings, self.provenance["model_sha256"]))

    def __deepcopy__(self, memo: dict) -> "MPNNCalculator":
        function, args = self.__reduce__()
        return function(*args)

    # -- the calculation ---------------------------------------------------------------
    def get_property(self, name: str, atoms: Any = None, allow_calculation: bool = True) -> Any:
        """ASE's get_property, serialised by the calculator's lock; ``atoms`` may also be a
        pymatgen Structure or Molecule."""
        with self._lock:
            return super().get_property(name, None if atoms is None else to_atoms(atoms),
                                        allow_calculation)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        with self._lock:
            self._calculate(None if atoms is None else to_atoms(atoms), properties,
                            system_changes)

    def _calculate(self, atoms: Atoms | None, properties: Sequence[str],
                   system_changes: Sequence[str]) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(atoms.pbc.all())
        for name in ("stress", "stresses"):
            if name in properties and not periodic:
                raise PropertyNotImplementedError(
                    f"{name} needs a cell periodic in all three directions; "
                    f"pbc={atoms.pbc.tolist()}"
                )
        graph = self._graph(atoms)
        out = self.potential(graph, forces=True, stress=periodic,
                             atomic_stresses="stresses" in properties)
        self.results = to_ase_results(out, [len(atoms)], [periodic])[0]

    def _graph(self, atoms: Atoms) -> dict[str, torch.Tensor]:
        """The checked graph of ``atoms`` (Verlet-skin list reused when still complete)."""
        graph = collate([self.neighbors.structure(atoms)], dtype=self.dtype, device=self.device)
        if self.neighbors.skin > 0:
            graph[keys.LIST_CUTOFF] = torch.tensor(self.neighbors.list_cutoff)
        return graph

    def get_hessian(self, atoms: Any = None, indices: Sequence[int] | None = None
                    ) -> np.ndarray:
        """d^2E/dx dx of ``atoms`` (default: the last structure calculated), by autograd.

        Returns a (3N, 3N) float64 array in eV/A^2, row and column 3 i + a being atom i's
        Cartesian direction a (x, y, z); the cell is held fixed. It is symmetric to
        rounding and, for a committee, the Hessian of the mean energy. With ``indices``
        only the rows of those atoms, (3 len(indices), 3N): each row costs a backward pass.
        The structure gets the same checks as in every other call; the results dict is
        left as it is.
        """
        with self._lock:
            if atoms is None:
                if self.atoms is None:
                    raise ValueError("get_hessian needs atoms: none given and none calculated")
                atoms = self.atoms
            atoms = to_atoms(atoms)
            if indices is not None:
                indices = _atom_indices(indices, len(atoms))
            hessian = self.potential.hessian(self._graph(atoms), atoms=indices)
        return hessian.cpu().numpy().astype(np.float64)

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes since the last calculation, plus "info" when the charge or spin
        entries of ``atoms.info`` changed (ASE itself does not compare info)."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and _state_info(atoms) != _state_info(self.atoms):
            changes.append("info")
        return changes

    def calculate_batch(self, structures: Sequence[Atoms], *, max_atoms: int | None = None,
                        errors: str = "raise", progress: bool = False) -> list[dict[str, Any]]:
        """Results of many structures, many per model call (``ase_mpnn.batch.evaluate``).

        Returns one dict per structure (energy, free_energy, energies, forces and, for 3-D
        periodic cells, stress), equal to calling this calculator on each in turn; with
        ``errors="store"`` a structure that fails its checks gets ``{"error": message}``.
        """
        return evaluate(structures, self.potential, max_atoms=max_atoms or MAX_ATOMS,
                        min_distance=self.min_distance, errors=errors, progress=progress)


def _normalized(name: str, value: Any) -> Any:
    """A setting in its JSON-safe form, checked (a bad value raises here, before any use)."""
    if name == "device":
        resolve_device(value)
        return str(value)
    if name == "dtype":
        return dtype_name(value)
    if name == "compile":
        return bool(value)
    if name == "dispersion":
        return normalized_dispersion(value)
    try:
        distance = float(value)
    except (TypeError, ValueError):
        distance = float("nan")
    if not distance >= 0:
        raise ValueError(f"{name} must be a distance >= 0 Angstrom, got {value!r}")
    return distance


def _atom_indices(indices: Sequence[int], n_atoms: int) -> np.ndarray:
    """``indices`` as non-negative atom indices (negative ones count from the end)."""
    chosen = np.asarray(indices).ravel()
    if chosen.dtype.kind not in "iu" or ((chosen < -n_atoms) | (chosen >= n_atoms)).any():
        raise ValueError(f"indices must be atom indices of the {n_atoms} atoms, got "
                         f"{np.asarray(indices).tolist()}")
    return chosen % max(n_atoms, 1)


#: D3 cutoffs (Angstrom) the ``dispersion`` setting may shorten (simple-dftd3's by default)
_D3_CUTOFFS = ("cutoff", "cn_cutoff", "three_body_cutoff")


def normalized_dispersion(value: Any) -> str | dict | bool:
    """The ``dispersion`` setting in its JSON-safe form: False, "auto", or
    {"functional": name, "three_body": bool, and any of cutoff, cn_cutoff,
    three_body_cutoff in Angstrom} (the functional and cutoffs checked here)."""
    if value is None or value is False:
        return False
    if isinstance(value, str) and value == "auto":
        return "auto"
    if isinstance(value, str):
        value = {"functional": value}
    if not isinstance(value, dict) or "functional" not in value \
            or set(value) - {"functional", "three_body", *_D3_CUTOFFS}:
        raise ValueError("dispersion must be a functional name, {'functional': name, "
                         "'three_body': bool, 'cutoff' / 'cn_cutoff' / 'three_body_cutoff': "
                         f"Angstrom}}, 'auto' or False, got {value!r}")
    parameters = d3bj_parameters(value["functional"])  # raises for an unknown name
    found = {"functional": parameters.functional,
             "three_body": bool(value.get("three_body", False))}
    for key in _D3_CUTOFFS:
        if key in value:
            cutoff = value[key]
            if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) \
                    or not 0 < cutoff < float("inf"):
                raise ValueError(f"dispersion {key} must be a positive number of Angstrom, "
                                 f"got {cutoff!r}")
            found[key] = float(cutoff)
    return found


def resolve_dispersion(setting: Any, manifest: dict | None) -> dict | None:
    """The D3 settings (``with_dispersion`` keywords) a ``dispersion`` option asks for on a
    model with this manifest, or None: the option checked (``normalized_dispersion``), and
    "auto" read from the model file's record. For engines that build their own potential
    (``ase_mpnn.integrations.torchsim``)."""
    return _resolve_dispersion(normalized_dispersion(setting), manifest)


def _resolve_dispersion(setting: str | dict | bool, manifest: dict | None) -> dict | None:
    """The D3 settings to add: the explicit ones, or for "auto" the model file's record
    {"functional": ..., "subtracted": true} (trained on D3-subtracted labels)."""
    if setting != "auto":
        return setting or None
    record = (manifest or {}).get("dispersion")
    if isinstance(record, dict) and record.get("subtracted"):
        return normalized_dispersion({k: v for k, v in record.items()
                                      if k in ("functional", "three_body")})
    return None


def _unknown_options(names: Sequence[str]) -> str:
    valid = ["model", *MPNNCalculator.default_parameters, *_ASE_KEYWORDS]
    return (f"MPNNCalculator got unknown option(s) {', '.join(map(repr, names))}; "
            f"valid options: {', '.join(valid)}")


def _compiled(potential: Any, loaded: Any, dispersion: dict | None) -> Any:
    """``potential`` compiled ahead of time where it can be (a single model without charge,
    spin or D3), else its model through torch.compile."""
    from .compiled_cache import compiled_with_eager_twin, is_compilable

    if dispersion or not loaded.sha256 or not is_compilable(potential):
        return potential.with_compiled_model()
    return compiled_with_eager_twin(potential, loaded.sha256, loaded.name)


def _portable_source(source: Any) -> str | list[str]:
    """A model file's absolute path, or the built-in model's name, as given (a list of
    them for a committee given as a list)."""
    if isinstance(source, (list, tuple)):
        return [_portable_source(member) for member in source]
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_file() else str(source)


def _state_info(atoms: Atoms) -> list[str]:
    """The charge and spin entries of ``atoms.info``, comparable with ==."""
    return [repr(np.asarray(atoms.info.get(key)).tolist()) for key in _STATE_INFO]


def _rebuild_calculator(source: str | bytes, settings: dict[str, Any],
                        model_sha256: str | None = None) -> MPNNCalculator:
    """Unpickling hook: a fresh calculator from the constructor arguments, refused when the
    model file now holds another model than when it was pickled."""
    calculator = MPNNCalculator(source, **settings)
    found = calculator.provenance["model_sha256"]
    if model_sha256 is not None and found != model_sha256:
        described = "<model bytes>" if isinstance(source, bytes) else repr(source)
        raise ModelFileError(
            f"model {described} changed since this calculator was pickled (manifest sha256 "
            f"{found[:12]}... instead of {model_sha256[:12]}...): results would come from "
            "other weights")
    return calculator
