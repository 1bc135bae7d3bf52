"""Time-to-target scores, as AlgoPerf computes them (Dahl et al. 2023, Section 4.5).

Pure functions of measured times (seconds to reach a workload's validation target; a miss is
``math.inf``). Notation: optimizers ``o``, workloads ``w``, times ``t[o][w]``.

- A **study**'s time is its fastest trial, ``min_i t_i`` (a study where no trial reached the
  target is a miss, ``inf``).
- An optimizer's **workload score** is the median of its studies' times (NumPy's median: the
  mean of the two middle values for an even count, so ``median(1, inf) = inf``).
- The **performance ratio** ``r[o][w] = t[o][w] / t_best[w]`` with ``t_best[w] = min_o
  t[o][w]``: 1 for the fastest optimizer (for each of several tied ones), ``inf`` for a miss.
  When no optimizer reached the target, every ratio on that workload is ``inf``.
- The **performance profile** ``rho_o(tau) = |{w : r[o][w] <= tau}| / |W|``, the share of
  workloads that ``o`` solves within a factor ``tau`` of the best.
- The **benchmark score** ``B_o = 1/(r_max - 1) * integral_1^r_max rho_o(tau) dtau`` with
  ``r_max = 4``. As ``rho_o`` is a step function, the integral is exact in closed form:
  each workload adds ``(r_max - max(r, 1)) / (r_max - 1)`` when ``r <= r_max`` and nothing
  otherwise, so ``B_o = mean_w clip((r_max - r[o][w]) / (r_max - 1), 0, 1)``: 1 for an optimizer
  that is fastest everywhere, 0 for one that is never within ``r_max`` of the best.

Reference: G. E. Dahl, F. Schneider, Z. Nado, et al., *Benchmarking Neural Network Training
Algorithms*, arXiv 2306.07179 (2023), Section 4.5 (performance profiles after Dolan & More 2002).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "R_MAX",
    "benchmark_score",
    "benchmark_scores",
    "performance_profile",
    "performance_ratios",
    "study_time",
    "workload_time",
]

#: the largest ratio that still counts in the benchmark score (AlgoPerf's choice)
R_MAX = 4.0


def _check_time(value: float, what: str) -> float:
    value = float(value)
    if math.isnan(value) or value <= 0:
        raise ValueError(
            f"{what} must be a positive number of seconds or inf (a miss), got {value!r}"
        )
    return value


def study_time(trial_times: Iterable[float]) -> float:
    """The time of one study: its fastest trial; ``inf`` when none reached the target."""
    times = [_check_time(t, "a trial's time") for t in trial_times]
    return min(times, default=math.inf)


def workload_time(study_times: Sequence[float]) -> float:
    """An optimizer's score on a workload: the median of its studies' times."""
    if len(study_times) == 0:
        raise ValueError("workload_time needs at least one study time")
    times = np.array([_check_time(t, "a study's time") for t in study_times])
    with np.errstate(invalid="ignore"):  # (inf + inf) / 2 is inf, no warning needed
        return float(np.median(times))


def performance_ratios(
    times: Mapping[str, Mapping[str, float]],
) -> dict[str, dict[str, float]]:
    """``r[o][w] = t[o][w] / min_o' t[o'][w]`` for every optimizer ``o`` and workload ``w``.

    ``times`` maps each optimizer to ``{workload: seconds}``; every optimizer must have a time
    (or ``inf``) on the same workloads.
    """
    if not times:
        raise ValueError("performance_ratios needs the times of at least one optimizer")
    workloads = set(next(iter(times.values())))
    for name, row in times.items():
        if set(row) != workloads:
            raise ValueError(
                f"optimizer {name!r} has times on {sorted(row)} but the others on "
                f"{sorted(workloads)}: every optimizer needs a time (or inf) on every workload"
            )
    best = {
        w: min(_check_time(row[w], f"time of {o!r} on {w!r}") for o, row in times.items())
        for w in workloads
    }
    return {
        o: {w: (row[w] / best[w] if math.isfinite(best[w]) else math.inf) for w in row}
        for o, row in times.items()
    }


def performance_profile(ratios: Iterable[float], taus: Sequence[float]) -> np.ndarray:
    """``rho(tau)`` for each ``tau``: the share of workloads whose ratio is at most ``tau``."""
    r = np.array(list(ratios), dtype=float)
    if r.size == 0:
        raise ValueError("performance_profile needs the ratios of at least one workload")
    if np.isnan(r).any() or (r < 1).any():
        raise ValueError(f"performance ratios are >= 1 (or inf), got {r.tolist()}")
    tau = np.asarray(taus, dtype=float)
    return (r[None, :] <= tau[:, None]).mean(axis=1)


def benchmark_score(ratios: Iterable[float], r_max: float = R_MAX) -> float:
    """``B = 1/(r_max - 1) * integral_1^r_max rho(tau) dtau``, exactly (module docstring)."""
    if not (math.isfinite(r_max) and r_max > 1):
        raise ValueError(f"r_max must be a finite number > 1, got {r_max!r}")
    r = np.array(list(ratios), dtype=float)
    if r.size == 0:
        raise ValueError("benchmark_score needs the ratios of at least one workload")
    if np.isnan(r).any() or (r < 1).any():
        raise ValueError(f"performance ratios are >= 1 (or inf), got {r.tolist()}")
    with np.errstate(invalid="ignore"):
        share = np.clip((r_max - r) / (r_max - 1), 0.0, 1.0)
    return float(np.nan_to_num(share, nan=0.0).mean())


def benchmark_scores(
    ratios: Mapping[str, Mapping[str, float]], r_max: float = R_MAX
) -> dict[str, float]:
    """``B`` of every optimizer from :func:`performance_ratios`' output."""
    return {o: benchmark_score(row.values(), r_max) for o, row in ratios.items()}
