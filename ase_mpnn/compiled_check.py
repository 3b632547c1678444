"""A freshly compiled program is run in a child process before it is kept.

AOTInductor's generated C++ can be wrong for some shapes (seen with torch 2.13: a NequIP
of 4 features corrupted the heap on its first call, which kills the process, so it cannot
be caught in-process). ``compile_checked`` compiles, runs every program of the new
``.pt2`` (the edge program and, for MACE and NequIP, the neighbour-matrix one) on a few
structures in a child interpreter, compares its energies, forces and stress with the
eager potential's on the same graph, and keeps the file only if they agree; a program
that crashes or disagrees raises CompiledCheckError and leaves no file.

    python -m ase_mpnn.compiled_check PROGRAM.pt2 STRUCTURES.extxyz OUT.npz   (the child)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import read, write

from .compiled import OUTPUTS, CompiledPotential, compile_potential, read_compiled_manifest
from .errors import ASEMPNNError
from .graph import build_graph
from .potential import Potential

#: dtype -> absolute tolerance of every output (eV, eV/A, eV/A^3) in the check
TOLERANCES = {torch.float64: 1e-8, torch.float32: 5e-3}
#: seconds the child may take (loading torch and the program, one call)
CHILD_SECONDS = 300


class CompiledCheckError(ASEMPNNError, RuntimeError):
    """A compiled program crashed or disagreed with its eager model."""


def check_structures(species: list[str]) -> list[Atoms]:
    """A small triclinic cell (atoms see their own images), a larger cubic cell and a
    cluster in a big box, rattled, of the given species."""
    small = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    small.set_cell(small.cell.array + [[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [0.3, -0.5, 0.0]],
                   scale_atoms=True)
    larger = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 2, 2))
    cluster = larger[:13].copy()
    cluster.center(vacuum=6.0)
    cluster.pbc = False
    for seed, atoms in enumerate((small, larger, cluster)):
        atoms.set_chemical_symbols([species[k % len(species)] for k in range(len(atoms))])
        atoms.rattle(0.1, seed=seed)
    return [small, larger, cluster]


def compile_checked(potential: Potential, output: str | os.PathLike, **manifest: str
                    ) -> Path:
    """``compile_potential(potential, output, **manifest)``, kept only when the program
    passes ``check_compiled``; returns the file's path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as folder:
        candidate = compile_potential(potential, Path(folder) / output.name, **manifest)
        check_compiled(candidate, potential)
        os.replace(candidate, output)
    return output


def check_compiled(path: str | Path, potential: Potential) -> None:
    """Run the program at ``path`` in a child process on ``check_structures`` and compare
    with ``potential`` (eager, same weights); raises CompiledCheckError naming what failed."""
    weights = next(potential.parameters())
    with tempfile.TemporaryDirectory() as folder:
        inputs, out = Path(folder) / "structures.extxyz", Path(folder) / "out.npz"
        write(inputs, check_structures(list(potential.species)))
        done = subprocess.run([sys.executable, "-m", __name__, str(path), str(inputs),
                               str(out)], capture_output=True, text=True,
                              timeout=CHILD_SECONDS)
        if done.returncode != 0:
            last = " ".join(done.stderr.strip().splitlines()[-1:])[:300]
            raise CompiledCheckError(
                f"the compiled program crashed on its first calls (exit {done.returncode}: "
                f"{last}): this torch's AOTInductor does not compile this model correctly")
        got = dict(np.load(out))
        graph = _graph(read(inputs, ":"), potential, weights.dtype, weights.device)
    want = potential(graph, forces=True, stress=True)
    tolerance = TOLERANCES[weights.dtype]
    for key, value in got.items():  # "<program>/<output>"
        program, name = key.split("/")
        expected = want[name].detach().cpu().numpy()
        # a cell that is not periodic has no stress: NaN on both sides counts as agreeing
        both_nan = np.isnan(value) & np.isnan(expected)
        error = np.where(both_nan, 0.0, np.abs(value - expected)).max()
        if not error <= tolerance:
            raise CompiledCheckError(
                f"the compiled program's {name} ({program} program) differs from the eager "
                f"model's by {error:.3g} (> {tolerance:g}) on the check structures: not kept")
    programs = read_compiled_manifest(path).get("programs") or {"model": None}
    if len(got) != len(OUTPUTS) * len(programs):
        raise CompiledCheckError(f"the check gave {sorted(got)}: a program was not run")


def _graph(structures: list[Atoms], potential, dtype: torch.dtype, device) -> dict:
    return build_graph(structures, potential.cutoff, potential.species, dtype=dtype,
                       device=device)


def _child(program: str, inputs: str, out: str) -> None:
    compiled = CompiledPotential(program)
    graph = _graph(read(inputs, ":"), compiled, compiled.dtype, compiled.device)
    saved = {}
    for name in compiled.programs:  # each layout's program on the same graph
        results = compiled(graph, forces=True, stress=True, program=name)
        saved.update({f"{name}/{key}": value.detach().cpu().numpy()
                      for key, value in results.items()})
    np.savez(out, **saved)


if __name__ == "__main__":
    _child(*sys.argv[1:4])
