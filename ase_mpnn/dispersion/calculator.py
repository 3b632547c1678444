"""D3BJ: the D3(BJ) dispersion correction as an ASE calculator of its own."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ..graph import Graph, Structure, check_geometry, collate, to_atoms
from ..potential import EnergyTerm, evaluate_terms
from ..results import to_ase_results
from .d3 import D3Dispersion
from .tables import CN_CUTOFF, DISP2_CUTOFF, DISP3_CUTOFF


def dispersion_graph(structures: Sequence[Atoms], dtype: torch.dtype = torch.float64,
                     device: torch.device | str = "cpu") -> Graph:
    """A batched graph with no model edges, enough for ``D3Dispersion`` (positions, cell,
    pbc, atomic numbers, batch)."""
    records = []
    for atoms in structures:
        atoms = to_atoms(atoms)
        positions = np.asarray(atoms.positions, dtype=np.float64).reshape(-1, 3)
        cell, pbc = np.asarray(atoms.cell.array, dtype=np.float64), np.asarray(atoms.pbc, bool)
        check_geometry(positions, cell, pbc)
        numbers = np.asarray(atoms.numbers, dtype=np.int64)
        records.append(Structure(numbers, np.zeros_like(numbers), positions, cell, pbc,
                                 np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int64)))
    return collate(records, dtype=dtype, device=device)


class D3BJ(Calculator):
    """D3(BJ) dispersion (energy, per-atom energies, forces, stress) in eV, eV/A, eV/A^3.

    Args:
        functional: the functional's damping parameters ("pbe", "b3lyp", ...; see
            ``ase_mpnn.dispersion.list_functionals()``).
        three_body: add the Axilrod-Teller-Muto three-body term.
        dtype: "float64" (default) or "float32".
        device: "cpu" or "cuda[:n]".
        cutoff: two-body real-space cutoff, Angstrom; default simple-dftd3's 60 Bohr.
        cn_cutoff: coordination-number cutoff, Angstrom; default 40 Bohr.
        three_body_cutoff: three-body cutoff, Angstrom; default 40 Bohr.

    Agrees with simple-dftd3 (``dftd3.ase.DFTD3(method=functional, damping="d3bj")``,
    ``params_tweaks={"method": functional, "atm": True}`` for three_body) to 1e-6
    relative (tests/test_dispersion.py). Stress only for cells periodic in 3-D.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters = {"functional": "pbe", "three_body": False, "dtype": "float64",
                          "device": "cpu", "cutoff": DISP2_CUTOFF, "cn_cutoff": CN_CUTOFF,
                          "three_body_cutoff": DISP3_CUTOFF}

    def __init__(self, functional: str = "pbe", three_body: bool = False,
                 dtype: str = "float64", device: str = "cpu", cutoff: float = DISP2_CUTOFF,
                 cn_cutoff: float = CN_CUTOFF, three_body_cutoff: float = DISP3_CUTOFF,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.set(functional=functional, three_body=three_body, dtype=dtype, device=device,
                 cutoff=cutoff, cn_cutoff=cn_cutoff, three_body_cutoff=three_body_cutoff)

    def set(self, **kwargs: Any) -> dict[str, Any]:
        changed = super().set(**kwargs)
        p = self.parameters
        self.term = D3Dispersion(p["functional"], p["three_body"], p["cutoff"], p["cn_cutoff"],
                                 p["three_body_cutoff"])
        self.dtype = {"float64": torch.float64, "float32": torch.float32}[str(p["dtype"])]
        if changed:
            self.reset()
        return changed

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        periodic = bool(self.atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                f"stress needs a cell periodic in all three directions; "
                f"pbc={self.atoms.pbc.tolist()}")
        self.results = self.calculate_batch([self.atoms], stress=periodic)[0]

    def calculate_batch(self, structures: Sequence[Atoms],
                        stress: bool = True) -> list[dict[str, Any]]:
        """Results of several structures in one batched evaluation (one dict each)."""
        graph = dispersion_graph(structures, self.dtype, self.parameters["device"])
        term = EnergyTerm(self.term.per_atom_energies, self.term.cutoff, False)
        out = evaluate_terms(graph, [term], forces=True, stress=stress)[0]
        periodic = [bool(to_atoms(s).pbc.all()) and stress for s in structures]
        return to_ase_results(out, [len(s) for s in structures], periodic)
