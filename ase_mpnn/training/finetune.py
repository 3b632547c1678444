"""Fine-tuning: start a training from a trained model, possibly over more elements.

``initial_potential(config, samples)`` loads ``config.init`` (a model file or a built-in
name) as a trainable Potential. When the data (or ``config.species``) hold elements the
model does not cover, ``extend_species`` builds the same architecture over the union of
elements and copies every weight over: a parameter that depends on the element (an
embedding row, the per-element weights of MACE's product, the element block of an e3nn
self-connection) is copied row by row for the elements both share, and new elements keep
their fresh initialisation. On structures of the old elements the extended model predicts
exactly what the old one did.

The reference energies E0 of new elements (``finetune_e0="new"``, the default) or of all
elements in the data (``"all"``) are then refitted: with the model's interaction energies
E_int = E - sum_i E0[s_i] held fixed, E0 solves the least-squares problem
sum_i E0[s_i] ~ E_ref - E_int over the fine-tuning frames with energies. A shifted energy
zero of the new reference (another DFT code, pseudopotential or functional) is absorbed
there instead of in the network's weights. ``config.reference_energies`` and isolated-atom
frames in the data, when given, win over the fit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from ase.data import atomic_numbers
from e3nn import o3

from ..loading import load_model
from ..models import build_model
from ..potential import Potential
from .config import TrainConfig
from .samples import GraphCache, Sample, fit_reference_energies, species_of

#: which E0 a fine-tuning run refits: "new" (only elements new to the model: the same
#: reference method as the model's data) or "all" (every element in the data: a new
#: reference, e.g. another DFT code or functional, whose energy zero differs)
FINETUNE_E0 = ("new", "all")


def initial_potential(config: TrainConfig, samples: Sequence[Sample],
                      reference_energies: dict[str, float] | None = None) -> Potential:
    """The potential a fine-tuning run starts from (float64, CPU; the caller moves it).

    Args:
        config: the run's options; ``config.init`` names the model.
        samples: the training frames (their elements join the model's; E0 is fitted on them).
        reference_energies: E0 known from isolated-atom frames {symbol: eV}; these are kept.
    """
    if config.finetune_e0 not in FINETUNE_E0:
        raise ValueError(f"finetune_e0 must be one of {FINETUNE_E0}, got {config.finetune_e0!r}")
    potential = load_model(config.init, dtype=torch.float64)
    if config.zbl is not None:  # the run's repulsion replaces the model's own
        potential.repulsion = config.repulsion()
        if potential.repulsion.r_outer > potential.cutoff:
            raise ValueError(f"zbl r_outer = {potential.repulsion.r_outer} A reaches beyond "
                             f"the cutoff of {config.init} ({potential.cutoff} A)")
    old_species = list(potential.species)
    added = set(config.species or species_of(samples)) - set(potential.species)
    wanted = old_species + sorted(added, key=atomic_numbers.__getitem__)  # old order kept
    if wanted != potential.species:
        potential = extend_species(potential, wanted)
    known = dict(reference_energies or {})
    if config.finetune_e0 == "new":  # the model's own elements keep their E0
        known = {**dict(zip(old_species, potential.reference_energies.tolist())), **known}
    known.update(config.reference_energies or {})
    refit_reference_energies(potential, samples, known, config.batch_size)
    return potential


def extend_species(potential: Potential, species: Sequence[str]) -> Potential:
    """The same model over ``species`` (a superset of ``potential.species``): the weights
    of the shared elements copied, the new elements freshly initialised.

    The new elements' ``scale`` and ``shift`` are the means of the old ones, their E0 0
    (to be refitted).
    """
    missing = sorted(set(potential.species) - set(species))
    if missing:
        raise ValueError(f"fine-tuning keeps the model's elements; {missing} are missing "
                         f"from species {list(species)}")
    old_model = potential.model
    model = build_model(old_model.architecture, list(species), old_model.cutoff,
                        **old_model.hyperparameters).to(potential.scale.dtype)
    rows = [list(species).index(s) for s in potential.species]  # old index -> new index
    _copy_weights(old_model, model, rows)
    extended = Potential(model, scale=float(potential.scale.mean()),
                         shift=float(potential.shift.mean()), reference_energies=None,
                         repulsion=potential.repulsion)
    extended = extended.to(potential.scale.dtype)
    with torch.no_grad():
        for name in ("scale", "shift", "reference_energies"):
            getattr(extended, name)[rows] = getattr(potential, name)
    return extended


def _copy_weights(old: torch.nn.Module, new: torch.nn.Module, rows: list[int]) -> None:
    """Copy old's parameters and buffers into new's (same architecture, more elements)."""
    n_old, n_new = len(old.species), len(new.species)
    old_modules = dict(old.named_modules())
    with torch.no_grad():
        for module_name, module in new.named_modules():
            source = old_modules[module_name]
            tensors = list(module.named_parameters(recurse=False)) + \
                list(module.named_buffers(recurse=False))
            for name, target in tensors:
                value = getattr(source, name)
                if isinstance(module, o3.TensorProduct) and name == "weight" \
                        and value.shape != target.shape:
                    _copy_tensor_product_weight(source, module, rows, n_old, n_new)
                else:
                    _copy_rows(value, target, rows, n_old, n_new, f"{module_name}.{name}")


def _copy_rows(value: torch.Tensor, target: torch.Tensor, rows: list[int], n_old: int,
               n_new: int, name: str) -> None:
    """target[..., rows, ...] = value along the one axis whose size went n_old -> n_new."""
    if value.shape == target.shape:
        target.copy_(value)
        return
    axes = [k for k, (a, b) in enumerate(zip(value.shape, target.shape)) if a != b]
    if value.dim() != target.dim() or len(axes) != 1 or \
            (value.shape[axes[0]], target.shape[axes[0]]) != (n_old, n_new):
        raise ValueError(f"cannot map {name} of shape {tuple(value.shape)} onto "
                         f"{tuple(target.shape)} by element")
    index = torch.tensor(rows, device=target.device)
    target.index_copy_(axes[0], index, value.to(target.dtype))


def _copy_tensor_product_weight(old: o3.TensorProduct, new: o3.TensorProduct,
                                rows: list[int], n_old: int, n_new: int) -> None:
    """An e3nn tensor product's flat weight, path by path: each path's block has shape
    ``path_shape``; blocks with the one-hot element input (more rows now) map by element,
    rescaled by the ratio of the paths' normalisation constants."""
    old_start = new_start = 0
    for old_ins, new_ins in zip(old.instructions, new.instructions):
        old_size, new_size = int(np.prod(old_ins.path_shape)), int(np.prod(new_ins.path_shape))
        block = old.weight[old_start:old_start + old_size].reshape(old_ins.path_shape)
        # e3nn normalises each path by its fan-in, which counts the element inputs: keep
        # path_weight * weight, the product the layer applies, unchanged
        block = block * (old_ins.path_weight / new_ins.path_weight)
        target = new.weight[new_start:new_start + new_size].view(new_ins.path_shape)
        _copy_rows(block, target, rows, n_old, n_new, "tensor-product weight")
        old_start, new_start = old_start + old_size, new_start + new_size


@torch.no_grad()
def refit_reference_energies(potential: Potential, samples: Sequence[Sample],
                             known: dict[str, float], batch_size: int = 8) -> dict[str, float]:
    """Set E0 of the elements not in ``known`` by least squares on the frames with energies,
    with the model's interaction energies held fixed; returns all E0 {symbol: eV}.

    The fit is ``fit_reference_energies`` applied to E_ref - E_int, E_int the prediction
    less its current E0; elements absent from those frames keep their current E0.
    """
    from .metrics import predict

    species = potential.species
    current = dict(zip(species, potential.reference_energies.tolist()))
    labelled = [s for s in samples if s.energy is not None]
    present = {x for s in labelled for x in s.atoms.get_chemical_symbols()}
    fixed = {**{x: e for x, e in current.items() if x not in present}, **known}
    if labelled and set(species) - set(fixed):
        cache = GraphCache(labelled, potential.cutoff, species)
        predicted = [row["energy"] for row in predict(potential, cache, batch_size,
                                                      potential.scale.dtype)]
        e0_part = [sum(current[x] for x in s.atoms.get_chemical_symbols()) for s in labelled]
        left = [Sample(s.atoms, s.energy - (e - e0), None, None, s.source)  # E_ref - E_int
                for s, e, e0 in zip(labelled, predicted, e0_part)]
        fixed = fit_reference_energies(left, species, fixed=fixed)
    current.update(fixed)
    potential.reference_energies.copy_(torch.tensor([current[x] for x in species],
                                                    dtype=potential.reference_energies.dtype))
    return current
