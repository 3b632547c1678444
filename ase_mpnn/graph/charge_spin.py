"""Total charge and spin multiplicity of a structure, read from ``atoms.info``.

A structure's global electronic state is two integers: its total charge Q (units of e,
+1 for a cation) and its spin multiplicity M = 2S + 1 (1 singlet, 2 doublet, 3 triplet).
They are read from ``atoms.info`` under the names the peer codes use:

======================  =========================================================
charge Q                ``charge`` (FAIRChem, tblite), ``total_charge`` (mace-torch)
multiplicity M = 2S+1   ``spin`` (FAIRChem), ``total_spin`` (mace-torch),
                        ``multiplicity`` (tblite's and most quantum codes' keyword)
======================  =========================================================

Every alias of the multiplicity means 2S + 1, as in FAIRChem and mace-torch; a spin of 0
is FAIRChem's "not given" (its non-molecular tasks set charge=0, spin=0) and is read as
absent. Unset values default to Q = 0 and M = 1. Two aliases that disagree, a
non-integer value, M < 1, or, when a charge or a multiplicity is given, a multiplicity
whose parity does not fit the electron count N = sum(Z) - Q (an odd N needs an even M)
raise ``InvalidChargeSpinError``.

Batches carry ``keys.TOTAL_CHARGE`` only when some structure is charged and
``keys.SPIN_MULTIPLICITY`` only when some multiplicity differs from 1 (models read the
defaults when a field is absent). Neutral singlet graphs are thus exactly as before, and
``check_inputs_taken`` tells a model that cannot take a charge or spin from one that
can by looking for the keys, without reading tensors back from the device.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from .. import keys
from ..errors import InvalidChargeSpinError, UnsupportedInputError

#: atoms.info names of the total charge (e) and of the spin multiplicity 2S + 1
CHARGE_ALIASES = ("charge", "total_charge")
MULTIPLICITY_ALIASES = ("spin", "total_spin", "multiplicity")
#: the names of the global inputs a model may take (its ``global_inputs``), and their keys
GLOBAL_INPUTS = {"charge": keys.TOTAL_CHARGE, "spin": keys.SPIN_MULTIPLICITY}
#: graph key -> the value a structure has when the key is absent from its batch
DEFAULTS = {keys.TOTAL_CHARGE: 0.0, keys.SPIN_MULTIPLICITY: 1.0}


class GlobalState(NamedTuple):
    """A structure's total charge (e) and spin multiplicity (2S + 1)."""

    charge: int = 0
    multiplicity: int = 1


def _integer(value: Any, name: str) -> int:
    """``value`` as an int, if it is one integer-valued number (1, 1.0, np.int64(1))."""
    array = np.asarray(value)
    number = array.item() if array.size == 1 and array.dtype.kind in "biuf" else None
    if number is None or isinstance(number, bool) or not np.isfinite(number) \
            or number != round(number):
        raise InvalidChargeSpinError(f"atoms.info[{name!r}] = {value!r} is not an integer")
    return int(round(number))


def _one_of(info: Mapping[str, Any], aliases: Sequence[str], skip: int | None
            ) -> tuple[int | None, str | None]:
    """The value of the aliases present in ``info`` (all must agree), with the name read;
    (None, None) when none is given. A value equal to ``skip`` counts as not given."""
    found = {}
    for name in aliases:
        if info.get(name) is not None:
            value = _integer(info[name], name)
            if value != skip:
                found[name] = value
    if len(set(found.values())) > 1:
        given = ", ".join(f"atoms.info[{k!r}] = {v}" for k, v in found.items())
        raise InvalidChargeSpinError(f"conflicting values: {given}; give one of them")
    return next(((v, k) for k, v in found.items()), (None, None))


