"""The AlgoPerf scorer against a hand-computed example (Dahl et al. 2023, Section 4.5)."""

import math

import numpy as np
import pytest

from everyscale.bench.scoring import (
    R_MAX,
    benchmark_score,
    benchmark_scores,
    performance_profile,
    performance_ratios,
    study_time,
    workload_time,
)

INF = math.inf

# Three optimizers on four workloads (seconds to target; inf = miss). By hand:
#   t_best = w1: 10 (A), w2: 20 (A and B tie), w3: 50 (B), w4: 30 (A, the only one to reach it)
#   r_A = 1, 1, inf, 1      B_A = (1 + 1 + 0 + 1) / 4                       = 3/4
#   r_B = 2, 1, 1, inf      B_B = ((4-2)/3 + 1 + 1 + 0) / 4 = (8/3) / 4     = 2/3
#   r_C = 5, 3, 2, inf      B_C = (0 + (4-3)/3 + (4-2)/3 + 0) / 4 = 1 / 4   = 1/4
TIMES = {
    "A": {"w1": 10.0, "w2": 20.0, "w3": INF, "w4": 30.0},
    "B": {"w1": 20.0, "w2": 20.0, "w3": 50.0, "w4": INF},
    "C": {"w1": 50.0, "w2": 60.0, "w3": 100.0, "w4": INF},
}


def test_ratios_by_hand_with_a_tie_and_misses():
    r = performance_ratios(TIMES)
    assert r["A"] == {"w1": 1.0, "w2": 1.0, "w3": INF, "w4": 1.0}
    assert r["B"] == {"w1": 2.0, "w2": 1.0, "w3": 1.0, "w4": INF}  # tie on w2: both 1
    assert r["C"] == {"w1": 5.0, "w2": 3.0, "w3": 2.0, "w4": INF}


def test_benchmark_score_by_hand():
    scores = benchmark_scores(performance_ratios(TIMES))
    assert scores["A"] == pytest.approx(3 / 4)
    assert scores["B"] == pytest.approx(2 / 3)
    assert scores["C"] == pytest.approx(1 / 4)
    assert R_MAX == 4.0


def test_profile_by_hand():
    r = performance_ratios(TIMES)
    taus = [1.0, 1.5, 2.0, 3.0, 4.0, 10.0]
    assert performance_profile(r["A"].values(), taus).tolist() == [0.75] * 6
    assert performance_profile(r["B"].values(), taus).tolist() == [0.5, 0.5, 0.75, 0.75, 0.75, 0.75]
    assert performance_profile(r["C"].values(), taus).tolist() == [0, 0, 0.25, 0.5, 0.5, 0.75]


def test_closed_form_equals_the_integral_of_the_profile():
    """B is (1/(r_max-1)) * integral_1^r_max rho(tau) dtau: compare with a fine Riemann sum."""
    rng = np.random.default_rng(0)
    ratios = np.concatenate([1 + rng.exponential(1.5, size=9), [1.0, INF, 4.0, 4.5]])
    taus = np.linspace(1, R_MAX, 300_001)
    rho = performance_profile(ratios, taus)
    integral = np.trapezoid(rho, taus) / (R_MAX - 1)
    assert benchmark_score(ratios) == pytest.approx(integral, abs=1e-4)


def test_no_optimizer_reaches_a_workload():
    r = performance_ratios({"A": {"w": INF}, "B": {"w": INF}})
    assert r == {"A": {"w": INF}, "B": {"w": INF}}
    assert benchmark_scores(r) == {"A": 0.0, "B": 0.0}


def test_study_and_workload_times():
    assert study_time([30.0, INF, 12.5]) == 12.5  # the fastest trial
    assert study_time([INF, INF]) == INF  # every trial missed
    assert workload_time([12.0, 8.0, INF]) == 12.0  # the median over studies
    assert workload_time([8.0, INF, INF]) == INF
    assert workload_time([8.0, 10.0]) == 9.0


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -1.0])
def test_bad_times_are_refused(bad):
    with pytest.raises(ValueError, match="positive number of seconds"):
        study_time([1.0, bad])
    with pytest.raises(ValueError, match="positive number of seconds"):
        performance_ratios({"A": {"w": bad}})


def test_mismatched_workloads_are_refused():
    with pytest.raises(ValueError, match="every workload"):
        performance_ratios({"A": {"w1": 1.0}, "B": {"w2": 1.0}})
