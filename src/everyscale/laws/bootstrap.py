"""Bootstrap uncertainty for a fitted law: resample whole runs, refit, take percentiles.

Points that come from one training run (several checkpoints of it) are not independent, so the
resampling unit is the run (Besiroglu et al. 2024 §4 bootstrap the Chinchilla fit). A resample
gives each run a weight, how often it is drawn, and each point its run's weight. Every resample
is therefore the same objective with a different weight vector, and all of them are refitted
at once by the vectorized optimizer of `everyscale.laws.fit`, warm-started from the full-data
optimum and the other local optima the full fit found.

The weights are Poisson(1) counts per run (the Poisson bootstrap: Hanley & MacGibbon 2006,
Chamandy et al. 2012), each run's sequence of counts drawn from a generator seeded by the
seed and the run's id. Run r's count in resample i is then the same in every fit that holds
run r and uses that seed, so two laws fitted to overlapping runs (a loss law and an error law,
`everyscale.laws.chain`) have joint resamples: resample i of both is one draw of the runs.
`scheme="multinomial"` draws R runs with replacement from the R runs instead (Efron's
original scheme), whose counts depend on which other runs a fit holds.

Intervals are percentile intervals (Efron & Tibshirani 1993, §13.3) on the parameters and on
derived quantities (e.g. `a = beta / (alpha + beta)`); `FitResult.interval(...)` and
`allocate(...)` use the stored samples for predictions, N*(C) and D/N.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from everyscale.laws.fit import (
    FitResult,
    Objective,
    batched_lm,
    percentile_interval,
    polish,
    prepare,
    single_threaded_blas,
)
from everyscale.laws.io import Points

SCHEMES = ("poisson", "multinomial")


def resample_weights(run: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial per-point weights (n_resamples, n): how often each point's run was drawn
    when R runs are drawn with replacement from the R runs."""
    _, run_index = np.unique(run, return_inverse=True)
    n_runs = int(run_index.max()) + 1
    counts = rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_resamples)
    return counts[:, run_index.ravel()].astype(float)


