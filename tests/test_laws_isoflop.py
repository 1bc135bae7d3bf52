"""IsoFLOP analysis (Chinchilla Approach 2) and the extrapolation check."""

from __future__ import annotations

import numpy as np
import pytest

from everyscale.laws import extrapolation_check, isoflop, load_points
from everyscale.laws.allocate import optimal_allocation
from everyscale.laws.synthetic import BESIROGLU, chinchilla_params, sample_law

E, A, B, ALPHA, BETA = (BESIROGLU[k] for k in ("E", "A", "B", "alpha", "beta"))


def isoflop_points(budgets, span=4.0, sizes=9, noise=0.0, seed=0):
    """For each budget, sizes log-spaced over span x around the law's optimal N."""
    rows = []
    rng = np.random.default_rng(seed)
    for C in budgets:
        n_opt = optimal_allocation(A, B, E, ALPHA, BETA, C)["N"]
        for N in np.geomspace(n_opt / span, n_opt * span, sizes):
            D = C / (6 * N)
            loss = (E + A / N**ALPHA + B / D**BETA) * np.exp(noise * rng.standard_normal())
            rows.append({"N": N, "C": C, "loss": loss})
    return load_points(rows)


def test_isoflop_recovers_the_allocation_exponent():
    budgets = np.geomspace(1e18, 1e21, 5)
    result = isoflop(isoflop_points(budgets))
    # Hoffmann et al. 2022 Approach 2 targets a = beta / (alpha + beta) of the true law; the
    # parabola in log N is only an approximation of the iso-FLOP profile, hence 2%.
    assert result.a == pytest.approx(BETA / (ALPHA + BETA), rel=0.02)
    assert result.b == pytest.approx(1 - result.a)
    truth = optimal_allocation(A, B, E, ALPHA, BETA, budgets)["N"]
    np.testing.assert_allclose([b["N_opt"] for b in result.budgets], truth, rtol=0.05)
    assert result.optimal_N(1e20) * result.optimal_D(1e20) * 6 == pytest.approx(1e20)


def test_isoflop_refuses_an_edge_minimum():
    points = isoflop_points([1e18, 1e19, 1e20])
    # Drop the sizes above the optimum of the middle budget: its minimum is now at the edge.
    C, N = points["C"], points["N"]
    n_opt = optimal_allocation(A, B, E, ALPHA, BETA, 1e19)["N"]
    keep = ~(np.isclose(C, 1e19) & (n_opt * 0.99 < N))
    with pytest.raises(ValueError, match=r"budget C=1e\+19: the loss minimum is at the edge"):
        isoflop(points.subset(keep))
    dropped = isoflop(points.subset(keep), on_edge="drop")
    assert len(dropped.budgets) == 2 and "dropped" in dropped.notes[0]
    with pytest.raises(ValueError, match="at least 2 budgets"):
        isoflop(isoflop_points([1e18]))


def test_extrapolation_check_predicts_held_out_large_runs():
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e9), 50))
    D = N * np.exp(rng.uniform(np.log(5), np.log(100), 50))
    N[-2:], D[-2:] = [3e9, 5e9], [6e10, 1e11]  # two much larger runs
    points = sample_law("chinchilla", chinchilla_params(**BESIROGLU), {"N": N, "D": D}, noise=0.003)
    grid = {"a": [5.0, 10.0], "b": [5.0, 10.0], "e": [0.5], "alpha": [0.5], "beta": [0.5]}
    check = extrapolation_check(points, holdout=2, start_grid=grid, bootstrap=50)
    assert check.fit.n_points == 48
    assert sorted(r["N"] for r in check.held_out) == [3e9, 5e9]
    assert len(check.held_out_runs) == 2
    # With 0.3% noise the extrapolated loss is within 1.5% (true law; measured ~0.3%).
    assert check.max_abs_rel_error < 0.015
    assert check.coverage is not None and 0.0 <= check.coverage <= 1.0
    with pytest.raises(ValueError, match="holdout must be an integer"):
        extrapolation_check(points, holdout=0)


def test_extrapolation_check_holds_out_whole_runs():
    """Three checkpoints per run: holding out the largest run drops its three points, and the
    summary counts one run, not three."""
    from everyscale.laws.report import summary

    N = np.repeat(np.geomspace(1e7, 2e9, 8), 3)
    D = N * np.tile([10.0, 20.0, 40.0], 8)
    run = np.repeat([f"r{i}" for i in range(8)], 3)
    params = chinchilla_params(**BESIROGLU)
    points = sample_law("chinchilla", params, {"N": N, "D": D}, noise=0.003, run=run)
    grid = {"a": [6.0], "b": [7.5], "e": [0.6], "alpha": [0.35], "beta": [0.35]}
    check = extrapolation_check(points, holdout=1, start_grid=grid)
    assert check.held_out_runs == ["r7"] and len(check.held_out) == 3
    assert check.fit.n_points == 21
    assert "without the 1 largest runs (3 points)" in summary(check.fit, extrapolation=check)
