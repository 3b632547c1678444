"""Active learning with a committee: explore, select, label, fine-tune, round after round.

Each round the current committee (``ase_mpnn.committee``) runs MD from the user's seed
structures (``explore``); frames where the members disagree, largest per-atom force std
above a threshold, are candidates (query by committee: Seung, Opper and Sompolinsky, COLT
1992; for potentials, Artrith and Behler, Phys. Rev. B 85, 045439, 2012; Smith et al.,
J. Chem. Phys. 148, 241733, 2018; Schran, Brezina and Marsalek, J. Chem. Phys. 153,
104105, 2020). A spread-out subset (``select``) is labelled by the reference method
(``reference``), and every member is fine-tuned from its own weights on the original data
plus all frames labelled so far (``finetune``). The loop stops when no explored frame
exceeds the threshold, or after ``rounds``. ``report`` writes a row per round;
``loop`` holds the run's layout on disk and how a killed run resumes.

    >>> from ase_mpnn.training.active import learn
    >>> summary = learn("active.yaml")            # doctest: +SKIP
"""

from .config import ActiveConfig
from .loop import format_table, learn
from .reference import label_frame, make_reference
from .select import select_frames, spread_picks

__all__ = ["ActiveConfig", "format_table", "label_frame", "learn", "make_reference",
           "select_frames", "spread_picks"]
