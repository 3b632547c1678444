"""quacc recipes (static, relax, MD) that run an ase-mpnn potential.

They mirror ``quacc.recipes.mlip`` (quacc >= 1.8) argument for argument, with ``model``
(a built-in name from ``ase_mpnn.list_models()`` or a model file path) in place of
``library``; ``**calc_kwargs`` go to :class:`ase_mpnn.MPNNCalculator` (``device``,
``dtype``, ``min_distance``). The jobs are quacc ``@job`` functions, so they run under
whatever ``QUACC_WORKFLOW_ENGINE`` is set (plain function calls when none is), use
quacc's ``Runner`` (scratch and results directories, file gzipping) and return quacc's
``Summarize`` task documents (energies in eV, forces in eV/A, stress in eV/A^3).

    >>> from ase.build import bulk
    >>> from ase_mpnn.integrations.quacc import relax_job
    >>> result = relax_job(bulk("Cu"), model="emt-cuni-schnet", relax_cell=True)  # doctest: +SKIP
    >>> result["results"]["energy"]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from ase.md.npt import NPT
    from ase.units import bar, fs
    from quacc import Remove, job
    from quacc.atoms.core import get_final_atoms_from_dynamics
    from quacc.runners.ase import Runner
    from quacc.schemas.ase import Summarize
    from quacc.utils.dicts import recursive_dict_merge
    from quacc.utils.md import resolve_md_ensemble, upper_triangular_cell
except ImportError as exc:  # pragma: no cover - exercised only without quacc
    raise ImportError(
        "ase_mpnn.integrations.quacc needs quacc >= 1.8: pip install 'ase-mpnn[quacc]'"
    ) from exc

from ase_mpnn.calculator import MPNNCalculator

if TYPE_CHECKING:
    from ase.atoms import Atoms
    from ase.md.md import MolecularDynamics
    from quacc.types import DynSchema, MDParams, OptParams, OptSchema, RunSchema
    from quacc.utils.md import MDEnsemble

__all__ = ["DEFAULT_MODEL", "md_job", "relax_job", "static_job"]

DEFAULT_MODEL = "emt-cuni-schnet"


def _calculator(model: str | Path, calc_kwargs: dict[str, Any]) -> MPNNCalculator:
    """A fresh calculator; model files are cached per process, so this is cheap."""
    return MPNNCalculator(model, **calc_kwargs)


def _fields(kind: str, additional_fields: dict[str, Any] | None) -> dict[str, Any]:
    """quacc's ``name`` entry for a job, overridable by ``additional_fields``."""
    return {"name": f"ase-mpnn {kind}"} | (additional_fields or {})


@job
def static_job(
    atoms: Atoms,
    model: str | Path = DEFAULT_MODEL,
    additional_fields: dict[str, Any] | None = None,
    **calc_kwargs: Any,
) -> RunSchema:
    """Single-point energy, forces (and stress for 3-D periodic cells).

    Parameters
    ----------
    atoms
        Atoms object.
    model
        Built-in model name (``ase_mpnn.list_models()``) or a model file path.
    additional_fields
        Additional fields to add to the results dictionary.
    **calc_kwargs
        Keyword arguments of :class:`ase_mpnn.MPNNCalculator` (``device``, ``dtype``,
        ``min_distance``).

    Returns
    -------
    RunSchema
        :meth:`quacc.schemas.ase.Summarize.run` document; ``results`` holds energy (eV),
        forces (eV/A), stress (Voigt, eV/A^3) and per-atom energies (eV);
        ``parameters`` holds the model name, sha256 and package version.
    """
    calc = _calculator(model, calc_kwargs)
    final_atoms = Runner(atoms, calc).run_calc()
    return Summarize(additional_fields=_fields("Static", additional_fields)).run(
        final_atoms, atoms
    )


