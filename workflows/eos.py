"""Equation of state of fcc Cu: V0, E0 and the bulk modulus, with a plot.

    python workflows/eos.py [--model emt-cuni-schnet] [--out eos_output]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase.build import bulk

from ase_mpnn import MPNNCalculator
from ase_mpnn.simulate import eos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="emt-cuni-schnet")
    parser.add_argument("--out", default="eos_output")
    parser.add_argument("--points", type=int, default=11)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = eos(bulk("Cu", "fcc", a=3.6, cubic=True), MPNNCalculator(args.model, dtype="float64"),
                 points=args.points, plot=out / "eos.png")
    result["lattice_constant_A"] = 3.6 * result["scale_at_V0"]
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    print(f"a0 = {result['lattice_constant_A']:.4f} A, B0 = {result['B0_GPa']:.1f} GPa")


if __name__ == "__main__":
    main()
