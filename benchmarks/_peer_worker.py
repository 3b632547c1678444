"""Measurement worker for ``benchmarks/peers.py``: one process per virtual environment.

It runs inside a peer's side environment (``.bench-peers/<peer>/bin/python``) to time that
peer's own ASE calculator, and inside the main environment to time ase-mpnn's
``MPNNCalculator``, so that every number comes from the same code below. It imports only
numpy and ASE at module level; each builder imports its package when called.

Protocol (``--serve``): one JSON object per line on stdin, one JSON reply per line on
stdout; anything the peers print goes to stderr. Commands:

    {"cmd": "versions"}                                  -> {"versions": {package: version}}
    {"cmd": "setup", "id": ID, "model": NAME, "dtype": "float32"|"float64", "k": K,
     "threads": N, "options": {...}}                     -> {"id", "parameters", "settings",
                                                             "first_ms", "warm_ms", "checked"}
    {"cmd": "round", "id": ID, "repeats": R}             -> {"ms": mean ms per call}
    {"cmd": "drop"}                                      -> {} (frees every set-up model)
    {"cmd": "quit"}

A call is ``atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()`` after
moving every atom by fresh Gaussian noise (NOISE_A) around the rattled cell, so that no
calculator can answer from its cache; the noise is drawn before the clock starts.
Errors are answered as {"error": "..."} and the worker goes on.

NAME is "schnetpack", "mace", "nequip" (a peer; options: ``one_call`` for SchNetPack,
``aoti`` for nequip, ``use_reduced_cg`` for mace) or "ours-schnet", "ours-mace",
"ours-nequip" (options: ``skin``, Angstrom; ``compile``: ahead-of-time, as
``MPNNCalculator(..., compile=True)``). Two shims make the peers load under torch
2.13, neither touching what is computed: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (SpkCalculator
torch.loads a whole pickled model; mace-torch sets the same on import), and SchNetPack's
import of the renamed type variable ``torch.utils.data.dataloader.T_co``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import bulk

LATTICE_A = 3.61  # fcc Cu lattice constant, Angstrom
CUTOFF_A = 5.0  # neighbour cutoff of every model, Angstrom
SPECIES = ("Cu", "Ni")  # elements every model covers
RATTLE_A = 0.05  # standard deviation of the fixed rattle of the reference cell, Angstrom
NOISE_A = 0.005  # standard deviation of the fresh per-call displacement, Angstrom
AVG_NUM_NEIGHBORS = 42.0  # fcc Cu within 5 A: 12 + 6 + 24 neighbours (a normalisation only)

PACKAGES = ("torch", "e3nn", "ase", "numpy", "matscipy", "vesin", "mace-torch", "schnetpack",
            "nequip", "ase-mpnn")


def cu_cell(k: int) -> Atoms:
    """Cubic fcc Cu cell (a = 3.61 A) repeated k times per axis (4 k^3 atoms), rattled 0.05 A."""
    atoms = bulk("Cu", "fcc", a=LATTICE_A, cubic=True).repeat(k)
    atoms.rattle(RATTLE_A, seed=0)
    return atoms


def versions() -> dict[str, str]:
    """Installed versions of the packages that matter here (absent ones left out)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def n_parameters(module: Any) -> int:
    """Number of scalar parameters of a torch module."""
    return int(sum(p.numel() for p in module.parameters()))


# ---------------------------------------------------------------------------------------
# builders: each returns (ASE calculator, parameter count, settings dict)
# ---------------------------------------------------------------------------------------

Built = tuple[Any, int, dict]


def build_schnetpack(dtype: str, workdir: Path, options: dict) -> Built:
    """SchNetPack SchNet (64 features, 3 interactions, 20 Gaussians, cosine cutoff 5 A),
    saved with torch.save and loaded by ``schnetpack.interfaces.SpkCalculator``."""
    import torch

    restore_torch_typing_alias()
    import schnetpack as spk

    torch.manual_seed(0)
    settings = {
        "representation": "SchNet(n_atom_basis=64, n_interactions=3, radial_basis="
                          "GaussianRBF(n_rbf=20, cutoff=5), cutoff_fn=CosineCutoff(5))",
        "model": "NeuralNetworkPotential(input_modules=[Strain(), PairwiseDistances()], "
                 "output_modules=[Atomwise(n_in=64), Forces(calc_forces=True, calc_stress=True)])",
    }
    representation = spk.representation.SchNet(
        n_atom_basis=64, n_interactions=3,
        radial_basis=spk.nn.GaussianRBF(n_rbf=20, cutoff=CUTOFF_A),
        cutoff_fn=spk.nn.CosineCutoff(CUTOFF_A))
    model = spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.Strain(), spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=64, output_key="energy"),
            spk.atomistic.Forces(calc_forces=True, calc_stress=True, energy_key="energy",
                                 force_key="forces", stress_key="stress"),
        ])
    path = workdir / "schnetpack_model.pt"
    torch.save(model, path)
    if importlib.util.find_spec("matscipy") is not None:  # the faster of its two lists
        neighbor_list = spk.transform.MatScipyNeighborList(cutoff=CUTOFF_A)
    else:
        neighbor_list = spk.transform.ASENeighborList(cutoff=CUTOFF_A)
    settings["neighbor_list"] = f"{type(neighbor_list).__name__}(cutoff=5)"
    calc = spk.interfaces.SpkCalculator(
        model_file=str(path), neighbor_list=neighbor_list, energy_key="energy",
        force_key="forces", stress_key="stress", energy_unit="eV", position_unit="Angstrom",
        device="cpu", dtype=getattr(torch, dtype))
    return calc, n_parameters(calc.model), settings


