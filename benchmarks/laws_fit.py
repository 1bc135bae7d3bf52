"""Benchmark: the full Chinchilla start-grid fit and the 4000-resample bootstrap.

Data: 240 synthetic points drawn from Besiroglu et al. 2024's Chinchilla fit with 1% log-normal
noise (`everyscale.laws.synthetic.chinchilla_points`).

Peer (measured in the same run): a straightforward loop of
`scipy.optimize.minimize(objective, x0, method="L-BFGS-B")` with numerical gradients over the
same 4,500 starts (Hoffmann et al. 2022 / Besiroglu et al. 2024's grid). Two peer settings:

- `default`: scipy's default tolerances, the straightforward loop, run over all 4,500 starts
  (`--naive-starts` fewer: a seeded random sample, time extrapolated per start and printed as
  such); `grid_fit_vs_naive` uses it. From a single start it can stop early on an objective of
  size ~1e-3, so the best objective and parameters it reached are printed next to ours.
- `tight`: ftol=1e-15, gtol=1e-12, the same stopping rule as our polish (about 2x slower per
  start), on a sample of `--tight-starts`, extrapolated; `grid_fit_vs_naive_tight_tolerances`.

Both run with BLAS limited to one thread (threadpoolctl), as `fit()` does for itself.

    .venv/bin/python benchmarks/laws_fit.py [--naive-starts 4500] [--tight-starts 100]
    .venv/bin/python benchmarks/laws_fit.py --coverage 60    # bootstrap interval coverage
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize

from everyscale.laws import bootstrap, fit
from everyscale.laws.forms import chinchilla
from everyscale.laws.synthetic import BESIROGLU, chinchilla_params, chinchilla_points


def naive_objective(points, delta: float = 1e-3):
    """The summed Huber loss on log residuals, one parameter vector at a time (plain numpy)."""
    log_n, log_d, log_l = np.log(points["N"]), np.log(points["D"]), np.log(points["loss"])

    def objective(x):
        a, b, e, alpha, beta = x
        log_pred = np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e)
        r = np.abs(log_pred - log_l)
        return float(np.sum(np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta))))

    return objective


class Timer:
    """Wall-clock and process CPU seconds of a block (CPU time is less sensitive to other
    processes sharing the machine; both are printed)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run_naive(objective, starts: np.ndarray, options: dict) -> tuple[Timer, np.ndarray, float]:
    """Loop L-BFGS-B (numerical gradients) over the starts; (timer, best x, best objective)."""
    bounds = [(None, None), (None, None), (None, None), (0.0, None), (0.0, None)]
    best_x, best_f = None, np.inf
    with Timer() as timer:
        for x0 in starts:
            res = minimize(objective, x0, method="L-BFGS-B", bounds=bounds, options=options)
            if res.fun < best_f:
                best_x, best_f = res.x, res.fun
    return timer, best_x, best_f


