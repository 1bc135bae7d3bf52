"""Bootstrap intervals and compute-optimal allocation."""

from __future__ import annotations

import numpy as np
import pytest

from everyscale.laws import allocate, bootstrap, fit
from everyscale.laws.allocate import optimal_allocation
from everyscale.laws.bootstrap import resample_weights
from everyscale.laws.fit import FitResult
from everyscale.laws.forms import chinchilla
from everyscale.laws.synthetic import BESIROGLU, HOFFMANN, chinchilla_params, chinchilla_points

TRUE = chinchilla_params(**BESIROGLU)
GRID = {"a": [6.0], "b": [7.5], "e": [0.6], "alpha": [0.35], "beta": [0.35]}


def test_resampling_draws_whole_runs():
    run = np.array(["r0", "r0", "r0", "r1", "r1", "r2", "r3", "r3"])
    w = resample_weights(run, 500, np.random.default_rng(0))
    assert w.shape == (500, 8)
    # Points of one run always carry the same weight: the run is drawn as a whole.
    for members in ([0, 1, 2], [3, 4], [6, 7]):
        assert np.all(w[:, members] == w[:, members[:1]])
    # Four runs drawn with replacement, four times.
    run_counts = w[:, [0, 3, 5, 6]]
    assert np.all(run_counts.sum(axis=1) == 4)
    assert run_counts.mean() == pytest.approx(1.0, abs=0.05)


def test_bootstrap_is_seeded_and_reports_its_work():
    points = chinchilla_points(40, noise=0.01, seed=7)
    base = fit(points, start_grid=GRID)
    a = bootstrap(points, base, 60, seed=3, n_check=2)
    b = bootstrap(points, base, 60, seed=3, n_check=0)
    c = bootstrap(points, base, 60, seed=4, n_check=0)
    np.testing.assert_array_equal(a.bootstrap_samples, b.bootstrap_samples)
    assert not np.array_equal(a.bootstrap_samples, c.bootstrap_samples)
    info = a.bootstrap_info
    assert info["n_resamples"] == 60 and info["n_failed"] == 0
    # Vectorized end points agree with L-BFGS-B polished ones to a tiny share of the spread.
    assert info["n_checked_by_lbfgsb"] == 2
    assert info["max_check_deviation_in_sd"] < 0.01
    for name in ("alpha", "beta", "a_exponent", "G"):
        lo, hi = a.ci[name]
        assert lo < (a.params | a.derived)[name] < hi
    with pytest.raises(ValueError, match="integer >= 2"):
        bootstrap(points, base, 1)


def test_intervals_cover_the_truth_at_about_the_nominal_rate():
    """20 synthetic data sets (60 points, 2% noise), 80% percentile intervals, 100 resamples.

    Three quantities per data set (alpha, beta, a predicted loss 7x beyond the data) give 60
    checks; calibrated intervals cover 80% of them (48, binomial sd 3.1 if independent; the
    three are correlated, so the accepted band is wide: 0.6-0.97). Intervals that ignore the
    noise would cover far less; intervals padded to be safe would cover everything. (On 60
    other data sets, `benchmarks/laws_fit.py --coverage 60` measures 0.88.)
    """
    law = chinchilla()
    truth = np.array([[TRUE[p] for p in law.param_names]])
    far = {"N": np.array([7e10]), "D": np.array([1.4e12])}
    true_far = law.predict(truth, far)[0, 0]
    hits = []
    for seed in range(20):
        points = chinchilla_points(60, noise=0.02, seed=100 + seed)
        base = fit(points, start_grid=GRID)
        result = bootstrap(points, base, 100, seed=seed, level=0.8, n_check=0)
        for name in ("alpha", "beta"):
            lo, hi = result.ci[name]
            hits.append(lo <= TRUE[name] <= hi)
        lo, hi = result.interval(N=7e10, D=1.4e12)
        hits.append(lo <= true_far <= hi)
    coverage = np.mean(hits)
    assert 0.6 <= coverage <= 0.97, coverage


def published_fit(E, A, B, alpha, beta) -> FitResult:
    params = chinchilla_params(E, A, B, alpha, beta)
    return FitResult(law="chinchilla", params=params, objective=0.0, n_points=0, diagnostics={})


