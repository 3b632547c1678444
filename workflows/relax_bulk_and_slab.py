"""Relax bulk fcc Cu (cell free) and a Cu(111) slab with its bottom two layers fixed.

    python workflows/relax_bulk_and_slab.py [--model emt-cuni-schnet] [--out relax_output]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase.build import bulk, fcc111
from ase.constraints import FixAtoms
from ase.io import write

from ase_mpnn import MPNNCalculator
from ase_mpnn.simulate import relax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="emt-cuni-schnet")
    parser.add_argument("--out", default="relax_output")
    parser.add_argument("--fmax", type=float, default=0.01)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    calc = MPNNCalculator(args.model)

    crystal, bulk_summary = relax(bulk("Cu", "fcc", a=3.6), calc, fmax=args.fmax)
    a = crystal.cell.lengths()[0] * 2**0.5  # primitive fcc vector -> cubic lattice constant
    slab = fcc111("Cu", size=(2, 2, args.layers), a=a, vacuum=8.0)
    bottom = [atom.index for atom in slab if atom.tag > args.layers - 2]  # tags count from the top
    slab.set_constraint(FixAtoms(indices=bottom))
    relaxed_slab, slab_summary = relax(slab, calc, fmax=args.fmax, cell=False)
    write(out / "bulk.extxyz", crystal)
    write(out / "slab.extxyz", relaxed_slab)
    n = len(relaxed_slab)
    surface_energy = (slab_summary["energy_eV"] - n * bulk_summary["energy_eV"] / len(crystal)) / (
        2 * relaxed_slab.cell.area(2))
    summary = {"lattice_constant_A": a, "bulk": bulk_summary, "slab": slab_summary,
               "surface_energy_eV_per_A2": surface_energy}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"a = {a:.4f} A; Cu(111) surface energy {surface_energy * 1000:.1f} meV/A^2; "
          f"slab converged: {slab_summary['converged']} in {slab_summary['steps']} steps")


if __name__ == "__main__":
    main()
