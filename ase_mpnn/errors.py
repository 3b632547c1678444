"""Exceptions raised for bad input. Each names the problem and what would fix it."""

from __future__ import annotations


def exception_reason(exc: BaseException) -> str:
    """``"Type: first line of the message"``: why a call failed, in one line, even for the
    exceptions some file readers raise without a message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else 'no reason given'}"


class ASEMPNNError(Exception):
    """Base class of every error this package raises on purpose."""


class MissingDependencyError(ASEMPNNError, ImportError):
    """An optional package is not installed; the message names the extra that installs it
    (``pip install 'ase-mpnn[EXTRA]'``)."""


class UnknownElementError(ASEMPNNError, ValueError):
    """The structure holds an element the model was not trained on."""


class InvalidStructureError(ASEMPNNError, ValueError):
    """NaN/inf coordinates, a degenerate periodic cell, or atoms on top of each other."""


class ModelFileError(ASEMPNNError, OSError):
    """A model file is missing, unreadable, truncated, tampered with or too new."""


class UnknownArchitectureError(ASEMPNNError, KeyError):
    """A model manifest names an architecture this version does not provide."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidChargeSpinError(InvalidStructureError):
    """``atoms.info`` gives a total charge or spin multiplicity that is not an integer, is
    out of range, contradicts another alias, or does not fit the electron count."""


class UnsupportedInputError(ASEMPNNError, ValueError):
    """The structure sets an input (a total charge, a spin multiplicity) that the model was
    not trained to take."""