def coverage(n_datasets: int) -> None:
    """Share of percentile intervals that contain the truth, over synthetic data sets
    (60 points, 2% noise, 200 resamples) for alpha, beta and a loss predicted 7x beyond the
    data; nominal 80% and 95%."""
    law = chinchilla()
    true = chinchilla_params(**BESIROGLU)
    theta = np.array([[true[p] for p in law.param_names]])
    far = {"N": np.array([7e10]), "D": np.array([1.4e12])}
    true_far = law.predict(theta, far)[0, 0]
    grid = {"a": [6.0], "b": [7.5], "e": [0.6], "alpha": [0.35], "beta": [0.35]}
    for level in (0.8, 0.95):
        hits = []
        for seed in range(n_datasets):
            points = chinchilla_points(60, noise=0.02, seed=1000 + seed)
            base = fit(points, start_grid=grid)
            result = bootstrap(points, base, 200, seed=seed, level=level, n_check=0)
            lo, hi = result.interval(N=7e10, D=1.4e12)
            hits.append(
                [result.ci[p][0] <= true[p] <= result.ci[p][1] for p in ("alpha", "beta")]
                + [lo <= true_far <= hi]
            )
        share = np.mean(hits, axis=0)
        print(
            f"coverage_{level:.2f}: {np.mean(hits):.3f} over {n_datasets} data sets "
            f"(alpha {share[0]:.3f}, beta {share[1]:.3f}, far prediction {share[2]:.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--naive-starts", type=int, default=4500)
    parser.add_argument("--tight-starts", type=int, default=100)
    parser.add_argument("--skip-bootstrap", action="store_true")
    parser.add_argument(
        "--coverage", type=int, default=0, metavar="K", help="only measure interval coverage"
    )
    args = parser.parse_args()
    if args.coverage:
        coverage(args.coverage)
        return

    points = chinchilla_points(240, noise=0.01, seed=0)
    grid = chinchilla().grid()
    objective = naive_objective(points)

    with Timer() as ours_time:
        ours = fit(points)
    d = ours.diagnostics
    print(f"grid_fit_seconds: {ours_time.wall:.2f}")
    print(f"  cpu seconds {ours_time.cpu:.2f}")
    print(
        f"  starts {d['n_starts']}, reached the best within rtol {d['rtol']}: "
        f"{d['n_starts_at_best']}, objective {ours.objective!r}, "
        f"relative projected gradient {d['grad_norm_relative']:.2e}"
    )
    print(f"  params {ours.params}")

    ratios, cpu_ratios = {}, {}
    for name, n_starts, options in (
        ("default", args.naive_starts, {}),
        ("tight", args.tight_starts, {"ftol": 1e-15, "gtol": 1e-12, "maxfun": 60000}),
    ):
        # The full grid, or a seeded random sample of it whose time is extrapolated.
        n_starts = min(n_starts, len(grid))
        sample = np.random.default_rng(0).choice(len(grid), size=n_starts, replace=False)
        starts = grid[np.sort(sample)]
        timer, x, f = run_naive(objective, starts, options)
        scale = len(grid) / len(starts)  # extrapolate the sample to the full grid
        ratios[name] = ours_time.wall / (timer.wall * scale)
        cpu_ratios[name] = ours_time.cpu / (timer.cpu * scale)
        what = "all" if len(starts) == len(grid) else f"{len(starts)} random"
        extrapolated = "" if scale == 1 else f" -> {len(grid)} starts: {timer.wall * scale:.1f} s"
        print(
            f"naive_{name}: {what} starts in {timer.wall:.2f} s "
            f"({timer.wall / len(starts):.4f} s/start, cpu {timer.cpu:.2f} s){extrapolated}"
        )
        print(
            f"  best objective {f!r} (ours {ours.objective!r}, relative gap "
            f"{(f - ours.objective) / ours.objective:.2e}); "
            f"max |param diff| {np.max(np.abs(x - ours.theta)):.2e}"
        )
    print(f"grid_fit_vs_naive: {ratios['default']:.4f}")
    print(f"  same ratio in cpu seconds: {cpu_ratios['default']:.4f}")
    print(f"grid_fit_vs_naive_tight_tolerances: {ratios['tight']:.4f}")
    print(f"  same ratio in cpu seconds: {cpu_ratios['tight']:.4f}")

    if not args.skip_bootstrap:
        with Timer() as boot_time:
            boot = bootstrap(points, ours, 4000, seed=0)
        info = boot.bootstrap_info
        print(f"bootstrap4000_seconds: {boot_time.wall:.2f}")
        print(f"  cpu seconds {boot_time.cpu:.2f}")
        print(
            f"  failed {info['n_failed']}, finished by L-BFGS-B {info['n_finished_by_lbfgsb']}, "
            f"largest deviation of {info['n_checked_by_lbfgsb']} L-BFGS-B checks "
            f"{info['max_check_deviation_in_sd']:.2e} bootstrap sd"
        )
        print(f"  95% intervals: alpha {boot.ci['alpha']}, beta {boot.ci['beta']}")


if __name__ == "__main__":
    # Both sides run with single-threaded BLAS (our fit() sets this itself): on a shared machine
    # a multi-threaded OpenBLAS slows scipy's L-BFGS-B ~18x, which would flatter the ratio.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        main()
