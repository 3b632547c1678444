"""The Cu-Ni EMT data set of benchmarks/accuracy.py: train.xyz, valid.xyz and test.xyz.

    python benchmarks/_accuracy_data.py OUT_DIR [--seed 0] [--no-isolated-atoms]

Every frame is labelled with ASE's EMT and written as mace-torch users write their data
(ase.io extxyz): ``info["REF_energy"]`` (eV), ``arrays["REF_forces"]`` (eV/A),
``info["REF_stress"]`` (Voigt 6, eV/A^3, ASE's sign, only for 3-D periodic frames) and
``info["config_type"]``.

Training pool (``n_train`` + ``n_valid`` frames, shuffled and cut into train.xyz and
valid.xyz), Ni fraction drawn from [0.25, 0.75]:

- "bulk": rattled (0.03-0.1 A) fcc cells of 8-64 atoms (cubic or primitive repeats),
  lattice constant from Vegard's law +-1.5 %;
- "strained": the same with a random symmetric strain (normal strains sd 2 %, shears
  sd 3 %);
- "vacancy": a 32-atom cubic cell (or 27-atom primitive one) less one atom, rattled;
- "md": frames of 300-1200 K Langevin MD in EMT of 32-atom cells (every 25 x 2 fs);
- "slab": rattled fcc(100) and fcc(111) slabs of 2x2x4 / 3x3x4 atoms, ``pbc=(1, 1, 0)``
  and 6 A of vacuum on each side along z (no stress label);
- "IsolatedAtom": one atom of each element alone in a non-periodic box (energy only, zero
  forces) -- mace-torch's E0s; in train.xyz only, unless ``isolated_atoms=False``.

Test set (``n_test`` frames), conditions outside the training draw: Cu-rich and Ni-rich
bulk (Ni fraction in [0, 0.15] or [0.85, 1]), larger shears (sd 7 %) with larger normal
strains, divacancies, 900-1500 K MD, and fcc(110) slabs and six-layer fcc(111) slabs.

All frames come from one random stream of this data set's own, seeded from ``seed`` (no
other use of the seed shares it); the files are rewritten
only when ``recipe.json`` in the folder differs from the recipe asked for (``RECIPE``, this
file's code, the counts, the seed and the isolated-atom flag), so calling ``make_data``
again is free.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc110, fcc111
from ase.calculators.emt import EMT
from ase.io import write
from ase.md.langevin import Langevin

from ase_mpnn._compat import thermalize

ELEMENTS = ("Cu", "Ni")
LATTICE = {"Cu": 3.61, "Ni": 3.52}  # fcc lattice constants close to EMT's minima, A
KEYS = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress"}
FILES = ("train.xyz", "valid.xyz", "test.xyz")

#: what the generator makes; any change here changes the recipe hash (and the files)
RECIPE = {
    "version": 1,
    "pool_shares": {"bulk": 0.2, "strained": 0.25, "vacancy": 0.13, "md": 0.27, "slab": 0.15},
    "test_shares": {"bulk": 0.2, "strained": 0.2, "vacancy": 0.13, "md": 0.27, "slab": 0.2},
    "train_ni": [0.25, 0.75],
    "test_ni": [[0.0, 0.15], [0.85, 1.0]],
    "train_shear_sd": 0.03, "train_normal_sd": 0.02,
    "test_shear_sd": 0.07, "test_normal_sd": 0.03,
    "train_md_K": [300, 1200], "test_md_K": [900, 1500],
    "md_stride": 25, "md_frames_per_run": 6, "md_timestep_fs": 2.0,
    "slab_vacuum_A": 6.0,
}


# ---------------------------------------------------------------------------------------
# structures
# ---------------------------------------------------------------------------------------

def _ni_fraction(rng: np.random.Generator, test: bool) -> float:
    """A Ni fraction from the training range, or from the Cu-rich/Ni-rich test ranges."""
    if not test:
        return float(rng.uniform(*RECIPE["train_ni"]))
    low, high = RECIPE["test_ni"][int(rng.integers(2))]
    return float(rng.uniform(low, high))


def _occupy(atoms: Atoms, ni_fraction: float, rng: np.random.Generator) -> Atoms:
    """Put round(x n) Ni atoms on random sites, Cu on the rest."""
    n_ni = int(round(ni_fraction * len(atoms)))
    symbols = np.array(["Cu"] * len(atoms), dtype=object)
    symbols[rng.permutation(len(atoms))[:n_ni]] = "Ni"
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def _vegard(ni_fraction: float) -> float:
    """Lattice constant (A) of the alloy by Vegard's law."""
    return (1 - ni_fraction) * LATTICE["Cu"] + ni_fraction * LATTICE["Ni"]