def read_global_state(info: Mapping[str, Any], numbers: Sequence[int]) -> GlobalState:
    """Total charge and spin multiplicity from ``info`` (see the module docstring).

    Args:
        info: ``atoms.info``.
        numbers: (n_atoms,) atomic numbers, for the electron count.

    Raises:
        InvalidChargeSpinError: naming the key and the value.
    """
    charge, charge_name = _one_of(info, CHARGE_ALIASES, None)
    multiplicity, spin_name = _one_of(info, MULTIPLICITY_ALIASES, 0)
    if multiplicity is not None and multiplicity < 1:
        raise InvalidChargeSpinError(f"atoms.info[{spin_name!r}] = {multiplicity} is not a "
                                     "spin multiplicity 2S + 1 >= 1 (1 singlet, 2 doublet)")
    if charge is None and multiplicity is None:
        return GlobalState()
    state = GlobalState(charge or 0, multiplicity or 1)
    electrons = int(np.sum(numbers)) - state.charge
    if electrons < 0:
        raise InvalidChargeSpinError(f"atoms.info[{charge_name!r}] = {state.charge} leaves "
                                     f"{electrons} electrons")
    if state.charge or multiplicity is not None:
        if (electrons + state.multiplicity) % 2 == 0:  # N odd <-> M even
            raise InvalidChargeSpinError(
                f"multiplicity {state.multiplicity} does not fit {electrons} electrons (charge "
                f"{state.charge:+d}): an {'odd' if electrons % 2 else 'even'} count needs an "
                f"{'even' if electrons % 2 else 'odd'} multiplicity 2S + 1; set "
                "atoms.info['spin']")
    return state


def global_state_tensors(states: Sequence[GlobalState], dtype: torch.dtype,
                         device: torch.device | str) -> dict[str, torch.Tensor]:
    """The batch's TOTAL_CHARGE and SPIN_MULTIPLICITY (n_graphs,) fields, each only when
    some structure differs from its default (see the module docstring)."""
    charges = np.array([s.charge for s in states], dtype=np.float64)
    multiplicities = np.array([s.multiplicity for s in states], dtype=np.float64)
    out = {}
    for key, values in ((keys.TOTAL_CHARGE, charges), (keys.SPIN_MULTIPLICITY, multiplicities)):
        if (values != DEFAULTS[key]).any():
            out[key] = torch.as_tensor(values, dtype=dtype, device=device)
    return out


def global_input(graph: Mapping[str, torch.Tensor], key: str, like: torch.Tensor
                 ) -> torch.Tensor:
    """The (n_graphs,) field ``key`` of ``graph``, or its default for every structure when
    the batch does not carry it; dtype and device of ``like``."""
    if key in graph:
        return graph[key].to(like.dtype)
    n_graphs = graph[keys.N_ATOMS].shape[0]
    return torch.full((n_graphs,), DEFAULTS[key], dtype=like.dtype, device=like.device)


def _unsupported(name: str, values: Sequence[float], model: str) -> UnsupportedInputError:
    default = DEFAULTS[GLOBAL_INPUTS[name]]
    shown = sorted({int(v) for v in values if v != default})
    what = "total charge" if name == "charge" else "spin multiplicity"
    return UnsupportedInputError(
        f"{model} takes no {what} input (it was trained without global_inputs {name!r}) "
        f"but the structure sets {what} {shown}; use a model trained with it, or a {what} "
        f"of {int(default)}")


def check_inputs_taken(graph: Mapping[str, torch.Tensor], takes: Sequence[str],
                       model: str = "this model") -> None:
    """Raise UnsupportedInputError when ``graph`` sets a charge or spin that a model taking
    only ``takes`` (names in GLOBAL_INPUTS) would ignore."""
    for name, key in GLOBAL_INPUTS.items():
        if key in graph and name not in takes:
            raise _unsupported(name, graph[key].detach().cpu().tolist(), model)


def check_state_taken(state: GlobalState, takes: Sequence[str], model: str = "this model"
                      ) -> None:
    """``check_inputs_taken`` for one structure's state, before any graph is built."""
    values = {"charge": float(state.charge), "spin": float(state.multiplicity)}
    for name, key in GLOBAL_INPUTS.items():
        if values[name] != DEFAULTS[key] and name not in takes:
            raise _unsupported(name, [values[name]], model)
