"""Energy, forces and stress of any structure file with any model file.

    python workflows/single_point.py STRUCTURE MODEL [--dtype float32|float64]

STRUCTURE is anything ase.io reads (CIF, POSCAR, extxyz, ...); MODEL a .mpnn file
(e.g. from `ase-mpnn new SchNet --species Cu -o cu.mpnn`). Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json

from ase.io import read

from ase_mpnn import MPNNCalculator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("structure")
    parser.add_argument("model")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    args = parser.parse_args()
    atoms = read(args.structure)
    atoms.calc = MPNNCalculator(args.model, dtype=args.dtype)
    summary = {
        "formula": atoms.get_chemical_formula(),
        "energy_eV": atoms.get_potential_energy(),
        "max_force_eV_per_A": float(abs(atoms.get_forces()).max()),
        "model": atoms.calc.parameters,
    }
    if atoms.pbc.all():
        summary["stress_eV_per_A3"] = atoms.get_stress().tolist()
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
