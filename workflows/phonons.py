"""Phonon band structure and DOS of fcc Cu with phonopy, and a check for imaginary modes.

    python workflows/phonons.py [--model emt-cuni-schnet] [--supercell 3] [--out phonon_output]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase.build import bulk

from ase_mpnn import MPNNCalculator
from ase_mpnn.simulate import phonons, relax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="emt-cuni-schnet")
    parser.add_argument("--out", default="phonon_output")
    parser.add_argument("--supercell", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    calc = MPNNCalculator(args.model, dtype="float64")  # small displacements: full precision
    crystal, _ = relax(bulk("Cu", "fcc", a=3.6), calc, fmax=1e-4)  # phonons need the minimum
    n = args.supercell
    result = phonons(crystal, calc, supercell=(n, n, n), plot=out / "phonons.png")
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    x = ", ".join(f"{f:.2f}" for f in result["frequencies_THz_at"]["X"])
    print(f"frequencies at X: {x} THz; imaginary modes: {result['imaginary_modes']}")


if __name__ == "__main__":
    main()
