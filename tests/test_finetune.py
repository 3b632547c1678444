"""Fine-tuning: ``train --init MODEL`` starts from a model's weights, over more elements."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT

from ase_mpnn.modelfile import save_model
from ase_mpnn.models.presets import SMALL
from ase_mpnn.training.config import DEFAULT_LR, FINE_TUNE_LR, TrainConfig
from ase_mpnn.training.finetune import extend_species, initial_potential
from ase_mpnn.training.samples import GraphCache, Sample

from .conftest import cu_fcc, make_preset


def _energy_and_forces(potential, atoms):
    cache = GraphCache([Sample(atoms, 0.0, None, None, "x")], potential.cutoff,
                       potential.species)
    graph, _ = cache.batch([0], torch.float64)
    out = potential(graph, forces=True)
    return out["energy"].detach(), out["forces"].detach()


@pytest.mark.parametrize("preset", sorted(SMALL))
def test_added_elements_leave_old_predictions_unchanged(preset):
    """Al (Z=13) is inserted before Cu and Ni: every element-indexed weight moves a row."""
    old = make_preset(preset).double()
    new = extend_species(old, ["Al", "Cu", "Ni"])
    assert new.species == ["Al", "Cu", "Ni"]
    atoms = cu_fcc(repeat=2, nickel_every=3, rattle=0.1)
    e_old, f_old = _energy_and_forces(old, atoms)
    e_new, f_new = _energy_and_forces(new, atoms)
    torch.testing.assert_close(e_new, e_old, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(f_new, f_old, rtol=1e-12, atol=1e-10)
    with_al = atoms.copy()
    with_al.symbols[0] = "Al"
    e_al, f_al = _energy_and_forces(new, with_al)  # the new element has working weights
    assert torch.isfinite(e_al).all() and torch.isfinite(f_al).all()


def test_elements_cannot_be_dropped():
    with pytest.raises(ValueError, match="keeps the model's elements"):
        extend_species(make_preset("SchNet"), ["Cu"])


def _emt_samples(n: int, seed: int, shift_per_atom: dict[str, float] | None = None):
    """Rattled Cu-Ni cells with EMT labels, energies offset per atom of each element."""
    rng = np.random.default_rng(seed)
    samples = []
    for k in range(n):
        atoms = cu_fcc(nickel_every=int(rng.integers(2, 5)), rattle=0.1, seed=seed + k)
        atoms = atoms.repeat((1 + k % 2, 1, 1))
        atoms.calc = EMT()
        energy = atoms.get_potential_energy() + sum(
            (shift_per_atom or {}).get(x, 0.0) for x in atoms.get_chemical_symbols())
        samples.append(Sample(atoms.copy(), energy, atoms.get_forces(), None, f"emt:{k}"))
    return samples


def test_e0_refit_absorbs_a_shifted_energy_zero(tmp_path):
    """A reference whose energy zero differs per element: with finetune_e0="all" the refit
    E0 moves by exactly that offset (the interaction energies are held fixed); with the
    default "new" the model's own elements keep their E0."""
    potential = make_preset("SchNet").double()
    path = save_model(potential, tmp_path / "start.mpnn")
    offsets = {"Cu": 0.7, "Ni": -1.3}
    before = dict(zip(potential.species, potential.reference_energies.tolist()))
    plain = _emt_samples(6, seed=4)
    baseline = initial_potential(TrainConfig(init=str(path), finetune_e0="all"), plain)
    shifted = initial_potential(TrainConfig(init=str(path), finetune_e0="all"),
                                _emt_samples(6, seed=4, shift_per_atom=offsets))
    for k, x in enumerate(potential.species):
        moved = float(shifted.reference_energies[k] - baseline.reference_energies[k])
        assert moved == pytest.approx(offsets[x], abs=1e-8)
    kept = initial_potential(TrainConfig(init=str(path)), plain)
    assert kept.reference_energies.tolist() == pytest.approx(list(before.values()), abs=1e-12)