def restore_torch_typing_alias() -> None:
    """SchNetPack (2.0.4 to 2.1.1) imports the type variable ``T_co`` from
    ``torch.utils.data.dataloader``, which torch 2.13 renamed ``_T_co``; put the old name
    back (a typing annotation only: nothing that runs depends on it)."""
    from torch.utils.data import dataloader

    if not hasattr(dataloader, "T_co"):
        dataloader.T_co = dataloader._T_co


def build_mace(dtype: str, workdir: Path, options: dict) -> Built:
    """mace-torch ScaleShiftMACE (r_max 5, 8 Bessel, p 5, max_ell 3, 32x0e, correlation 3,
    2 interactions, 16x0e MLP), saved with torch.save and loaded by ``MACECalculator``."""
    import torch
    from e3nn import o3
    from mace import modules
    from mace.calculators import MACECalculator

    torch.set_default_dtype(torch.float64)  # as mace's training script builds models
    torch.manual_seed(0)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    kwargs = {
        "r_max": CUTOFF_A, "num_bessel": 8, "num_polynomial_cutoff": 5, "max_ell": 3,
        "hidden_irreps": "32x0e", "MLP_irreps": "16x0e", "correlation": 3,
        "num_interactions": 2, "radial_MLP": [64, 64, 64], "atomic_numbers": [28, 29],
        "num_elements": 2, "avg_num_neighbors": AVG_NUM_NEIGHBORS,
        "use_reduced_cg": bool(options.get("use_reduced_cg", True)),
        "atomic_inter_scale": 1.0, "atomic_inter_shift": 0.0,
    }
    settings = dict(kwargs, model="ScaleShiftMACE", gate="silu",
                    interaction_cls="RealAgnosticResidualInteractionBlock",
                    interaction_cls_first="RealAgnosticResidualInteractionBlock")
    kwargs.update(hidden_irreps=o3.Irreps(kwargs["hidden_irreps"]),
                  MLP_irreps=o3.Irreps(kwargs["MLP_irreps"]))
    model = modules.ScaleShiftMACE(
        **kwargs, interaction_cls=block, interaction_cls_first=block,
        atomic_energies=np.array([-1.0, -2.0]), gate=torch.nn.functional.silu)
    path = workdir / f"mace_{dtype}.model"
    torch.save(model, path)
    calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype=dtype)
    return calc, n_parameters(calc.models[0]), settings


def build_nequip(dtype: str, workdir: Path, options: dict) -> Built:
    """nequip NequIPGNNModel (l_max 1, parity, 2 layers, 32 features, r_max 5, 8 Bessel,
    p 6, radial MLP 2 x 64) in eager mode, wrapped in ``NequIPCalculator`` with the
    transforms that ``NequIPCalculator``'s own loaders attach (species map, neighbour list).
    """
    from nequip.integrations.ase import NequIPCalculator
    from nequip.integrations.utils import basic_transforms
    from nequip.model import NequIPGNNModel
    from nequip.nn import graph_model
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)
    kwargs = {
        "model_dtype": dtype, "r_max": CUTOFF_A, "type_names": list(SPECIES), "num_layers": 2,
        "l_max": 1, "parity": True, "num_features": 32, "radial_mlp_depth": 2,
        "radial_mlp_width": 64, "num_bessels": 8, "polynomial_cutoff_p": 6,
        "avg_num_neighbors": AVG_NUM_NEIGHBORS, "per_type_energy_shifts": {"Cu": -1.0, "Ni": -2.0},
    }
    model = NequIPGNNModel(seed=0, **kwargs)
    model.eval()
    type_names = model.metadata[graph_model.TYPE_NAMES_KEY].split(" ")
    transforms = basic_transforms(model.metadata, CUTOFF_A, type_names,
                                  {t: t for t in type_names})
    backend = getattr(transforms[-1], "backend", "?")
    settings = dict(kwargs, builder="NequIPGNNModel", mode="eager",
                    neighbor_list=f"{type(transforms[-1]).__name__}(backend={backend})")
    calc = NequIPCalculator(model=model, device="cpu", transforms=transforms)
    if options.get("aoti"):
        path = workdir / f"nequip_{dtype}.nequip.pt2"
        if not path.exists():
            export_nequip_aoti(model, calc.atoms_to_data(cu_cell(3)), path)
        calc = NequIPCalculator.from_compiled_model(
            str(path), device="cpu", chemical_species_to_atom_type_map=True)
        settings["mode"] = "aotinductor (nequip-compile --mode aotinductor --target ase)"
    return calc, n_parameters(model), settings


