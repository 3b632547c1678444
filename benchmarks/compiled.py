"""Eager against AOTInductor-compiled (``ase-mpnn compile``) models, ms per energy + forces
+ stress through MPNNCalculator, fresh neighbour list on every call.

    python benchmarks/compiled.py [--models emt-cuni-schnet emt-cuni-mace]
                                  [--dtypes float32 float64] [--atoms 108] [--calls 20]

Prints compile time, file size and the two timings (interleaved, median of ``--calls``)
per model and dtype; exits 1 when a compiled model is slower than its eager twin (the
target: compilation must pay for itself).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ase.build import bulk

from ase_mpnn import MPNNCalculator
from ase_mpnn.compiled import compile_potential, read_compiled_manifest
from ase_mpnn.loading import load


def cu_cell(n_atoms: int):
    """fcc Cu (every third atom Ni) of about n_atoms atoms, rattled by 0.05 A."""
    repeat = max(1, round((n_atoms / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", 3.6, cubic=True).repeat(repeat)
    atoms.numbers[::3] = 28
    atoms.rattle(0.05, seed=0)
    return atoms


def ms_per_call(calc: MPNNCalculator, atoms, calls: int) -> list[float]:
    """Wall times (ms) of ``calls`` energy+forces+stress calculations, each on new positions."""
    atoms = atoms.copy()
    times = []
    for k in range(calls + 2):  # two warm-up calls
        atoms.positions[0, 0] += 1e-3 * (-1) ** k
        start = time.perf_counter()
        calc.calculate(atoms, ["energy", "forces", "stress"])
        times.append(1e3 * (time.perf_counter() - start))
    return times[2:]


def compare(model: str, dtype: str, n_atoms: int, calls: int, folder: Path) -> dict:
    """Compile ``model`` in ``dtype`` and time it against the eager model, interleaved."""
    path = folder / f"{model}-{dtype}.pt2"
    loaded = load(model, "cpu", dtype)
    start = time.perf_counter()
    compile_potential(loaded.potential, path, model_name=loaded.name,
                      model_sha256=loaded.sha256)
    seconds = time.perf_counter() - start
    atoms = cu_cell(n_atoms)
    calculators = {"eager": MPNNCalculator(model, dtype=dtype, device="cpu", skin=0.0),
                   "compiled": MPNNCalculator(str(path), dtype=dtype, device="cpu", skin=0.0)}
    times = {name: [] for name in calculators}
    for _ in range(5):  # interleaved rounds: a busy machine slows both alike
        for name, calc in calculators.items():
            times[name] += ms_per_call(calc, atoms, max(1, calls // 5))
    eager, compiled = (statistics.median(times[k]) for k in ("eager", "compiled"))
    return {"model": model, "dtype": dtype, "atoms": len(atoms), "compile_s": seconds,
            "file_MB": path.stat().st_size / 1e6, "eager_ms": eager, "compiled_ms": compiled,
            "speedup": eager / compiled, "torch": read_compiled_manifest(path)["torch_version"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["emt-cuni-schnet", "emt-cuni-mace"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--atoms", type=int, default=108)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            for dtype in args.dtypes:
                rows.append(compare(model, dtype, args.atoms, args.calls, Path(folder)))
                row = rows[-1]
                print(f"{row['model']:18s} {row['dtype']}  {row['atoms']} atoms  compile "
                      f"{row['compile_s']:5.0f} s  {row['file_MB']:4.1f} MB  eager "
                      f"{row['eager_ms']:7.1f} ms  compiled {row['compiled_ms']:7.1f} ms  "
                      f"{row['speedup']:.2f}x", flush=True)
    missed = [row for row in rows if row["speedup"] < 1.0]
    for row in missed:
        print(f"target missed: compiled {row['model']} {row['dtype']} is slower than eager "
              f"({row['speedup']:.2f}x)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
