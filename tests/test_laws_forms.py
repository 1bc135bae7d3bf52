"""Each law: analytic Jacobian against central differences, and recovery of known parameters."""

from __future__ import annotations

import numpy as np
import pytest

from everyscale.laws import custom_law, fit, get_law
from everyscale.laws.fit import Objective
from everyscale.laws.synthetic import sample_law

RNG = np.random.default_rng(0)
N = np.exp(RNG.uniform(np.log(1e7), np.log(1e10), 60))
D = N * np.exp(RNG.uniform(np.log(2), np.log(200), 60))

# (law, true parameters, inputs, a small start grid around plausible values)
CASES = {
    "chinchilla": (
        {"a": 6.18, "b": 7.64, "e": 0.6, "alpha": 0.35, "beta": 0.37},
        {"N": N, "D": D},
        {"a": [5.0, 10.0], "b": [5.0, 10.0], "e": [0.5], "alpha": [0.5], "beta": [0.5]},
    ),
    "compute": (
        {"a": 8.0, "e": 0.5, "alpha": 0.15},
        {"C": 6 * N * D},
        {"a": [5.0, 10.0], "e": [0.0, 1.0], "alpha": [0.1, 0.5]},
    ),
    "kaplan_n": ({"alpha_N": 0.076, "log_N_c": 32.1}, {"N": N}, None),
    "kaplan_d": ({"alpha_D": 0.095, "log_D_c": 31.6}, {"D": D}, None),
    "kaplan_c": ({"alpha_C": 0.05, "log_C_c": 64.5}, {"C": 6 * N * D}, None),
    # Kaplan et al. 2020 Table 2's fit of eq. 1.5.
    "kaplan_nd": (
        {"alpha_n": 0.076, "alpha_d": 0.103, "log_n_c": np.log(6.4e13), "log_d_c": np.log(1.8e13)},
        {"N": N, "D": D},
        None,
    ),
    "overtrain": (
        {"e": 0.6, "log_a": 7.0, "log_b": 6.0, "eta": -0.17},
        {"N": N, "M": D / N},
        {"e": [0.0, 0.5], "log_a": [5.0, 10.0], "log_b": [5.0, 10.0], "eta": [-0.2]},
    ),
    "data_constrained": (
        {"a": 6.18, "b": 7.64, "e": 0.6, "alpha": 0.35, "beta": 0.37,
         "log_rd_star": np.log(15.4), "log_rn_star": np.log(5.3)},
        {"N": N, "D": D, "U": D / np.exp(RNG.uniform(0, np.log(40), 60))},
        {"a": [6.0], "b": [7.0], "e": [0.5], "alpha": [0.3], "beta": [0.3],
         "log_rd_star": [2.0, 3.0], "log_rn_star": [1.0, 2.0]},
    ),
    "downstream_exp": (
        {"eps": 0.9, "k": 8.0, "gamma": 1.5},
        {"loss": np.linspace(2.0, 4.5, 60)},
        None,
    ),
    "downstream_sigmoid": (
        {"floor": 0.2, "k": 3.0, "L0": 3.0},
        {"loss": np.linspace(2.0, 4.5, 60)},
        None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", [n for n in CASES if get_law(n).name != "data_constrained"])
def test_analytic_jacobian_matches_central_differences(name):
    law = get_law(name)
    params, inputs, _ = CASES[name]
    theta = np.array([[params[p] for p in law.param_names]])
    theta = np.vstack([theta, theta * 1.01])  # two rows: the batch dimension is handled
    _, J = law.log_model(theta, inputs, True)
    assert J is not None, f"{name} should have an analytic Jacobian"
    numeric = Objective(law, inputs, np.ones(len(next(iter(inputs.values())))), "huber", 1e-3)
    J_num = numeric._numerical_jacobian(theta)
    np.testing.assert_allclose(J, J_num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(CASES))
def test_recovers_known_parameters_from_noisy_data(name):
    law = get_law(name)
    params, inputs, grid = CASES[name]
    # 0.5% log-normal noise on 60 points: a well-posed fit recovers each parameter to a few
    # percent of its value (checked against the true values, not against another fit).
    points = sample_law(law, params, inputs, noise=0.005, seed=1)
    result = fit(points, law, start_grid=grid)
    for p, true in params.items():
        tol = 0.05 * abs(true) + 0.02
        if name == "data_constrained" and p.startswith("log_r"):
            tol = 0.5  # the decay constants are weakly identified (Muennighoff et al. 2023)
        assert result.params[p] == pytest.approx(true, abs=tol), (p, result.params)
    truth = law.predict(np.array([[params[p] for p in law.param_names]]), inputs)[0]
    np.testing.assert_allclose(result.predict(**inputs), truth, rtol=0.01)


def test_custom_law_matches_the_builtin_compute_law():
    def power_with_floor(p, X):
        return p["E"] + p["A"] * X["C"] ** -p["alpha"]

    law = custom_law(
        "compute_custom",
        power_with_floor,
        ["E", "A", "alpha"],
        {"E": [1.0, 2.0], "A": [1e3, 1e5], "alpha": [0.1, 0.3]},
        inputs=["C"],
        bounds={"alpha": (0.0, None), "E": (0.0, None), "A": (0.0, None)},
    )
    params, inputs, grid = CASES["compute"]
    points = sample_law("compute", params, inputs, noise=0.005, seed=2)
    custom = fit(points, law)
    builtin = fit(points, "compute", start_grid=grid)
    assert custom.params["alpha"] == pytest.approx(builtin.params["alpha"], rel=1e-4)
    assert custom.params["E"] == pytest.approx(np.exp(builtin.params["e"]), rel=1e-4)
    assert custom.params["A"] == pytest.approx(np.exp(builtin.params["a"]), rel=1e-3)


def test_unknown_law_and_bad_grid_are_named():
    with pytest.raises(ValueError, match="unknown law 'chinchila'"):
        get_law("chinchila")
    with pytest.raises(ValueError, match="start_grid has no values for parameters \\['B'\\]"):
        custom_law("x", lambda p, X: p["A"] + 0 * X["N"], ["A", "B"], {"A": [1.0]}, inputs=["N"])
    with pytest.raises(ValueError, match="chance_error must be in"):
        get_law("downstream_sigmoid", chance_error=1.5)


def test_log_sum_exp_is_exact_and_stable_far_from_the_data():
    """The fast direct path and the max-shifted fallback (rows that over/underflow) agree with
    scipy.special.logsumexp and softmax."""
    from scipy.special import logsumexp, softmax

    from everyscale.laws.forms import _lse_with_softmax

    x = np.linspace(-3.0, 3.0, 7)
    t1 = np.array([[0.5], [800.0], [-900.0], [2.0]]) - 0.3 * x  # rows 1, 2 over/underflow
    t2 = np.array([[1.0], [790.0], [-905.0], [-2.0]]) + 0.1 * x
    e = np.array([[0.2], [0.0], [-899.0], [1.0]])  # a per-row constant, shape (S, 1)
    lse, weights = _lse_with_softmax([t1, t2, e], True)
    stacked = np.stack(np.broadcast_arrays(t1, t2, e), axis=-1)
    np.testing.assert_allclose(lse, logsumexp(stacked, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(np.stack(weights, -1), softmax(stacked, axis=-1), atol=1e-13)