def export_nequip_aoti(model: Any, data: dict, path: Path) -> None:
    """What ``nequip-compile --mode aotinductor --target ase`` does to a loaded model, done
    to the in-memory one (nequip-compile itself wants a trained checkpoint or package):
    dynamic atom and edge counts (2..inf), one frame, nequip's own export function."""
    import torch
    from nequip.model.modify_utils import modify
    from nequip.scripts._compile_utils import AOTI_ASE_TARGET, COMPILE_TARGET_DICT
    from nequip.scripts._workflow_utils import set_workflow_state
    from nequip.utils.aot import aot_export_model
    from nequip.utils.aoti_metadata import (
        NEQUIP_AOTI_INPUTS_KEY,
        NEQUIP_AOTI_OUTPUTS_KEY,
        serialize_aoti_keys,
    )
    from nequip.utils.global_state import get_latest_global_state

    model = modify(model, [])
    metadata = dict(model.metadata)
    metadata.update(get_latest_global_state(only_metadata_related=True))
    metadata = {k: str(int(v)) if isinstance(v, bool) else v for k, v in metadata.items()}
    target = COMPILE_TARGET_DICT[AOTI_ASE_TARGET]
    dims = {name: torch.export.dynamic_shapes.Dim(f"num_{name}s", min=2, max=torch.inf)
            for name in ("graph", "node", "edge")}
    metadata[NEQUIP_AOTI_INPUTS_KEY] = serialize_aoti_keys(target["input"])
    metadata[NEQUIP_AOTI_OUTPUTS_KEY] = serialize_aoti_keys(target["output"])
    set_workflow_state("compile")
    try:
        aot_export_model(
            model=model, device=torch.device("cpu"), input_fields=target["input"],
            output_fields=target["output"], data=target["data_settings"](dict(data)),
            batch_map=target["batch_map_settings"](dims), output_path=str(path),
            inductor_configs={"aot_inductor.metadata": {k: str(v)
                                                        for k, v in metadata.items()}})
    finally:
        set_workflow_state(None)


def build_ours(architecture: str, dtype: str, options: dict) -> Built:
    """ase-mpnn's model of ``architecture`` at the peers' settings (the shared presets in
    ``ase_mpnn.models.presets.BENCHMARK``), in ``MPNNCalculator``."""
    from ase_mpnn import MPNNCalculator
    from ase_mpnn.models.presets import BENCHMARK, build_preset

    if architecture not in ("schnet", "mace", "nequip"):
        raise ValueError(f"unknown architecture {architecture!r}")
    model = build_preset(architecture, list(SPECIES), CUTOFF_A, seed=0)
    skin = float(options.get("skin", 0.5))
    compiled = bool(options.get("compile", False))
    calc = MPNNCalculator(model, device="cpu", dtype=dtype, skin=skin, compile=compiled)
    settings = dict(model=type(model).__name__, cutoff=CUTOFF_A, skin=skin,
                    compile=compiled, **BENCHMARK[architecture][1])
    return calc, n_parameters(model), settings


BUILDERS: dict[str, Callable[[str, Path, dict], Built]] = {
    "schnetpack": build_schnetpack,
    "mace": build_mace,
    "nequip": build_nequip,
}


def build(name: str, dtype: str, workdir: Path, options: dict) -> Built:
    """A peer's calculator (name: schnetpack, mace, nequip) or ours (name: ours-ARCH)."""
    if name.startswith("ours-"):
        return build_ours(name[len("ours-"):], dtype, options)
    return BUILDERS[name](dtype, workdir, options)


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------

