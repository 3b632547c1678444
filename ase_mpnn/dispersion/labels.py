"""Training labels with D3(BJ) dispersion taken out (a model then learns the rest, and the
calculator adds D3 back: the model file records it, see MPNNCalculator's ``dispersion``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ase.stress import voigt_6_to_full_3x3_stress

from .calculator import D3BJ

#: structures per batched D3 evaluation
_BATCH = 16


def dispersion_record(functional: str, three_body: bool = False) -> dict[str, Any]:
    """The manifest entry of a model trained on labels minus D3(BJ) of ``functional``."""
    from .tables import d3bj_parameters

    return {"functional": d3bj_parameters(functional).functional, "three_body": bool(three_body),
            "subtracted": True}


def subtract_dispersion(samples: Sequence[Any], functional: str,
                        three_body: bool = False) -> list[Any]:
    """Copies of ``samples`` (``ase_mpnn.training.samples.Sample``: atoms, energy eV, forces
    (n, 3) eV/A, stress (3, 3) eV/A^3 or None) with the D3(BJ) energy, forces and stress of
    each structure subtracted from whichever labels it has (float64)."""
    calc = D3BJ(functional, three_body=three_body)
    out = []
    for start in range(0, len(samples), _BATCH):
        chunk = samples[start:start + _BATCH]
        results = calc.calculate_batch([s.atoms for s in chunk])
        for sample, d3 in zip(chunk, results):
            changes = {}
            if sample.energy is not None:
                changes["energy"] = sample.energy - d3["energy"]
            if sample.forces is not None:
                changes["forces"] = sample.forces - d3["forces"]
            if sample.stress is not None and "stress" in d3:
                changes["stress"] = sample.stress - voigt_6_to_full_3x3_stress(d3["stress"])
            out.append(dataclasses.replace(sample, **changes))
    return out