def test_new_element_gets_its_e0_fitted(tmp_path):
    """Data with Al, a model of Cu and Ni: Al is added and only its E0 is fitted."""
    from ase.build import bulk

    potential = make_preset("SchNet").double()
    path = save_model(potential, tmp_path / "start.mpnn")
    samples = _emt_samples(4, seed=5)
    for k in range(3):
        atoms = bulk("Al", "fcc", a=4.05, cubic=True)
        atoms.symbols[k] = "Cu"
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        samples.append(Sample(atoms.copy(), atoms.get_potential_energy(), atoms.get_forces(),
                              None, f"al:{k}"))
    started = initial_potential(TrainConfig(init=str(path)), samples)
    assert started.species == ["Cu", "Ni", "Al"]  # the model's order, new elements after
    assert started.reference_energies[:2].tolist() == pytest.approx(
        potential.reference_energies.tolist(), abs=1e-12)
    assert float(started.reference_energies[2]) != 0.0


def test_learning_rate_defaults():
    assert TrainConfig().learning_rate == DEFAULT_LR
    assert TrainConfig(init="emt-cuni-schnet").learning_rate == FINE_TUNE_LR < DEFAULT_LR
    assert TrainConfig(init="emt-cuni-schnet", lr=1e-2).learning_rate == 1e-2


def test_cli_train_init_starts_from_the_model(tmp_path):
    """``train --init``: the first epoch starts at the model's weights (its validation error
    before any step is the model's), with the fine-tuning learning rate."""
    from ase.io import write

    from ase_mpnn.cli import main
    from ase_mpnn.loading import load_model

    potential = make_preset("SchNet")
    start = save_model(potential, tmp_path / "start.mpnn")
    frames = []
    for sample in _emt_samples(8, seed=6):
        atoms = sample.atoms.copy()
        atoms.info["REF_energy"] = sample.energy
        atoms.arrays["REF_forces"] = sample.forces
        frames.append(atoms)
    write(tmp_path / "data.xyz", frames, format="extxyz")
    out = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "data.xyz"), "--init", str(start),
                 "--output", str(out), "--epochs", "1", "--set", "progress=false",
                 "--set", "test_fraction=0", "--set", "valid_fraction=0.25",
                 "--set", "ema_decay=0.0"])
    assert code == 0
    tuned = load_model(out / "best.mpnn")
    assert tuned.model.hyperparameters == potential.model.hyperparameters
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["lr"] == FINE_TUNE_LR
    moved = max(float((a - b).detach().abs().max()) for a, b in
                zip(tuned.model.parameters(), potential.model.parameters()))
    assert 0 < moved < 0.05  # a few small steps away from the start


# --- benchmarks/finetune.py's pieces -------------------------------------------------------

def _finetune_benchmark():
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("finetune")


def test_liquid_frames_are_labelled_hot_32_atom_cells():
    bench = _finetune_benchmark()
    frames = bench.liquid_frames(3, seed=1, equilibrate=50, every=5)
    assert len(frames) == 3 and all(len(a) == 32 and a.pbc.all() for a in frames)
    for atoms in frames:
        assert {"REF_energy", "REF_stress"} <= set(atoms.info)
        assert np.isfinite(atoms.arrays["REF_forces"]).all()
    assert set(frames[0].get_chemical_symbols()) <= {"Cu", "Ni"}


def test_replay_frames_keep_labels_and_are_typed(tmp_path):
    from ase.io import read

    bench = _finetune_benchmark()
    samples = _emt_samples(4, seed=7)
    path = bench.write_replay(samples, 2, tmp_path / "replay.xyz", seed=0)
    frames = read(path, ":")
    assert len(frames) == 2 and all(a.info["config_type"] == "replay" for a in frames)
    energies = {round(s.energy, 8) for s in samples}
    assert all(round(a.info["REF_energy"], 8) in energies for a in frames)
