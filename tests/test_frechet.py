"""The fast 3x3 matrix functions equal scipy's, so the cell filter's path is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from ase_mpnn.batch import frechet


@pytest.mark.parametrize("size", [0.0, 1e-6, 0.02, 0.2, 0.6])
def test_logm_expm_and_frechet_equal_scipy(size):
    rng = np.random.default_rng(int(size * 1e6))
    deformation = np.eye(3) + rng.normal(0, size, (3, 3))
    log = frechet.logm(deformation)
    np.testing.assert_allclose(log, np.real(scipy.linalg.logm(deformation)), atol=1e-13)
    np.testing.assert_allclose(frechet.expm(log), scipy.linalg.expm(log), atol=1e-13)
    cache = frechet._FrechetCache()
    for m in range(3):
        for n in range(3):
            direction = np.zeros((3, 3))
            direction[m, n] = 1.0
            expected = scipy.linalg.expm_frechet(log, direction, compute_expm=False)
            np.testing.assert_allclose(cache(log, direction, compute_expm=False), expected,
                                       atol=1e-13)
    general = rng.normal(size=(3, 3))
    np.testing.assert_allclose(cache(log, general, compute_expm=False),
                               scipy.linalg.expm_frechet(log, general, compute_expm=False),
                               atol=1e-12)
