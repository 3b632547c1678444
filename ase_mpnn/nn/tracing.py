"""Whether the code runs under a whole-program trace (``ase_mpnn.compiled``).

A traced program is one program for every graph size, so the code it runs must not choose
a layout from the data: the edge chunks (``ase_mpnn.nn.chunks``), the neighbour-matrix
slots and the bond pairing (``ase_mpnn.nn.equivariant``) are decided by counts read from
the tensors, and under a trace they fall back to the plain per-edge layout (the same
numbers, to rounding). Eager runs and ``torch.compile`` are unaffected.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

_STATE = threading.local()


def tracing() -> bool:
    """True inside ``whole_program_trace()`` or a ``torch.export`` trace."""
    return getattr(_STATE, "active", False) or torch.compiler.is_exporting()


@contextlib.contextmanager
def whole_program_trace() -> Iterator[None]:
    """Within this block ``tracing()`` is True (in this thread)."""
    previous = getattr(_STATE, "active", False)
    _STATE.active = True
    try:
        yield
    finally:
        _STATE.active = previous
