"""Argument checks shared by the library's entry points: one message format for every
"must be an integer >= n" (the command line checks the same bounds as it parses)."""

from __future__ import annotations

from typing import Any

import numpy as np


def require_integer(name: str, value: Any, least: int) -> None:
    """ValueError unless ``value`` is an integer (not a bool) >= ``least``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
