"""Reference data made here with real reference potentials (no downloads needed).

``emt_dataset`` labels metal structures with ASE's EMT (Cu, Ni, Al, Ag, Au, Pd, Pt and their
alloys): rattled and strained bulk cells with random occupancy, vacancies, surface slabs and
frames from EMT Langevin MD at 300-1200 K. Energies, forces and stress are stored under the
``REF_`` keys that ``ase_mpnn.training.samples`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.io import write
from ase.md.langevin import Langevin
from tqdm import tqdm

from .._compat import thermalize

EMT_ELEMENTS = ("Cu", "Ni", "Al", "Ag", "Au", "Pd", "Pt")
#: EMT's equilibrium fcc lattice constants are close to these (A)
LATTICE = {"Cu": 3.61, "Ni": 3.52, "Al": 4.05, "Ag": 4.09, "Au": 4.08, "Pd": 3.89, "Pt": 3.92}


def label(atoms: Atoms, calc) -> Atoms:
    """Copy of ``atoms`` with REF_energy, REF_forces (and REF_stress when periodic) from calc."""
    atoms = atoms.copy()
    atoms.calc = calc
    labelled = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    labelled.info["REF_energy"] = atoms.get_potential_energy()
    labelled.arrays["REF_forces"] = atoms.get_forces()
    if atoms.pbc.all():
        labelled.info["REF_stress"] = atoms.get_stress()
    return labelled


def _alloy_cell(elements: Sequence[str], rng: np.random.Generator,
                repeat: tuple[int, int, int]) -> Atoms:
    fractions = rng.dirichlet(np.ones(len(elements)))
    symbols = rng.choice(elements, size=4 * int(np.prod(repeat)), p=fractions)
    a = float(np.dot([np.mean(symbols == x) for x in elements], [LATTICE[x] for x in elements]))
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def _strained_bulk(elements, rng) -> Atoms:
    atoms = _alloy_cell(elements, rng, tuple(rng.integers(1, 3, size=3)))
    strain = np.eye(3) + rng.normal(scale=0.03, size=(3, 3))
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.rattle(rng.uniform(0.02, 0.15), seed=int(rng.integers(1 << 31)))
    return atoms


def _vacancy(elements, rng) -> Atoms:
    atoms = _alloy_cell(elements, rng, (2, 2, 2))
    del atoms[int(rng.integers(len(atoms)))]
    atoms.rattle(0.05, seed=int(rng.integers(1 << 31)))
    return atoms


def _surface(elements, rng) -> Atoms:
    build = fcc111 if rng.random() < 0.5 else fcc100
    symbol = str(rng.choice(elements))
    atoms = build(symbol, size=(2, 2, 4), a=LATTICE[symbol], vacuum=6.0, periodic=True)
    atoms.set_chemical_symbols(list(rng.choice(elements, size=len(atoms))))
    atoms.rattle(0.05, seed=int(rng.integers(1 << 31)))
    return atoms


def _md_frames(elements, rng, n_frames: int) -> list[Atoms]:
    atoms = _alloy_cell(elements, rng, (2, 2, 2))
    atoms.calc = EMT()
    temperature = float(rng.uniform(300, 1200))
    thermalize(atoms, temperature, seed=int(rng.integers(1 << 31)))
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False,
                        rng=np.random.default_rng(int(rng.integers(1 << 31))))
    frames = []
    for _ in range(n_frames):
        dynamics.run(20)
        frames.append(atoms.copy())
    return frames


def emt_structures(elements: Sequence[str], n: int, seed: int = 0) -> list[Atoms]:
    """``n`` varied structures: 40 % strained bulk, 15 % vacancies, 15 % surfaces, 30 % MD."""
    unknown = [x for x in elements if x not in EMT_ELEMENTS]
    if unknown:
        raise ValueError(f"EMT has no parameters for {unknown}; "
                         f"it covers {', '.join(EMT_ELEMENTS)}")
    rng = np.random.default_rng(seed)
    makers: list[Callable] = [_strained_bulk, _vacancy, _surface]
    counts = [int(0.4 * n), int(0.15 * n), int(0.15 * n)]
    structures = [make(elements, rng) for make, count in zip(makers, counts) for _ in range(count)]
    while len(structures) < n:
        structures += _md_frames(elements, rng, min(5, n - len(structures)))
    return structures


def emt_dataset(elements: Sequence[str], n: int, path: str | Path, seed: int = 0,
                progress: bool = True) -> Path:
    """Write ``n`` EMT-labelled structures of ``elements`` to an extxyz file."""
    structures = emt_structures(elements, n, seed)
    calc = EMT()
    labelled = [label(a, calc) for a in tqdm(structures, desc="EMT labels", disable=not progress)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, labelled, format="extxyz")
    return path