@job
def relax_job(
    atoms: Atoms,
    model: str | Path = DEFAULT_MODEL,
    relax_cell: bool = False,
    opt_params: OptParams | None = None,
    write_files: bool = True,
    additional_fields: dict[str, Any] | None = None,
    **calc_kwargs: Any,
) -> OptSchema:
    """Relax a structure (positions, and the cell if ``relax_cell``).

    Parameters
    ----------
    atoms
        Atoms object.
    model
        Built-in model name (``ase_mpnn.list_models()``) or a model file path.
    relax_cell
        Whether to relax the cell too (``FrechetCellFilter``; 3-D periodic cells only).
    opt_params
        Keyword arguments of :meth:`quacc.runners.ase.Runner.run_opt`; ``fmax``
        (eV/A) defaults to 0.01, the optimizer to BFGS.
    write_files
        Whether to write the optimizer log, restart and trajectory files.
    additional_fields
        Additional fields to add to the results dictionary.
    **calc_kwargs
        Keyword arguments of :class:`ase_mpnn.MPNNCalculator`.

    Returns
    -------
    OptSchema
        :meth:`quacc.schemas.ase.Summarize.opt` document (final results in eV, eV/A,
        eV/A^3, the trajectory and ``converged``); quacc raises if the optimisation did
        not converge and its ``CHECK_CONVERGENCE`` setting is on.
    """
    opt_flags = recursive_dict_merge({"fmax": 0.01}, opt_params)
    calc = _calculator(model, calc_kwargs)
    dyn = Runner(atoms, calc).run_opt(
        relax_cell=relax_cell, write_files=write_files, **opt_flags
    )
    trajectory = None if write_files else [get_final_atoms_from_dynamics(dyn)]
    return Summarize(additional_fields=_fields("Relax", additional_fields)).opt(
        dyn, trajectory=trajectory
    )


def _md_flags(
    atoms: Atoms,
    dynamics: type[MolecularDynamics] | MDEnsemble,
    steps: int,
    timestep_fs: float,
    temperature_K: float | None,
    pressure_bar: float | None,
    md_params: MDParams | None,
) -> tuple[Atoms, type[MolecularDynamics], dict[str, Any]]:
    """quacc's MD set-up: dynamics class, its defaults and the merged run parameters."""
    if isinstance(dynamics, str):
        dynamics, dynamics_defaults = resolve_md_ensemble(
            dynamics,
            timestep_fs=timestep_fs,
            temperature_K=temperature_K,
            pressure_bar=pressure_bar,
        )
    else:
        dynamics_defaults = {
            "temperature_K": temperature_K if temperature_K is not None else Remove,
            "pressure_au": pressure_bar * bar if pressure_bar is not None else Remove,
        }
    dynamics_defaults["timestep"] = timestep_fs * fs
    if dynamics is NPT:
        atoms = upper_triangular_cell(atoms)
    md_defaults: dict[str, Any] = {"steps": steps, "dynamics_kwargs": dynamics_defaults}
    if temperature_K is not None and not atoms.get_momenta().any():
        md_defaults["maxwell_boltzmann_kwargs"] = {"temperature_K": temperature_K}
    return atoms, dynamics, recursive_dict_merge(md_defaults, md_params)


@job
def md_job(
    atoms: Atoms,
    model: str | Path = DEFAULT_MODEL,
    dynamics: type[MolecularDynamics] | MDEnsemble = "nve",
    steps: int = 20000,
    timestep_fs: float = 0.5,
    temperature_K: float | None = None,
    pressure_bar: float | None = None,
    md_params: MDParams | None = None,
    additional_fields: dict[str, Any] | None = None,
    **calc_kwargs: Any,
) -> DynSchema:
    """Molecular dynamics, set up exactly as ``quacc.recipes.mlip.md.md_job``.

    Parameters
    ----------
    atoms
        Atoms object.
    model
        Built-in model name (``ase_mpnn.list_models()``) or a model file path.
    dynamics
        An ensemble name of ``quacc.utils.md.MDEnsemble`` (``"nve"``, ``"nvt"``,
        ``"nvt_langevin"``, ``"npt"``, ...) or an ASE ``MolecularDynamics`` class.
    steps
        Number of MD steps.
    timestep_fs
        Time step in fs.
    temperature_K
        Temperature in K, where the ensemble uses one; unless the atoms already have
        momenta it also draws Maxwell-Boltzmann initial velocities.
    pressure_bar
        Pressure in bar for the NPT-family ensembles (default 0 bar there).
    md_params
        Keyword arguments of :meth:`quacc.runners.ase.Runner.run_md`.
    additional_fields
        Additional fields to add to the results dictionary.
    **calc_kwargs
        Keyword arguments of :class:`ase_mpnn.MPNNCalculator`.

    Returns
    -------
    DynSchema
        :meth:`quacc.schemas.ase.Summarize.md` document with the trajectory and the
        per-step results (eV, eV/A, eV/A^3).
    """
    atoms, dynamics, merged_md_params = _md_flags(
        atoms, dynamics, steps, timestep_fs, temperature_K, pressure_bar, md_params
    )
    calc = _calculator(model, calc_kwargs)
    dyn = Runner(atoms, calc).run_md(dynamics, **merged_md_params)
    return Summarize(additional_fields=_fields("MD", additional_fields)).md(dyn)