def test_allocation_reproduces_published_chinchilla_figures():
    """Hoffmann et al. 2022's fit (eq. 10, digits as in Besiroglu et al. 2024 Table 1) at
    Chinchilla's budget C = 5.76e23: ~40B parameters and D/N = 59, with the exponent
    a = beta / (alpha + beta) = 0.46 of Hoffmann's Table 2 (Approach 3); rounded to their
    printed alpha = 0.34, beta = 0.28, D/N becomes 93 (store full precision)."""
    full = allocate(published_fit(**HOFFMANN), 5.76e23)
    assert float(full.tokens_per_param) == pytest.approx(59.08, abs=0.01)
    assert float(full.N) == pytest.approx(4.03e10, rel=0.01)
    assert float(full.N * full.D * 6) == pytest.approx(5.76e23, rel=1e-12)
    a_exp = HOFFMANN["beta"] / (HOFFMANN["alpha"] + HOFFMANN["beta"])
    assert round(a_exp, 2) == 0.46
    rounded = allocate(published_fit(1.69, 406.4, 410.7, 0.34, 0.28), 5.76e23)
    assert float(rounded.tokens_per_param) == pytest.approx(92.65, abs=0.01)


def test_allocation_is_the_minimum_of_the_law_on_the_isoflop_line():
    A, B, E, alpha, beta = 482.01, 2085.43, 1.8172, 0.3478, 0.3658
    C = 1e21
    best = optimal_allocation(A, B, E, alpha, beta, C)
    N = np.geomspace(best["N"] / 10, best["N"] * 10, 20001)
    loss = E + A / N**alpha + B / (C / (6 * N)) ** beta
    assert N[np.argmin(loss)] == pytest.approx(best["N"], rel=1e-3)
    assert loss.min() == pytest.approx(best["loss"], rel=1e-9)


def test_allocation_intervals_and_errors():
    points = chinchilla_points(40, noise=0.01, seed=8)
    result = fit(points, start_grid=GRID, bootstrap=80, seed=0)
    alloc = allocate(result, [1e20, 1e22])
    assert alloc.N.shape == (2,)
    for name in ("N", "D", "tokens_per_param", "loss"):
        lo, hi = alloc.intervals[name]
        value = getattr(alloc, name)
        assert np.all(lo <= value) and np.all(value <= hi), name
    assert alloc.to_dict()["intervals"]["N"][0][0] == float(alloc.intervals["N"][0][0])
    with pytest.raises(ValueError, match="compute must be positive"):
        allocate(result, -1.0)
    params = {"a": 1.0, "e": 0.5, "alpha": 0.1}
    compute_fit = FitResult(law="compute", params=params, objective=0, n_points=0, diagnostics={})
    with pytest.raises(ValueError, match="allocate needs a law of N and D"):
        allocate(compute_fit, 1e21)


def test_overtrain_allocation_matches_its_chinchilla_form():
    # Gadre et al.'s law with eta = -0.17 is Chinchilla with alpha = beta = 0.34.
    params = {"e": 0.5, "log_a": 6.0, "log_b": 5.0, "eta": -0.17}
    ot = FitResult(law="overtrain", params=params, objective=0, n_points=0, diagnostics={})
    alloc = allocate(ot, 1e21)
    N, D = float(alloc.N), float(alloc.D)
    assert ot.predict(N=N, D=D) == pytest.approx(float(alloc.loss), rel=1e-12)
    grid = np.geomspace(N / 3, N * 3, 2001)
    losses = ot.predict(N=grid, C=np.full_like(grid, 1e21))
    assert grid[np.argmin(losses)] == pytest.approx(N, rel=2e-3)


def test_bootstrap_warns_when_resamples_cannot_identify_the_law():
    # 8 points, 5 parameters: a resample of 8 draws holds ~5.3 distinct points on average.
    small = chinchilla_points(8, noise=0.01, seed=9)
    result = fit(small, start_grid=GRID, bootstrap=40)
    assert result.bootstrap_info["n_underdetermined"] > 10
    assert any("bootstrap resamples hold no more distinct points" in w for w in
               result.diagnostics["warnings"])  # fmt: skip
    large = fit(chinchilla_points(40, noise=0.01, seed=9), start_grid=GRID, bootstrap=40)
    assert large.bootstrap_info["n_underdetermined"] == 0