def _fcc_cell(rng: np.random.Generator, ni_fraction: float, jitter: float = 0.015) -> Atoms:
    """A random-alloy fcc cell of 8-64 atoms: cubic (4 atoms) or primitive (1) repeats."""
    a = _vegard(ni_fraction) * (1 + rng.uniform(-jitter, jitter))
    shapes = [("cubic", (2, 2, 2)), ("cubic", (1, 2, 2)), ("cubic", (2, 1, 1)),
              ("primitive", (2, 2, 2)), ("primitive", (3, 3, 3)), ("primitive", (4, 4, 4)),
              ("primitive", (3, 3, 2))]
    kind, repeat = shapes[int(rng.integers(len(shapes)))]
    atoms = bulk("Cu", "fcc", a=a, cubic=kind == "cubic").repeat(repeat)
    return _occupy(atoms, ni_fraction, rng)


def _rattle(atoms: Atoms, amplitude: float, rng: np.random.Generator) -> Atoms:
    """Displace every atom by Gaussian noise of ``amplitude`` A per component."""
    atoms.positions += rng.normal(scale=amplitude, size=atoms.positions.shape)
    return atoms


def make_bulk(rng: np.random.Generator, test: bool) -> Atoms:
    """Rattled random-alloy fcc cell."""
    atoms = _fcc_cell(rng, _ni_fraction(rng, test))
    return _rattle(atoms, rng.uniform(0.03, 0.1), rng)


def make_strained(rng: np.random.Generator, test: bool) -> Atoms:
    """Rattled fcc cell under a random symmetric strain, shear components included."""
    atoms = _fcc_cell(rng, _ni_fraction(rng, False))
    prefix = "test" if test else "train"
    strain = np.diag(rng.normal(scale=RECIPE[f"{prefix}_normal_sd"], size=3))
    shear = rng.normal(scale=RECIPE[f"{prefix}_shear_sd"] / 2, size=3)  # engineering / 2
    strain[1, 2] = strain[2, 1] = shear[0]
    strain[0, 2] = strain[2, 0] = shear[1]
    strain[0, 1] = strain[1, 0] = shear[2]
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return _rattle(atoms, rng.uniform(0.02, 0.08), rng)


def make_vacancy(rng: np.random.Generator, test: bool) -> Atoms:
    """A 32-atom cubic or 27-atom primitive cell less one atom; in the test set, a
    divacancy (an atom and one of its nearest neighbours) of a 32-atom cell."""
    x = _ni_fraction(rng, False)
    cubic = test or rng.random() < 0.5
    atoms = bulk("Cu", "fcc", a=_vegard(x), cubic=cubic).repeat((2, 2, 2) if cubic else 3)
    atoms = _occupy(atoms, x, rng)
    first = int(rng.integers(len(atoms)))
    gone = [first]
    if test:
        distances = atoms.get_distances(first, range(len(atoms)), mic=True)
        distances[first] = np.inf
        gone.append(int(np.argmin(distances)))
    del atoms[sorted(gone, reverse=True)]
    return _rattle(atoms, rng.uniform(0.03, 0.08), rng)


def make_slab(rng: np.random.Generator, test: bool) -> Atoms:
    """Rattled alloy slab, periodic in x and y only, vacuum along z: fcc(100) or fcc(111)
    of 4 layers (training), fcc(110) of 4 layers or fcc(111) of 6 layers (test)."""
    x = _ni_fraction(rng, False)
    if test:
        build, size = [(fcc110, (2, 2, 4)), (fcc111, (2, 2, 6))][int(rng.integers(2))]
    else:
        build = [fcc100, fcc111][int(rng.integers(2))]
        size = [(2, 2, 4), (3, 3, 4)][int(rng.integers(2))]
    atoms = build("Cu", size=size, a=_vegard(x), vacuum=RECIPE["slab_vacuum_A"])
    atoms.pbc = (True, True, False)
    atoms = _occupy(atoms, x, rng)
    return _rattle(atoms, rng.uniform(0.03, 0.1), rng)


def make_md_run(rng: np.random.Generator, test: bool, n_frames: int) -> list[Atoms]:
    """``n_frames`` frames of one Langevin run in EMT (2 fs steps, one frame every
    ``md_stride`` steps) of a 32-atom cubic alloy cell at a random temperature (K)."""
    x = _ni_fraction(rng, False)
    atoms = _occupy(bulk("Cu", "fcc", a=_vegard(x), cubic=True).repeat(2), x, rng)
    atoms.calc = EMT()
    low, high = RECIPE["test_md_K" if test else "train_md_K"]
    temperature = float(rng.uniform(low, high))
    thermalize(atoms, 2 * temperature, seed=int(rng.integers(1 << 31)))  # equipartition
    dynamics = Langevin(atoms, RECIPE["md_timestep_fs"] * units.fs, temperature_K=temperature,
                        friction=0.01 / units.fs, fixcm=False, rng=rng)
    frames = []
    for _ in range(n_frames):
        dynamics.run(RECIPE["md_stride"])
        frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
        frame.info["temperature_K"] = round(temperature, 1)
        frames.append(frame)
    return frames


def isolated_atom(symbol: str) -> Atoms:
    """One atom alone in a 20 A non-periodic box."""
    return Atoms(symbol, positions=[[10.0, 10.0, 10.0]], cell=[20.0] * 3, pbc=False)


