"""The ladder's noise model: the residual spread of a fit recovers the noise it was given,
and the interval with noise covers new noisy runs about as often as it says."""

import numpy as np
import pytest

from everyscale import laws
from everyscale.ladder.noise import noisy_interval, residual_sigma
from everyscale.laws.synthetic import BESIROGLU, chinchilla_params, chinchilla_points, sample_law


@pytest.fixture(scope="module")
def noisy_fit():
    params = chinchilla_params(**BESIROGLU)
    points = chinchilla_points(40, noise=0.02, seed=3)
    fit = laws.fit(points, "chinchilla", bootstrap=40, seed=0)
    return params, points, fit


def test_residual_sigma_recovers_the_noise_of_the_points(noisy_fit):
    _, points, fit = noisy_fit
    assert residual_sigma(fit, points) == pytest.approx(0.02, rel=0.3)


def test_noisy_interval_covers_new_runs_and_is_wider_than_the_bootstrap(noisy_fit):
    params, points, fit = noisy_fit
    sigma = residual_sigma(fit, points)
    n, d = 2e9, 4e10  # inside the data's range: the law is right, only noise remains
    lo, hi = noisy_interval(fit, sigma, 0.95, N=n, D=d)
    b_lo, b_hi = fit.interval(N=n, D=d)
    assert lo < b_lo <= b_hi < hi
    inputs = {"N": np.full(400, n), "D": np.full(400, d)}
    new = sample_law("chinchilla", params, inputs, noise=0.02, seed=7)
    inside = np.mean((new["loss"] >= lo) & (new["loss"] <= hi))
    assert 0.88 <= inside <= 0.995


def test_bad_noise_input_is_refused(noisy_fit):
    _, points, fit = noisy_fit
    with pytest.raises(ValueError, match="sigma"):
        noisy_interval(fit, -1.0, N=1e9, D=1e10)
    with pytest.raises(ValueError, match="level"):
        noisy_interval(fit, 0.01, level=1.5, N=1e9, D=1e10)
    few = points.subset(np.arange(len(points)) < 5)
    with pytest.raises(ValueError, match="--widths/--tokens"):
        residual_sigma(fit, few)
