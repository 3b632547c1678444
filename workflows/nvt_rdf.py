"""NVT molecular dynamics of fcc Cu and its radial distribution function (PNG).

    python workflows/nvt_rdf.py [--model emt-cuni-schnet] [--temperature 600] [--steps 2000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.io import read  # noqa: E402

from ase_mpnn import MPNNCalculator  # noqa: E402
from ase_mpnn.graph.neighbors import neighbor_list  # noqa: E402
from ase_mpnn.simulate import md  # noqa: E402


def rdf(frames, r_max: float = 6.0, bins: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """g(r) averaged over frames (periodic cells), from the package's neighbour list."""
    edges = np.linspace(0, r_max, bins + 1)
    counts = np.zeros(bins)
    for atoms in frames:
        d = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, r_max).distances
        counts += np.histogram(d, edges)[0] / len(atoms)
    density = len(frames[0]) / frames[0].get_volume()
    shell = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), counts / len(frames) / (density * shell)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="emt-cuni-schnet")
    parser.add_argument("--out", default="nvt_output")
    parser.add_argument("--temperature", type=float, default=600.0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(args.repeat)
    _, summary = md(atoms, MPNNCalculator(args.model), ensemble="nvt", thermostat="langevin",
                    temperature_K=args.temperature, steps=args.steps,
                    log_interval=max(1, args.steps // 50), trajectory=out / "nvt.extxyz")
    frames = read(out / "nvt.extxyz", ":")
    r, g = rdf(frames[len(frames) // 2:])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(r, g)
    ax.set_xlabel("r (A)")
    ax.set_ylabel("g(r)")
    ax.set_title(f"fcc Cu, NVT {args.temperature:.0f} K")
    fig.tight_layout()
    fig.savefig(out / "rdf.png", dpi=120)
    summary.pop("log")
    summary["first_peak_A"] = float(r[np.argmax(g)])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"<T> = {summary['mean_temperature_K']:.0f} K; "
          f"first RDF peak at {summary['first_peak_A']:.2f} A")


if __name__ == "__main__":
    main()
