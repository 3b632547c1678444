"""atomate2 Makers (relax, static, MD) that run an ase-mpnn potential.

These are atomate2's own force-field Makers (``atomate2.forcefields``) with the ASE
calculator pointed at :class:`ase_mpnn.MPNNCalculator`, so relaxations, MD and the
output documents are atomate2's: each job returns a
:class:`atomate2.forcefields.schemas.ForceFieldTaskDocument` (energies in eV, forces in
eV/A; stress as atomate2 stores it, a 3x3 tensor in kbar with VASP's sign, i.e. -10/GPa
times ASE's) whose ``forcefield_name`` is ``"ase-mpnn:<model>"``, ``forcefield_version``
the ase-mpnn version and ``ase_calculator_name`` ``"MPNNCalculator"``.

    >>> from jobflow import run_locally
    >>> from ase_mpnn.integrations.atomate2 import MPNNRelaxMaker
    >>> job = MPNNRelaxMaker(model="emt-cuni-schnet").make(structure)  # doctest: +SKIP
    >>> run_locally(job, create_folders=True)  # doctest: +SKIP

``calculator_kwargs`` go to the calculator (``device``, ``dtype``, ``min_distance``); the
model is the Makers' ``model`` field (a built-in name or a model file path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

try:
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker, ForceFieldStaticMaker
    from atomate2.forcefields.md import ForceFieldMDMaker
    from atomate2.forcefields.utils import MLFF, ase_calculator
except ImportError as exc:  # pragma: no cover - exercised only without atomate2
    raise ImportError(
        "ase_mpnn.integrations.atomate2 needs atomate2 >= 0.1: "
        "pip install 'ase-mpnn[atomate2]'"
    ) from exc

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

__all__ = [
    "CALCULATOR_META",
    "DEFAULT_MODEL",
    "MPNNMDMaker",
    "MPNNRelaxMaker",
    "MPNNStaticMaker",
    "forcefield_name",
]

DEFAULT_MODEL = "emt-cuni-schnet"
#: monty-style pointer atomate2 uses to build the calculator (``calculator_meta``).
CALCULATOR_META = {"@module": "ase_mpnn.calculator", "@callable": "MPNNCalculator"}


def forcefield_name(model: str) -> str:
    """The ``forcefield_name`` recorded in the task documents for ``model``."""
    return f"ase-mpnn:{model}"


def _calculator_meta() -> dict[str, str]:
    return dict(CALCULATOR_META)


@dataclass
class _MPNNMakerMixin:
    """The ``model`` field: it picks the calculator's model and the documents' name.

    Must come before the atomate2 Maker among the bases, so that its ``__post_init__``
    runs first and its field defaults win.
    """

    model: str = DEFAULT_MODEL
    force_field_name: str | MLFF | dict = field(default_factory=_calculator_meta)

    def __post_init__(self) -> None:
        self.model = str(self.model)
        if "model" in self.calculator_kwargs:  # type: ignore[attr-defined]
            raise ValueError("give the model as the Maker's model field, not in calculator_kwargs")
        super().__post_init__()  # type: ignore[misc]
        # set every time, so that dataclasses.replace(maker, model=...) stays consistent
        doc_kwargs = self.task_document_kwargs  # type: ignore[attr-defined]
        doc_kwargs["forcefield_name"] = forcefield_name(self.model)

    def _get_calculator(self) -> Calculator:
        """atomate2's calculator factory, given this Maker's model."""
        return ase_calculator(
            self.calculator_meta,  # type: ignore[attr-defined]
            model=self.model,
            **self.calculator_kwargs,  # type: ignore[attr-defined]
        )


@dataclass
class MPNNRelaxMaker(_MPNNMakerMixin, ForceFieldRelaxMaker):
    """Relax a structure with an ase-mpnn potential (atomate2 ``ForceFieldRelaxMaker``).

    Parameters
    ----------
    name
        The job name.
    model
        Built-in model name (``ase_mpnn.list_models()``) or a model file path.
    relax_cell
        Whether to relax the cell too (default True, as in atomate2).
    steps
        Maximum number of ionic steps.
    relax_kwargs
        Keyword arguments of atomate2's ``AseRelaxer.relax`` (e.g. ``fmax`` in eV/A,
        default 0.1).
    optimizer_kwargs
        Keyword arguments of ``AseRelaxer`` (e.g. ``optimizer``, default FIRE).
    calculator_kwargs
        Keyword arguments of :class:`ase_mpnn.MPNNCalculator`.

    The other fields are those of ``ForceFieldRelaxMaker``.
    """

    name: str = "ase-mpnn relax"


@dataclass
class MPNNStaticMaker(_MPNNMakerMixin, ForceFieldStaticMaker):
    """Single point with an ase-mpnn potential (atomate2 ``ForceFieldStaticMaker``).

    Parameters
    ----------
    name
        The job name.
    model
        Built-in model name (``ase_mpnn.list_models()``) or a model file path.
    calculator_kwargs
        Keyword arguments of :class:`ase_mpnn.MPNNCalculator`.
    """

    name: str = "ase-mpnn static"


@dataclass
class MPNNMDMaker(_MPNNMakerMixin, ForceFieldMDMaker):
    """Molecular dynamics with an ase-mpnn potential (atomate2 ``ForceFieldMDMaker``).

    Parameters
    ----------
    name
        The job name.
    model
        Built-in model name (``ase_mpnn.list_models()``) or a model file path.
    time_step
        Time step in fs (default 2 fs, 0.5 fs with hydrogen isotopes).
    n_steps
        Number of MD steps.
    ensemble
        ``"nve"``, ``"nvt"`` (default, Langevin) or ``"npt"``.
    temperature
        Temperature in K, or a schedule interpolated over the run.
    pressure
        Pressure in kbar for NPT.
    calculator_kwargs
        Keyword arguments of :class:`ase_mpnn.MPNNCalculator`.

    The other fields are those of ``ForceFieldMDMaker``.
    """

    name: str = "ase-mpnn MD"
