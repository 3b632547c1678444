"""Hyper-parameter checks that name the offending argument and its allowed range.

Model constructors run every argument through one of these before building anything, so
a bad value fails with a message such as ``l_max must be an integer in 0..3, got 4``
instead of a shape error deep inside e3nn.
"""

from __future__ import annotations

import math
import numbers


def check_integer(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], or a ValueError naming ``name`` and the range.

    Integral floats (3.0) are accepted; bools, fractions and strings are not.
    """
    allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
    integral = (isinstance(value, numbers.Integral)
                or (isinstance(value, float) and value.is_integer()))
    if isinstance(value, bool) or not integral:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def check_positive(name: str, value) -> float:
    """``value`` as a finite float > 0, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """``value`` if it is True or False (not merely truthy), or a ValueError naming ``name``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value
