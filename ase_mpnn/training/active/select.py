"""Selection: which explored frames go to the reference.

Query by committee (Seung, Opper and Sompolinsky, COLT 1992) with the committee's force
spread as the query (Schran, Brezina and Marsalek, J. Chem. Phys. 153, 104105, 2020): a
frame is a candidate when its largest per-atom force std exceeds ``threshold`` (eV/A).

Uncertain frames come in runs (one event spans many consecutive samples), so the picks are
spread out rather than taken as the top K of one event:

1. within a trajectory, candidates are taken highest std first, skipping any that lies
   fewer than ``min_separation`` samples from one already taken in that trajectory;
2. across trajectories, picks go round-robin: first the best pick of every trajectory
   (trajectories in order of their highest std), then the second best of each, ...,
   until ``max_new`` frames are picked.

Ties are broken by trajectory order, then sample index, so the selection is repeatable.
"""

from __future__ import annotations

from typing import Sequence

from ase import Atoms


def spread_picks(samples: Sequence[tuple[int, float]], min_separation: int) -> list[int]:
    """Rule 1 on one trajectory's candidates, given as (sample index, std): the sample
    indices picked, in the order picked (highest std first)."""
    picked: list[int] = []
    for sample, _ in sorted(samples, key=lambda item: (-item[1], item[0])):
        if all(abs(sample - other) >= min_separation for other in picked):
            picked.append(sample)
    return picked


def select_frames(frames: Sequence[Atoms], threshold: float, max_new: int,
                  min_separation: int) -> list[int]:
    """Indices into ``frames`` (explored frames; info al_traj, al_sample, al_std eV/A) of
    the frames to label, by the rules of the module docstring."""
    by_trajectory: dict[str, list[tuple[int, float]]] = {}
    position: dict[tuple[str, int], int] = {}
    for index, atoms in enumerate(frames):
        if atoms.info["al_std"] > threshold:
            key = (atoms.info["al_traj"], int(atoms.info["al_sample"]))
            by_trajectory.setdefault(key[0], []).append((key[1], atoms.info["al_std"]))
            position[key] = index
    order = sorted(by_trajectory, key=lambda name: -max(s for _, s in by_trajectory[name]))
    queues = [[position[(name, k)] for k in spread_picks(by_trajectory[name], min_separation)]
              for name in order]
    chosen: list[int] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        for queue in queues:
            if depth < len(queue) and len(chosen) < max_new:
                chosen.append(queue[depth])
    return chosen
