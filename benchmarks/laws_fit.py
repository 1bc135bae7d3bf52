"""Benchmark: the full Chinchilla start-grid fit and the 4000-resample bootstrap.

Data: 240 synthetic points drawn from Besiroglu et al. 2024's Chinchilla fit with 1% log-normal
noise (`everyscale.laws.synthetic.chinchilla_points`).

Peer (measured in the same run): a straightforward loop of
`scipy.optimize.minimize(objective, x0, method="L-BFGS-B")` with numerical gradients over the
same 4,500 starts (Hoffmann et al. 2022 / Besiroglu et al. 2024's grid). Running all 4,500
would take about an hour on a loaded 2-core machine, so the peer runs a seeded random sample of
`--naive-starts` starts and its time is extrapolated per start to the full grid (printed as
such). Two peer settings are timed:

- `default`: scipy's default tolerances, the straightforward loop; `grid_fit_vs_naive` uses it.
  From a single start it can stop early on an objective of size ~1e-3, so the best objective
  and parameters it reached over the sample are printed next to ours.
- `tight`: ftol=1e-15, gtol=1e-12, the same stopping rule as our polish (slower per start);
  printed as `grid_fit_vs_naive_tight_tolerances`.

Both run with BLAS limited to one thread (threadpoolctl), as `fit()` does for itself.

    .venv/bin/python benchmarks/laws_fit.py [--naive-starts 40] [--skip-bootstrap]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize

from everyscale.laws import bootstrap, fit
from everyscale.laws.forms import chinchilla
from everyscale.laws.synthetic import chinchilla_points


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--naive-starts", type=int, default=40)
    parser.add_argument("--skip-bootstrap", action="store_true")
    args = parser.parse_args()

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

    sample = np.random.default_rng(0).choice(len(grid), size=args.naive_starts, replace=False)
    starts = grid[sample]
    # A seeded random sample of the same grid; the peer's best over it is compared with ours.
    ratios, cpu_ratios = {}, {}
    for name, options in (
        ("default", {}),
        ("tight", {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 15000, "maxfun": 60000}),
    ):
        timer, x, f = run_naive(objective, starts, options)
        scale = len(grid) / len(starts)  # extrapolate the sample to the full grid
        ratios[name] = ours_time.wall / (timer.wall * scale)
        cpu_ratios[name] = ours_time.cpu / (timer.cpu * scale)
        print(
            f"naive_{name}: {len(starts)} random starts in {timer.wall:.2f} s "
            f"({timer.wall / len(starts):.3f} s/start, cpu {timer.cpu:.2f} s) -> "
            f"{len(grid)} starts extrapolated {timer.wall * scale:.1f} s"
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