MAKERS: dict[str, Callable[[np.random.Generator, bool], Atoms]] = {
    "bulk": make_bulk, "strained": make_strained, "vacancy": make_vacancy, "slab": make_slab}


# ---------------------------------------------------------------------------------------
# labels and files
# ---------------------------------------------------------------------------------------

def label(atoms: Atoms, config_type: str) -> Atoms:
    """A clean copy of ``atoms`` with EMT's REF_energy (eV), REF_forces (eV/A) and, for a
    3-D periodic cell, REF_stress (Voigt 6, eV/A^3), and ``config_type``."""
    work = atoms.copy()
    work.calc = EMT()
    out = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.info["config_type"] = config_type
    out.info.update({k: v for k, v in atoms.info.items() if k == "temperature_K"})
    out.info[KEYS["energy"]] = float(work.get_potential_energy())
    out.arrays[KEYS["forces"]] = np.array(work.get_forces())
    if atoms.pbc.all():
        out.info[KEYS["stress"]] = np.array(work.get_stress(voigt=True))
    return out


def _counts(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Split ``n`` frames over the kinds by ``shares``; MD takes what rounding leaves."""
    counts = {kind: int(round(share * n)) for kind, share in shares.items() if kind != "md"}
    counts["md"] = max(n - sum(counts.values()), 0)
    return counts


def make_frames(n: int, test: bool, rng: np.random.Generator) -> list[Atoms]:
    """``n`` labelled frames of the training pool (``test=False``) or the test set."""
    counts = _counts(n, RECIPE["test_shares" if test else "pool_shares"])
    frames = []
    for kind, count in counts.items():
        if kind == "md":
            per_run = RECIPE["md_frames_per_run"]
            while count > 0:
                for atoms in make_md_run(rng, test, min(per_run, count)):
                    frames.append(label(atoms, "md"))
                count -= per_run
        else:
            frames += [label(MAKERS[kind](rng, test), kind) for _ in range(count)]
    return frames


def recipe_of(seed: int, n_train: int, n_valid: int, n_test: int,
              isolated_atoms: bool) -> dict:
    """The full recipe of one data set, and its hash under "hash"."""
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    recipe = {"recipe": RECIPE, "code": code, "seed": seed, "n_train": n_train, "n_valid": n_valid,
              "n_test": n_test, "isolated_atoms": isolated_atoms, "elements": list(ELEMENTS)}
    text = json.dumps(recipe, sort_keys=True)
    return {**recipe, "hash": hashlib.sha256(text.encode()).hexdigest()[:16]}


def data_paths(out: str | Path) -> dict[str, Path]:
    """{"train", "valid", "test"}: the files of a data set under ``out``."""
    return {name.split(".")[0]: Path(out) / name for name in FILES}


def make_data(out: str | Path, seed: int = 0, n_train: int = 400, n_valid: int = 50,
              n_test: int = 60, isolated_atoms: bool = True) -> dict[str, Path]:
    """Write train.xyz, valid.xyz, test.xyz and recipe.json under ``out`` unless the same
    recipe is there already; returns {"train": path, "valid": path, "test": path}.

    ``n_train`` counts the structures of train.xyz without the isolated atoms (one per
    element, added when ``isolated_atoms``).
    """
    out = Path(out)
    paths = data_paths(out)
    recipe = recipe_of(seed, n_train, n_valid, n_test, isolated_atoms)
    stamp = out / "recipe.json"
    if stamp.exists() and all(p.exists() for p in paths.values()):
        if json.loads(stamp.read_text()).get("hash") == recipe["hash"]:
            return paths
    out.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    rng = np.random.default_rng([seed, 20260])  # this data set's own stream
    pool = make_frames(n_train + n_valid, False, rng)
    order = rng.permutation(len(pool))
    train = [pool[i] for i in order[:n_train]]
    valid = [pool[i] for i in order[n_train:]]
    if isolated_atoms:
        train = [label(isolated_atom(x), "IsolatedAtom") for x in ELEMENTS] + train
    test = make_frames(n_test, True, rng)
    for frames, path in zip((train, valid, test), paths.values()):
        write(path, frames, format="extxyz")
    stamp.write_text(json.dumps(recipe, indent=2))
    return paths


def isolated_atom_energies(path: str | Path) -> dict[str, float]:
    """{symbol: eV} of the "IsolatedAtom" frames of an extxyz file (empty if none)."""
    from ase.io import iread

    return {str(a.get_chemical_symbols()[0]): float(a.info[KEYS["energy"]])
            for a in iread(str(path), format="extxyz")
            if a.info.get("config_type") == "IsolatedAtom"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-valid", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--no-isolated-atoms", dest="isolated_atoms", action="store_false")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = make_data(args.out, args.seed, args.n_train, args.n_valid, args.n_test,
                      args.isolated_atoms)
    print(f"{', '.join(str(p) for p in paths.values())} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