@dataclass
class Bench:
    """One calculator on one cell, with the noise generator for fresh positions."""

    calc: Any
    atoms: Atoms
    one_call: bool = False
    reference: np.ndarray = field(init=False)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(1))

    def __post_init__(self) -> None:
        self.reference = self.atoms.positions.copy()
        self.atoms.calc = self.calc

    def displacements(self, n: int) -> list[np.ndarray]:
        """n fresh position arrays, Angstrom: the reference plus N(0, NOISE_A) noise."""
        shape = self.reference.shape
        return [self.reference + self.rng.normal(0.0, NOISE_A, shape) for _ in range(n)]

    def step(self, positions: np.ndarray) -> None:
        """Move the atoms and evaluate energy, forces and stress as an ASE user does.

        With ``one_call``, instead one ``calc.calculate(atoms, [energy, forces, stress])``:
        not what ASE's getters do (they ask for one property each), timed for calculators
        that rerun their model per requested property.
        """
        self.atoms.positions = positions
        if self.one_call:
            self.calc.calculate(self.atoms, ["energy", "forces", "stress"])
            return
        self.atoms.get_potential_energy()
        self.atoms.get_forces()
        self.atoms.get_stress()

    def check(self) -> list[str]:
        """The last call's results that are present (ASE names); raises if one is not finite
        or not of ASE's shape (a guard against a mis-built model timing nothing useful)."""
        shapes = {"energy": (), "forces": (len(self.atoms), 3), "stress": (6,)}
        present = []
        for key, shape in shapes.items():
            if key not in self.calc.results:
                continue
            value = np.asarray(self.calc.results[key], dtype=float)
            if key == "stress" and value.shape == (3, 3):  # SchNetPack leaves it 3 x 3
                value = value.reshape(9)[[0, 4, 8, 5, 2, 1]]
            if value.shape != shape or not np.isfinite(value).all():
                raise ValueError(f"{key}: shape {value.shape} or values not finite")
            present.append(key)
        if not present:
            raise ValueError("the calculator left no energy, forces or stress")
        return present

    def round(self, repeats: int) -> float:
        """Mean wall time of ``repeats`` steps, ms."""
        positions = self.displacements(repeats)
        start = time.perf_counter()
        for p in positions:
            self.step(p)
        return (time.perf_counter() - start) / repeats * 1e3


def set_threads(threads: int) -> None:
    """torch intra-op threads (the environment's OMP_NUM_THREADS is set by the caller)."""
    import torch

    torch.set_num_threads(threads)


class Worker:
    """The set-up benches of this process, by id, and the command handlers."""

    def __init__(self) -> None:
        self.benches: dict[str, Bench] = {}
        self.workdir = Path(tempfile.mkdtemp(prefix="peer-worker-"))

    def setup(self, msg: dict) -> dict:
        """Build, attach to a fresh cell, run three untimed calls; reply with the first's
        time and the best of the other two (ms)."""
        set_threads(int(msg.get("threads", 1)))
        calc, params, settings = build(msg["model"], msg["dtype"], self.workdir,
                                       msg.get("options", {}))
        one_call = bool(msg.get("options", {}).get("one_call", False))
        if one_call:
            settings["timed"] = "calc.calculate(atoms, ['energy', 'forces', 'stress'])"
        bench = Bench(calc, cu_cell(int(msg["k"])), one_call=one_call)
        first = bench.round(1)
        warm = min(bench.round(1), bench.round(1))
        checked = bench.check()
        self.benches[msg["id"]] = bench
        return {"id": msg["id"], "parameters": params, "settings": settings,
                "atoms": len(bench.atoms), "first_ms": first, "warm_ms": warm,
                "checked": checked}

    def handle(self, msg: dict) -> dict | None:
        """Reply to one command (None: quit)."""
        cmd = msg["cmd"]
        if cmd == "quit":
            return None
        if cmd == "versions":
            return {"versions": versions()}
        if cmd == "setup":
            return self.setup(msg)
        if cmd == "round":
            return {"ms": self.benches[msg["id"]].round(int(msg["repeats"]))}
        if cmd == "drop":
            self.benches.clear()
            import gc
            gc.collect()
            return {}
        raise ValueError(f"unknown command {cmd!r}")


def serve() -> None:
    """Answer JSON-line commands on stdin; the replies go to the original stdout only."""
    reply_stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the peers print lands on stderr
    sys.stdout = sys.stderr
    worker = Worker()
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                reply = worker.handle(json.loads(line))
            except Exception as error:  # noqa: BLE001  (reported to the orchestrator)
                traceback.print_exc()
                reply = {"error": f"{type(error).__name__}: {error}"}
            if reply is None:
                break
            reply_stream.write(json.dumps(reply) + "\n")
    finally:
        shutil.rmtree(worker.workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="answer JSON-line commands")
    parser.add_argument("--versions", action="store_true", help="print versions as JSON")
    args = parser.parse_args()
    if args.versions:
        print(json.dumps(versions()))
    elif args.serve:
        serve()
    else:
        parser.error("use --serve (driven by benchmarks/peers.py) or --versions")


if __name__ == "__main__":
    # SchNetPack's SpkCalculator loads a whole pickled model with torch.load, which
    # torch >= 2.6 refuses by default; mace-torch sets the same switch on import.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    main()