def run_keyed_weights(run: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Poisson(1) per-point weights (n_resamples, n), each run's counts keyed by (seed, run id).

    A run's counts do not depend on which other runs are present, and the first k resamples
    do not depend on how many are drawn: fits that share runs and a seed resample them jointly.
    """
    names, run_index = np.unique(np.asarray(run).astype(str), return_inverse=True)
    counts = np.empty((n_resamples, len(names)))
    for j, name in enumerate(names):
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        counts[:, j] = np.random.default_rng([int(seed), key]).poisson(1.0, n_resamples)
    return counts[:, run_index.ravel()]


@single_threaded_blas
def bootstrap(
    points: Points,
    fit_result: FitResult,
    n_resamples: int = 4000,
    *,
    seed: int = 0,
    level: float = 0.95,
    max_starts: int = 1,
    n_check: int = 5,
    scheme: str = "poisson",
) -> FitResult:
    """Refit `fit_result`'s law on `n_resamples` run-level resamples; return a copy with intervals.

    Each resample starts from up to `max_starts` local optima of the full fit (the best first;
    default: the optimum only) and keeps its best end point. `n_check` random resamples are then
    polished by L-BFGS-B to machine precision; the largest parameter deviation found, in units of
    the bootstrap standard deviation, is reported as `max_check_deviation_in_sd` (it should be
    far below 0.01). Resamples that hit the vectorized optimizer's iteration cap are finished
    by L-BFGS-B (`n_finished_by_lbfgsb`). `scheme`: "poisson" (default, run-keyed: see the
    module docstring) or "multinomial". Fixed and tied parameters stay so in every resample.
    """
    if int(n_resamples) != n_resamples or n_resamples < 2:
        raise ValueError(f"bootstrap resamples must be an integer >= 2, got {n_resamples!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    n_resamples = int(n_resamples)
    reduced = fit_result.reduced_law()
    points, law, X, y = prepare(points, reduced.law)
    objective = Objective(law, X, y, fit_result.loss, fit_result.huber_delta)
    lower, upper = law.bound_arrays()
    rng = np.random.default_rng(seed)
    if scheme == "poisson":
        weights = run_keyed_weights(points.run, n_resamples, seed)
    else:
        weights = resample_weights(points.run, n_resamples, rng)

    optima = fit_result.diagnostics.get("local_optima") or [fit_result.theta.tolist()]
    starts = reduced.reduce(np.array(optima[:max_starts], dtype=float))
    K = len(starts)
    theta0 = np.tile(starts, (n_resamples, 1))  # resample-major: rows k*K .. k*K+K-1
    ends, f_ends, _, converged = batched_lm(
        objective, theta0, lower, upper, np.repeat(weights, K, axis=0), ftol=1e-10, max_iter=1000
    )
    rows = np.arange(n_resamples)
    pick = np.argmin(f_ends.reshape(n_resamples, K), axis=1)
    samples = ends.reshape(n_resamples, K, -1)[rows, pick]
    f_best = f_ends.reshape(n_resamples, K)[rows, pick]
    converged = converged.reshape(n_resamples, K)[rows, pick]

    # Resamples whose vectorized run hit its iteration cap are finished by L-BFGS-B.
    unconverged = np.flatnonzero(~converged & np.isfinite(f_best))
    for i in unconverged:
        result = polish(objective, samples[i], lower, upper, weights[i], maxiter=1000)
        if result.objective <= f_best[i]:
            samples[i], f_best[i] = result.theta, result.objective
    failed = ~np.isfinite(f_best)
    # A resample with no more distinct points than parameters cannot identify the law.
    identifiable = np.count_nonzero(weights, axis=1) > law.n_params
    underdetermined = int(np.sum(~identifiable))
    samples[failed] = np.nan

    # Convergence check: polish a few random resamples with L-BFGS-B to machine precision and
    # measure how far the vectorized end points were, in units of the bootstrap spread.
    spread = np.nanstd(samples, axis=0)
    checkable = np.flatnonzero(~failed & identifiable)  # the others have no unique optimum
    checked = rng.choice(checkable, size=min(n_check, len(checkable)), replace=False)
    deviation = 0.0
    for i in checked:
        exact = polish(objective, samples[i], lower, upper, weights[i]).theta
        deviation = max(
            deviation, float(np.max(np.abs(exact - samples[i]) / np.maximum(spread, 1e-300)))
        )

    samples = reduced.expand(samples)  # every parameter of the law, fixed ones constant
    full_law = reduced.full
    sample_dict = {name: samples[:, j] for j, name in enumerate(full_law.param_names)}
    ci = {}
    for name, values in {**sample_dict, **full_law.derived_values(sample_dict)}.items():
        lo, hi = percentile_interval(np.asarray(values, dtype=float), level)
        ci[name] = [float(lo), float(hi)]
    info = {
        "n_resamples": n_resamples,
        "seed": seed,
        "unit": "run"
        if points.has_runs
        else ("run (one point each)" if points.run_ids_given else "point (no run column)"),
        "n_runs": len(np.unique(points.run)),
        "method": "percentile",
        "scheme": "poisson by run id" if scheme == "poisson" else "multinomial",
        "starts_per_resample": K,
        "n_failed": int(np.sum(failed)),
        "n_finished_by_lbfgsb": len(unconverged),
        "n_checked_by_lbfgsb": len(checked),
        "max_check_deviation_in_sd": deviation,
        "n_underdetermined": underdetermined,
    }
    diagnostics = dict(fit_result.diagnostics)
    if underdetermined > 0.05 * n_resamples:
        diagnostics["warnings"] = [
            *diagnostics.get("warnings", []),
            f"{underdetermined} of {n_resamples} bootstrap resamples hold no more distinct points "
            f"than the law has parameters ({law.n_params}): the intervals are wide or unreliable; "
            "add runs",
        ]
    return dataclasses.replace(
        fit_result,
        ci=ci,
        ci_level=level,
        bootstrap_samples=samples,
        bootstrap_info=info,
        diagnostics=diagnostics,
    )
