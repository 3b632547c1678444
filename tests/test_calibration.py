"""Calibration of committee uncertainties: the statistics on synthetic errors of known
distribution, the fit on a real (random) committee, and the eval/calibrate commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.io import write
from scipy.stats import norm

from ase_mpnn import Committee, MPNNCalculator, load_model, save_committee, save_model
from ase_mpnn.cli import main
from ase_mpnn.testing import rattled_triclinic_cell, small_molecule
from ase_mpnn.training.calibration import (
    UncertaintyPairs,
    apply_calibration,
    calibration_metrics,
    calibration_plot,
    committee_pairs,
    fit_calibration,
    fit_factors,
    gaussian_nll,
    interval_fractions,
    miscalibration_area,
    nll_scale_factor,
    pair_metrics,
    spearman,
)
from ase_mpnn.training.emt_data import label
from ase_mpnn.training.samples import read_samples

from .conftest import SPECIES, cu_fcc, make_potential

UNIT = {"energy": 1.0, "forces": 1.0, "stress": 1.0}


def synthetic_pairs(n_atoms: int = 2000, scale: float = 1.0, seed: int = 0) -> UncertaintyPairs:
    """Per-atom forces_std log-normal around 0.1 eV/A; each force component's error drawn
    from N(0, scale * forces_std / sqrt(3)); 20 atoms per frame; energy and stress errors
    from N(0, scale * std)."""
    rng = np.random.default_rng(seed)
    std = 0.1 * np.exp(rng.normal(scale=0.7, size=n_atoms))
    errors = rng.normal(size=(n_atoms, 3)) * (scale * std / np.sqrt(3))[:, None]
    n_frames = n_atoms // 20
    energy_std = 0.01 * np.exp(rng.normal(scale=0.5, size=n_frames))
    stress_std = 0.002 * np.exp(rng.normal(scale=0.5, size=(n_frames, 6)))
    return UncertaintyPairs(
        force_errors=errors, forces_std=std, frame_of_atom=np.arange(n_atoms) // 20,
        energy_errors=rng.normal(size=n_frames) * scale * energy_std, energy_std=energy_std,
        stress_errors=rng.normal(size=(n_frames, 6)) * scale * stress_std,
        stress_std=stress_std, factors=dict(UNIT))


# --- statistics on synthetic data ----------------------------------------------------

def test_calibrated_gaussian_errors_have_a_small_area_and_factor_one():
    pairs = synthetic_pairs()
    metrics = pair_metrics(pairs)
    assert metrics["forces_miscalibration_area"] < 0.05
    assert metrics["forces_ence"] < 0.1
    assert metrics["forces_rmse"] == pytest.approx(metrics["forces_rmv"], rel=0.05)
    factors = fit_factors(pairs)
    assert factors["forces"] == pytest.approx(1.0, abs=0.05)
    assert factors["energy"] == pytest.approx(1.0, abs=0.2)  # 100 frames
    assert factors["stress"] == pytest.approx(1.0, abs=0.1)


def test_errors_twice_the_std_fit_factor_two_and_are_calibrated_after_scaling():
    pairs = synthetic_pairs(scale=2.0, seed=1)
    assert pair_metrics(pairs)["forces_miscalibration_area"] > 0.15
    factors = fit_factors(pairs)
    assert factors["forces"] == pytest.approx(2.0, abs=0.1)
    after = pair_metrics(pairs.rescaled(factors))
    assert after["forces_miscalibration_area"] < 0.05
    assert after["energy_miscalibration_area"] < 0.1
    assert after["factors"]["forces"] == factors["forces"]


def test_the_fitted_factor_minimises_the_nll():
    pairs = synthetic_pairs(scale=3.0, seed=2)
    errors, sigmas = pairs.force_errors.ravel(), np.repeat(pairs.forces_std / np.sqrt(3), 3)
    s = nll_scale_factor(errors, sigmas)
    best = gaussian_nll(errors, s * sigmas)
    assert best < gaussian_nll(errors, 0.95 * s * sigmas)
    assert best < gaussian_nll(errors, 1.05 * s * sigmas)


def test_nll_is_the_mean_gaussian_log_density():
    rng = np.random.default_rng(3)
    errors, sigmas = rng.normal(size=50), rng.uniform(0.5, 2, size=50)
    assert gaussian_nll(errors, sigmas) == pytest.approx(
        -np.mean(norm.logpdf(errors, scale=sigmas)), rel=1e-12)


def test_interval_fractions_and_area_limits():
    levels = np.array([0.0, 0.5, 0.6827, 0.9545, 1.0])
    # errors exactly 1 sigma: inside every interval of level >= erf(1/sqrt 2) = 0.6827
    fractions = interval_fractions(np.ones(10), np.ones(10), levels)
    np.testing.assert_array_equal(fractions, [0, 0, 1, 1, 1])
    # zero errors are inside every interval: area = integral of (1 - p) = 0.5
    assert miscalibration_area(np.zeros(100), np.ones(100)) == pytest.approx(0.5, abs=1e-3)
    assert np.isnan(miscalibration_area(np.zeros(0), np.zeros(0)))


def test_spearman_of_a_monotone_relation_is_one():
    x = np.random.default_rng(4).uniform(0.01, 1, size=200)
    assert spearman(x, x**3 + 2) == pytest.approx(1.0)
    assert spearman(x, -np.log(x)) == pytest.approx(-1.0)
    assert spearman(np.array([1, 2, 2, 3.0]), np.array([1, 2, 2, 4.0])) == pytest.approx(1.0)
    assert np.isnan(spearman(np.ones(5), x[:5]))


def test_calibration_plot_is_written(tmp_path):
    path = calibration_plot(synthetic_pairs(n_atoms=400), tmp_path / "c.png", title="t")
    assert path.stat().st_size > 5000


# --- a real committee ----------------------------------------------------------------

@pytest.fixture(scope="module")
def members():
    return [make_potential(seed=k).to(torch.float64) for k in range(3)]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """Five frames labelled by another random potential: three rattled Cu-Ni cells, a
    rattled 32-atom Cu cell and a molecule (no stress)."""
    reference = MPNNCalculator(make_potential(seed=11), device="cpu", dtype="float64")
    structures = [rattled_triclinic_cell(SPECIES, seed) for seed in range(3)]
    structures += [cu_fcc(repeat=2, nickel_every=5, rattle=0.1), small_molecule(SPECIES)]
    path = tmp_path_factory.mktemp("calibration") / "valid.extxyz"
    write(path, [label(atoms, reference) for atoms in structures], format="extxyz")
    return path


def _forces_std(model, atoms) -> np.ndarray:
    atoms = atoms.copy()
    atoms.calc = MPNNCalculator(model, device="cpu", dtype="float64")
    return atoms.calc.get_property("forces_std", atoms)


def test_fit_on_a_real_committee_is_saved_and_scales_forces_std(members, data_file,
                                                                tmp_path):
    samples = read_samples(data_file)
    committee = Committee(members, {"forces": 3.0})
    factors = fit_calibration(committee, samples)
    assert set(factors) == {"energy", "forces", "stress"}
    assert all(np.isfinite(v) and v > 0 for v in factors.values())
    assert committee.calibration == {"energy": 1.0, "forces": 3.0, "stress": 1.0}  # restored
    # the factors are absolute: fitting again on a calibrated committee gives the same
    calibrated = Committee(members, factors)
    assert fit_calibration(calibrated, samples) == pytest.approx(factors, rel=1e-9)
    assert fit_factors(committee_pairs(calibrated, samples)) == pytest.approx(factors,
                                                                             rel=1e-9)
    path = apply_calibration(committee, factors, tmp_path / "calibrated.mpnn")
    assert load_model(path).calibration == pytest.approx(factors, rel=1e-12)
    atoms = rattled_triclinic_cell(SPECIES, 5)
    np.testing.assert_allclose(_forces_std(str(path), atoms),
                               factors["forces"] * _forces_std(members, atoms), rtol=1e-10)
    # calibrated on the same data, the NLL-optimal factor is 1
    metrics = calibration_metrics(calibrated, samples)
    assert metrics["factors"] == factors
    assert 0 <= metrics["forces_miscalibration_area"] <= 0.5
    assert -1 <= metrics["forces_spearman_atom"] <= 1


def test_a_single_model_cannot_be_calibrated(members, data_file):
    with pytest.raises(TypeError, match="needs a Committee"):
        fit_calibration(members[0], read_samples(data_file))


def test_eval_of_a_committee_writes_calibration_figures(members, data_file, tmp_path, capsys):
    model = save_committee(members, tmp_path / "committee.mpnn", calibration={"forces": 2.0})
    out = tmp_path / "evaluation"
    assert main(["eval", str(model), str(data_file), "--out", str(out),
                 "--dtype", "float64"]) == 0
    printed = capsys.readouterr().out
    assert "miscalibration area" in printed and "Spearman" in printed
    assert (out / "calibration.png").stat().st_size > 5000
    block = json.loads((out / "metrics.json").read_text())["calibration"]
    assert block["factors"]["forces"] == 2.0
    for key in ("forces_spearman_frame", "forces_spearman_atom",
                "forces_miscalibration_area", "forces_nll"):
        assert np.isfinite(block[key]), key
    assert block["n_frames_forces"] == 5
    assert "forces_mae" in json.loads((out / "metrics.json").read_text())


def test_calibrate_command_writes_a_loadable_calibrated_committee(members, data_file,
                                                                  tmp_path, capsys):
    model = save_committee(members, tmp_path / "committee.mpnn")
    out = tmp_path / "calibrated.mpnn"
    assert main(["calibrate", str(model), str(data_file), "-o", str(out),
                 "--plot", str(tmp_path / "c.png")]) == 0
    printed = capsys.readouterr().out
    assert "before" in printed and "after" in printed
    loaded = load_model(out)
    expected = fit_calibration(Committee(members), read_samples(data_file))
    assert loaded.calibration == pytest.approx(expected, rel=1e-9)
    assert loaded.manifest["calibration_fit"]["n_frames"] == 5
    assert (tmp_path / "c.png").exists()
    single = save_model(members[0], tmp_path / "single.mpnn")
    assert main(["calibrate", str(single), str(data_file), "-o", str(out)]) == 2
    assert "not a committee" in capsys.readouterr().err


# --- benchmarks/uncertainty.py -------------------------------------------------------

def _benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "uncertainty.py"
    spec = importlib.util.spec_from_file_location("uncertainty_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_uncertainty_benchmark_judges_its_targets():
    bench = _benchmark()
    good = {"members": 4, "frame_spearman_all": 0.7, "ood_std_ratio": 2.5,
            "miscalibration_area": 0.05, "timing": {"ratio": 3.9}}
    assert bench.check_targets(good) == []
    bad = {**good, "frame_spearman_all": float("nan"), "ood_std_ratio": 1.9,
           "miscalibration_area": 0.11, "timing": {"ratio": 4.1}}
    missed = bench.check_targets(bad)
    assert [line[:3] for line in missed] == ["(a)", "(b)", "(c)", "(d)"]


def test_uncertainty_benchmark_frames_and_a_missing_committee(capsys):
    bench = _benchmark()
    rng = np.random.default_rng(0)
    for atoms in bench.cluster_frames(3, rng):
        assert 13 <= len(atoms) <= 20 and not atoms.pbc.any()
        assert atoms.get_all_distances().max() < 9.0  # one compact piece of fcc
    reference = bench._alloy(np.random.default_rng(1))
    compressed = bench.strained_frames(1, 0.9, np.random.default_rng(1))[0]
    assert compressed.get_volume() == pytest.approx(0.9**3 * reference.get_volume())
    assert bench.main(["--committee", "no-such-committee"]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_area_fit_beats_the_nll_fit_on_heavy_tailed_errors():
    from ase_mpnn.training.calibration import (
        area_scale_factor,
        miscalibration_area,
        nll_scale_factor,
    )

    rng = np.random.default_rng(4)
    sigmas = rng.uniform(0.05, 0.5, 20000)
    errors = sigmas * rng.standard_t(2.5, sigmas.size)  # heavy tails: a few huge errors
    by_nll, by_area = nll_scale_factor(errors, sigmas), area_scale_factor(errors, sigmas)
    area_nll = miscalibration_area(errors, by_nll * sigmas)
    area_area = miscalibration_area(errors, by_area * sigmas)
    assert area_area < area_nll and area_area < 0.05
    gaussian = sigmas * rng.normal(size=sigmas.size)
    assert area_scale_factor(gaussian, sigmas) == pytest.approx(1.0, rel=0.1)
