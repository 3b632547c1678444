"""Phonons with phonopy: band structure, DOS, frequencies (THz).

Force constants Phi_ij^ab = d^2E / du_ia du_jb of a supercell come either from forces on
displaced supercells (``method="displacement"``, phonopy's finite differences) or from one
Hessian of the undisplaced supercell (``method="hessian"``: the calculator's
``get_hessian``, exact to rounding, no displacement error; Phi is the Hessian itself, the
second derivative of the energy, in eV/A^2 as phonopy expects). Only the rows of the unit
cell's atoms are computed (phonopy's compact force constants): 3 per unit-cell atom, one
backward pass each, whatever the supercell.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.dft.kpoints import parse_path_string

from .._compat import require
from ..checks import require_integer
from .structures import prepare

#: how force constants are obtained (``phonons(method=...)``)
METHODS = ("displacement", "hessian")

if TYPE_CHECKING:  # phonopy is imported when phonons are computed
    from phonopy import Phonopy


def phonons(structure: Any, calc: Calculator, supercell: tuple[int, int, int] = (3, 3, 3),
            mesh: tuple[int, int, int] = (16, 16, 16), displacement: float = 0.01,
            plot: str | Path | None = None, method: str = "displacement") -> dict:
    """Phonons with phonopy: band structure, DOS, frequencies (THz).

    Force constants of a ``supercell`` repetition of the given (unit) cell come from
    displacements of ``displacement`` (A) (``method="displacement"``) or from one Hessian
    of the supercell (``method="hessian"``; needs a calculator with ``get_hessian``, such as
    MPNNCalculator; ``displacement`` is then unused); the DOS from a Gamma-centred q-point
    ``mesh``;
    ``plot`` saves the band structure and DOS as an image. Returns frequencies at the
    high-symmetry points of the standard band path, the lowest frequency on the mesh, and
    ``imaginary_modes`` (True when a mode below -0.05 THz exists).
    """
    _check_phonon_options(structure, supercell, mesh, displacement)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "hessian" and not callable(getattr(calc, "get_hessian", None)):
        raise ValueError(f"method='hessian' needs a calculator with get_hessian "
                         f"(MPNNCalculator); {type(calc).__name__} has none")
    require("phonopy", "phonons", "phonons")  # before any force is computed
    atoms = prepare(structure, calc)
    phonon = force_constants(atoms, calc, supercell, displacement, method)
    special, paths, connections, labels = band_path(atoms)
    phonon.run_band_structure(paths, path_connections=connections, labels=labels)
    phonon.run_mesh(list(mesh), is_gamma_center=True)
    phonon.run_total_dos()
    lowest = float(np.min(phonon.mesh.frequencies))
    if plot:
        figure = phonon.plot_band_structure_and_dos()
        figure.savefig(plot, dpi=120)
        figure.close()
    return {"frequencies_THz_at": _at_points(phonon, special), "lowest_mesh_frequency_THz": lowest,
            "imaginary_modes": lowest < -0.05}


def _check_phonon_options(structure: Any, supercell: tuple[int, int, int],
                          mesh: tuple[int, int, int], displacement: float) -> None:
    """ValueError naming the first option (or structure) phonons cannot work with."""
    from ..graph import to_atoms

    atoms = to_atoms(structure)
    pbc = atoms.pbc
    if not pbc.all():
        raise ValueError(f"phonons need a cell periodic in all three directions, got "
                         f"pbc={pbc.tolist()} (for a molecule use ase.vibrations)")
    for name, values in (("supercell", supercell), ("mesh", mesh)):
        if len(values) != 3:
            raise ValueError(f"{name} must be three integers >= 1, got {list(values)!r}")
        for value in values:
            require_integer(f"each entry of {name}", value, 1)
    if len(atoms) * int(np.prod(supercell)) < 2:
        raise ValueError(f"a supercell {list(supercell)} of {len(atoms)} atom holds a single "
                         "atom, whose displacement only translates the crystal (no force "
                         "constants): use a larger supercell, e.g. 3 3 3")
    if not 0 < displacement <= 0.5:
        raise ValueError(f"displacement must be > 0 and <= 0.5 A, got {displacement!r}")


def force_constants(atoms: Atoms, calc: Calculator, supercell: tuple[int, int, int],
                    displacement: float = 0.01, method: str = "displacement") -> Phonopy:
    """A Phonopy object of ``atoms`` (the unit cell) with the supercell's force constants in
    eV/A^2, by ``method`` (see the module docstring): (n, n, 3, 3) from displacements,
    phonopy's compact (n_unit, n, 3, 3) from the Hessian rows of the unit cell's atoms."""
    Phonopy = require("phonopy", "phonons", "phonons").Phonopy
    PhonopyAtoms = require("phonopy.structure.atoms", "phonons", "phonons",
                           package="phonopy").PhonopyAtoms

    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions())
    # primitive_matrix="P": the given cell is the unit cell the band path refers to
    phonon = Phonopy(unit, supercell_matrix=np.diag(supercell), primitive_matrix="P")
    if method == "hessian":
        cell = _as_atoms(phonon.supercell)
        n = len(cell)
        # phonopy's compact force constants: the rows of the unit cell's atoms only (the
        # others are their lattice translates), H[3p + a, 3j + b] -> Phi[p, j, a, b]
        unit_atoms = phonon.primitive.p2s_map
        hessian = np.asarray(calc.get_hessian(cell, indices=unit_atoms), dtype=np.float64)
        compact = hessian.reshape(len(unit_atoms), 3, n, 3).transpose(0, 2, 1, 3)
        phonon.force_constants = np.ascontiguousarray(compact)
        return phonon
    phonon.generate_displacements(distance=displacement)
    forces = []
    for displaced in phonon.supercells_with_displacements:
        cell = _as_atoms(displaced)
        cell.calc = calc
        forces.append(cell.get_forces())
    phonon.forces = forces
    phonon.produce_force_constants()
    return phonon


def _as_atoms(cell: Any) -> Atoms:
    """A periodic ase.Atoms of a PhonopyAtoms."""
    return Atoms(cell.symbols, cell=cell.cell, pbc=True, scaled_positions=cell.scaled_positions)


def _at_points(phonon: Phonopy, special: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Sorted frequencies (THz) at each special point {label: scaled q}."""
    labels = list(special)
    phonon.run_qpoints([special[label] for label in labels])
    frequencies = phonon.qpoints.frequencies
    return {label: np.sort(f).tolist() for label, f in zip(labels, frequencies)}


def band_path(atoms: Atoms, points_per_segment: int = 31
              ) -> tuple[dict[str, np.ndarray], list[np.ndarray], list[bool], list[str]]:
    """ASE's standard band path (Setyawan-Curtarolo) in phonopy's format.

    Returns (special points {label: scaled q}, q-point segments, path connections, labels);
    ASE's "G" is called "Gamma".
    """
    path = atoms.cell.bandpath(npoints=0)
    special = {("Gamma" if k == "G" else k): np.asarray(q) for k, q in path.special_points.items()}
    segments, connections, labels = [], [], []
    for run in parse_path_string(path.path):
        run = ["Gamma" if k == "G" else k for k in run]
        for start, end in zip(run[:-1], run[1:]):
            segments.append(np.linspace(special[start], special[end], points_per_segment))
            connections.append(True)
        connections[-1] = False
        labels += run
    return special, segments, connections, labels
