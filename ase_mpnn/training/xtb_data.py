"""Molecular reference data from GFN2-xTB through tblite (``pip install ase-mpnn[xtb]``).

``xtb_dataset`` labels frames of small organic molecules, the way MD17-style datasets are
made: each molecule is relaxed with GFN2-xTB, then sampled by xTB Langevin MD at 300-1000 K
(0.5 fs steps, a frame every 10 steps, so frames are nearly uncorrelated), plus a few
rattled copies of the minimum. Energies (eV) and forces (eV/A) go under the ``REF_`` keys;
molecules are non-periodic, so there is no stress.

With ``charges`` (e.g. ``(0, 1, -1)``) every geometry is labelled once per total charge, in
its lowest spin state (singlet for an even electron count, doublet for an odd one), and
the frames carry ``charge`` and ``spin`` (the multiplicity 2S + 1) in ``atoms.info``,
the keys ``ase_mpnn.graph.charge_spin`` reads: data for a model with
``global_inputs: [charge, spin]``. Vertical ions, as the same geometry at each charge.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.collections import g2
from ase.io import read, write
from ase.md.langevin import Langevin
from ase.optimize import BFGS
from tqdm import tqdm

from .._compat import require, thermalize
from .emt_data import label

#: molecules shipped as structure files (name -> file under ase_mpnn/structures)
SHIPPED = {"aspirin": "aspirin.xyz"}
#: friendly names of G2 molecules
ALIASES = {"ethanol": "CH3CH2OH", "methanol": "CH3OH", "acetic-acid": "CH3COOH",
           "benzene": "C6H6", "water": "H2O"}
MD_STEP_FS = 0.5
STEPS_PER_FRAME = 10
RATTLED_FRACTION = 0.1


def xtb_calculator(method: str = "GFN2-xTB", charge: int = 0, multiplicity: int = 1):
    """tblite's ASE calculator for a total charge (e) and multiplicity (2S + 1), or an
    ImportError that says how to install it."""
    TBLite = require("tblite.ase", "xtb", "GFN2-xTB reference data", package="tblite").TBLite
    # accuracy 0.1 (tighter SCF than the default 1.0): labels then agree to ~1e-5 eV/A whatever
    # wavefunction the SCF starts from (the calculator reuses the previous frame's)
    return TBLite(method=method, accuracy=0.1, verbosity=0, charge=charge,
                  multiplicity=multiplicity)


def lowest_multiplicity(atoms: Atoms, charge: int) -> int:
    """1 (singlet) for an even electron count sum(Z) - charge, 2 (doublet) for an odd one."""
    return 1 + (int(atoms.numbers.sum()) - charge) % 2


def molecule_structure(name: str) -> Atoms:
    """A starting geometry: a shipped molecule, an alias, any ASE G2 name or a file path."""
    if name in SHIPPED:
        with resources.as_file(resources.files("ase_mpnn.structures") / SHIPPED[name]) as path:
            return read(path)
    g2_name = ALIASES.get(name, name)
    if g2_name in g2.names:
        return molecule(g2_name)
    if Path(name).is_file():
        return read(name)
    known = sorted([*SHIPPED, *ALIASES])
    raise ValueError(f"unknown molecule {name!r}: use one of {known}, an ASE G2 name "
                     f"(ase.collections.g2.names) or a structure file")


def _relaxed(atoms: Atoms, calc) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=0.02, steps=300)
    return atoms


def _md_frames(start: Atoms, calc, rng: np.random.Generator, n_frames: int) -> list[Atoms]:
    """``n_frames`` frames of Langevin MD at one random temperature in 300-1000 K."""
    atoms = start.copy()
    atoms.calc = calc
    temperature = float(rng.uniform(300.0, 1000.0))
    thermalize(atoms, temperature, seed=int(rng.integers(1 << 31)))
    dynamics = Langevin(atoms, MD_STEP_FS * units.fs, temperature_K=temperature, friction=0.02,
                        rng=np.random.default_rng(int(rng.integers(1 << 31))))
    dynamics.run(5 * STEPS_PER_FRAME)  # leave the minimum before sampling
    frames = []
    for _ in range(n_frames):
        dynamics.run(STEPS_PER_FRAME)
        frames.append(Atoms(atoms.numbers, positions=atoms.positions))
    return frames


def xtb_structures(molecules: Sequence[str], n: int, seed: int = 0, method: str = "GFN2-xTB",
                   progress: bool = True) -> list[Atoms]:
    """``n`` frames split evenly over ``molecules``: 10 % rattled minima, the rest MD frames
    from trajectories of 50 frames each (a new temperature per trajectory)."""
    calc = xtb_calculator(method)
    rng = np.random.default_rng(seed)
    frames: list[Atoms] = []
    bar = tqdm(total=n, desc="xTB MD", unit="frame", disable=not progress)
    for k, name in enumerate(molecules):
        count = n // len(molecules) + (k < n % len(molecules))
        minimum = _relaxed(molecule_structure(name), calc)
        mine = []
        for _ in range(int(RATTLED_FRACTION * count)):
            rattled = Atoms(minimum.numbers, positions=minimum.positions)
            rattled.rattle(float(rng.uniform(0.01, 0.04)), seed=int(rng.integers(1 << 31)))
            mine.append(rattled)
        bar.update(len(mine))
        while len(mine) < count:
            batch = _md_frames(minimum, calc, rng, min(50, count - len(mine)))
            mine += batch
            bar.update(len(batch))
        frames += mine
    bar.close()
    return frames


def label_charges(structures: Sequence[Atoms], charges: Sequence[int],
                  method: str = "GFN2-xTB", progress: bool = True) -> list[Atoms]:
    """Each structure labelled at each total charge in its lowest spin state, with
    ``info["charge"]`` and ``info["spin"]`` (multiplicity) set; a label whose SCF fails
    is left out (geometry and charge are printed)."""
    calcs: dict[tuple[int, int], object] = {}
    labelled = []
    for atoms in tqdm(structures, desc="xTB labels", disable=not progress):
        for charge in charges:
            state = (int(charge), lowest_multiplicity(atoms, int(charge)))
            if state not in calcs:
                calcs[state] = xtb_calculator(method, *state)
            try:
                frame = label(atoms, calcs[state])
            except Exception as exc:  # tblite raises a bare exception when the SCF fails
                print(f"left out {atoms.get_chemical_formula()} at charge {charge:+d}: {exc}")
                calcs.pop(state)  # a fresh calculator: no failed wavefunction to restart
                continue
            frame.info.update(charge=state[0], spin=state[1])
            labelled.append(frame)
    return labelled


def xtb_dataset(molecules: Sequence[str], n: int, path: str | Path, seed: int = 0,
                method: str = "GFN2-xTB", progress: bool = True,
                charges: Sequence[int] | None = None) -> Path:
    """Write ``n`` GFN2-xTB-labelled molecular geometries to an extxyz file (atomically);
    with ``charges``, each geometry once per charge (see the module docstring)."""
    structures = xtb_structures(molecules, n, seed, method, progress)
    if charges:
        labelled = label_charges(structures, charges, method, progress)
    else:
        calc = xtb_calculator(method)
        labelled = [label(a, calc)
                    for a in tqdm(structures, desc="xTB labels", disable=not progress)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    write(partial, labelled, format="extxyz")
    partial.replace(path)
    return path
