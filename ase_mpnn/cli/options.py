"""Argument types of the ``ase-mpnn`` command line: every value is checked as it is parsed,
so a bad option ends the command at once with one line naming it, before any work."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Callable, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``ase-mpnn md: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def integer(least: int | None = None) -> Callable[[str], int]:
    """An int >= ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if least is not None and value < least:
            raise argparse.ArgumentTypeError(f"{value} is below the least allowed, {least}")
        return value

    parse.__name__ = "integer"
    return parse


def number(above: float | None = None, least: float | None = None,
           most: float | None = None, below: float | None = None) -> Callable[[str], float]:
    """A finite float within the bounds given (above/below exclusive, least/most inclusive)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        for bound, ok, words in ((above, value > (above or 0), "greater than"),
                                 (least, value >= (least or 0), "at least"),
                                 (most, value <= (most or 0), "at most"),
                                 (below, value < (below or 0), "less than")):
            if bound is not None and not ok:
                raise argparse.ArgumentTypeError(f"{value:g} must be {words} {bound:g}")
        return value

    parse.__name__ = "number"
    return parse


def device(text: str) -> str:
    """"auto", "cpu" or "cuda[:n]", checked against what torch can see."""
    from ..loading import resolve_device

    try:
        resolve_device(text)
    except (ValueError, RuntimeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (``{"n_features": 64}``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object {{...}}, got {text!r}")
    return value
