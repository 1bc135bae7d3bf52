"""The fitting procedure: invariances, diagnostics, agreement with scipy, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from everyscale.laws import FitResult, custom_law, fit, load_points
from everyscale.laws.fit import Objective, newton_decrement
from everyscale.laws.synthetic import BESIROGLU, chinchilla_params, chinchilla_points

TRUE = chinchilla_params(**BESIROGLU)
# A small start grid keeps these tests fast; the full 4,500-start grid is exercised by the
# benchmark and by the slow test at the end.
GRID = {"a": [5.0, 10.0], "b": [5.0, 10.0], "e": [0.0, 1.0], "alpha": [0.5], "beta": [0.5]}
# How closely two runs of the optimizer must agree. The Huber objective with delta = 1e-3 is
# nearly an L1 loss: along the weakest direction (mostly a and b, the logs of A and B) the
# objective changes by less than 1e-15 relative over ~1e-5 in the parameters, so agreement to
# 1e-4 (a 0.01% change in A or B, ~1e-3 of their bootstrap spread) is what float64 can promise.
PARAM_ATOL = 1e-4


@pytest.fixture(scope="module")
def points():
    return chinchilla_points(80, noise=0.01, seed=3)


@pytest.fixture(scope="module")
def result(points):
    return fit(points, start_grid=GRID)


def records(points, scale=1.0, repeat=1):
    rows = [
        {"N": n, "D": d, "loss": scale * l}
        for n, d, l in zip(points["N"], points["D"], points["loss"])
    ]
    return rows * repeat


def test_diagnostics_report_a_converged_shared_optimum(result):
    d = result.diagnostics
    assert d["n_starts"] == 8
    assert d["n_starts_at_best"] >= 2  # several starts agree: not a lone lucky start
    assert d["grad_norm_relative"] < 1e-4
    assert d["newton_decrement_relative"] < 1e-8
    assert d["warnings"] == []
    assert result.n_points == 80
    assert result.params["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)


def test_newton_decrement_flags_a_point_that_is_not_an_optimum(points, result):
    law = result.get_law()
    objective = Objective(law, {"N": points["N"], "D": points["D"]}, points["loss"], "huber", 1e-3)
    lower, upper = law.bound_arrays()
    at_optimum = newton_decrement(objective, result.theta, lower, upper)
    nudged = newton_decrement(objective, result.theta + np.eye(5)[3] * 0.01, lower, upper)
    assert at_optimum < 1e-8 < 1e-3 < nudged


def test_scaling_the_objective_does_not_move_the_optimum(points, result):
    # Every point twice: the summed objective is exactly doubled.
    doubled = fit(load_points(records(points, repeat=2)), start_grid=GRID)
    assert doubled.objective == pytest.approx(2 * result.objective, rel=1e-9)
    for name, value in result.params.items():
        assert doubled.params[name] == pytest.approx(value, abs=PARAM_ATOL)


def test_scaling_the_loss_only_shifts_the_log_coefficients(points, result):
    # L -> 10 L multiplies E, A and B by 10 (a, b, e shift by log 10); exponents are unchanged.
    scaled = fit(load_points(records(points, scale=10.0)), start_grid={
        k: [v + np.log(10.0) for v in vals] if k in "abe" else vals for k, vals in GRID.items()
    })  # fmt: skip
    for name in ("alpha", "beta"):
        assert scaled.params[name] == pytest.approx(result.params[name], abs=PARAM_ATOL)
    for name in ("a", "b", "e"):
        assert scaled.params[name] == pytest.approx(
            result.params[name] + np.log(10.0), abs=PARAM_ATOL
        )


def test_shifted_start_grid_reaches_the_same_optimum(points, result):
    shift = {"a": 0.7, "b": -0.6, "e": 0.3, "alpha": 0.1, "beta": -0.15}
    shifted = {k: [v + shift[k] for v in vals] for k, vals in GRID.items()}
    other = fit(points, start_grid=shifted)
    for name, value in result.params.items():
        assert other.params[name] == pytest.approx(value, abs=PARAM_ATOL)
    assert other.objective == pytest.approx(result.objective, rel=1e-9)


def test_matches_a_plain_scipy_lbfgsb_fit(points, result):
    """Besiroglu et al.'s straightforward objective, scipy's L-BFGS-B with numerical gradients
    and tolerances tight enough for an objective of size ~1e-3 (the defaults stop early)."""
    log_n, log_d, log_l = np.log(points["N"]), np.log(points["D"]), np.log(points["loss"])

    def objective(x):
        a, b, e, alpha, beta = x
        pred = logsumexp([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
        return np.sum(huber(1e-3, pred - log_l))

    start = np.array([6.0, 7.5, 0.6, 0.4, 0.4])
    reference = minimize(
        objective, start, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000}
    )
    # scipy's huber is delta*(|r| - delta/2) outside, as ours: same objective values.
    assert objective(result.theta) == pytest.approx(result.objective, rel=1e-12)
    assert result.objective <= reference.fun * (1 + 1e-9)
    np.testing.assert_allclose(reference.x, result.theta, rtol=1e-3, atol=1e-4)


def test_lbfgsb_from_every_start_reaches_the_same_optimum(points, result):
    """The published procedure (L-BFGS-B from each start) and the default vectorized one agree."""
    published = fit(points, start_grid=GRID, solver="lbfgsb")
    assert published.diagnostics["optimizer"].startswith("L-BFGS-B (analytic gradient) from every")
    assert published.diagnostics["n_starts_at_best"] >= 2
    assert published.objective == pytest.approx(result.objective, rel=1e-9)
    for name, value in result.params.items():
        assert published.params[name] == pytest.approx(value, abs=PARAM_ATOL)
    with pytest.raises(ValueError, match="solver must be one of"):
        fit(points, start_grid=GRID, solver="bfgs")


def test_lone_start_and_bound_warnings():
    pts = chinchilla_points(40, noise=0.01, seed=4)
    lone = fit(pts, start_grid={k: [v[0]] for k, v in GRID.items()})
    assert lone.diagnostics["n_starts_at_best"] == 1
    assert any("only 1 of 1 starts" in w for w in lone.diagnostics["warnings"])

    def law_fn(p, X):
        return p["E"] + p["A"] * X["N"] ** -p["alpha"] + p["B"] * X["D"] ** -p["beta"]

    capped = custom_law(
        "capped",
        law_fn,
        ["E", "A", "B", "alpha", "beta"],
        {"E": [1.8], "A": [400.0], "B": [2000.0], "alpha": [0.1], "beta": [0.35]},
        bounds={"alpha": (0.0, 0.2)},  # the truth (0.3478) lies outside
    )
    result = fit(pts, capped)
    assert result.diagnostics["on_bound"] == ["alpha"]
    assert any("sit on a bound" in w for w in result.diagnostics["warnings"])


def test_least_squares_recovers_noiseless_parameters_exactly():
    pts = chinchilla_points(30, noise=0.0, seed=5)
    result = fit(pts, loss="lsq", start_grid=GRID)
    for name, value in TRUE.items():
        assert result.params[name] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_predict_accepts_compute_instead_of_tokens(result):
    N, D = np.array([1e9, 7e10]), np.array([2e10, 1.4e12])
    np.testing.assert_array_equal(result.predict(N=N, D=D), result.predict(N=N, C=6 * N * D))
    E, A, B = (result.derived[k] for k in "EAB")
    expected = E + A / N ** result.params["alpha"] + B / D ** result.params["beta"]
    np.testing.assert_allclose(result.predict(N=N, D=D), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="needs input"):
        result.predict(N=1e9)
    with pytest.raises(ValueError, match="must be positive and finite"):
        result.predict(N=-1.0, D=1e10)


def test_json_round_trip_keeps_full_precision(points, tmp_path):
    result = fit(points, start_grid=GRID, bootstrap=30, seed=1)
    path = tmp_path / "fit.json"
    result.to_json(path)
    back = FitResult.from_json(path)
    assert back.params == result.params  # bit for bit, no rounding anywhere
    assert back.derived == result.derived
    assert back.objective == result.objective
    np.testing.assert_array_equal(back.bootstrap_samples, result.bootstrap_samples)
    assert back.interval(N=7e10, D=1.4e12) == result.interval(N=7e10, D=1.4e12)
    stored = json.loads(path.read_text())
    assert set(stored) >= {"law", "params", "ci", "objective", "n_points", "diagnostics"}
    assert stored["data"]["parameter_count"].startswith("unspecified")
    assert FitResult.from_json(result.to_json()).params == result.params
    assert FitResult.from_json(json.loads(result.to_json())).params == result.params


def test_from_json_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FitResult.from_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="lacks the field 'params'"):
        FitResult.from_json('{"law": "chinchilla"}')
    with pytest.raises(ValueError, match="law 'mine', which is not built in"):
        FitResult.from_json(
            '{"law": "mine", "params": {}, "objective": 0, "n_points": 1, "diagnostics": {}}'
        )


@pytest.mark.slow
def test_full_chinchilla_grid_on_240_points():
    pts = chinchilla_points(240, noise=0.01, seed=0)
    result = fit(pts)
    assert result.diagnostics["n_starts"] == 4500
    assert result.diagnostics["n_starts_at_best"] > 100
    assert result.params["alpha"] == pytest.approx(TRUE["alpha"], abs=0.02)
