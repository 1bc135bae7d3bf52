"""Chaining a loss law to a downstream error law (Gadre et al. 2024's two steps).

Synthetic data from laws with known parameters: the chain must recover the parameters and
their composition, and its bootstrap interval must cover the true error at its nominal rate.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from everyscale.cli import main
from everyscale.laws import FitResult, chain, fit, load_points
from everyscale.laws.forms import get_law
from everyscale.laws.synthetic import sample_law

LOSS_TRUE = {"a": 4.0, "e": 0.5, "alpha": 0.08}  # compute law: L = e^0.5 + e^4 C^-0.08
ERROR_TRUE = {"eps": 0.85, "k": 2.2, "gamma": 0.7}  # Gadre et al. 2024's fitted values, rounded
LOSS_GRID = {"a": [3.0, 5.0], "e": [0.3, 0.7], "alpha": [0.05, 0.1]}
ERROR_GRID = {"eps": [0.8, 0.9], "k": [1.0, 3.0], "gamma": [0.5, 1.0]}
TARGET_C = 3e20  # a size inside the data's compute range (1e17 .. 1e21), not fitted on


def true_loss(C):
    return math.exp(LOSS_TRUE["e"]) + math.exp(LOSS_TRUE["a"]) * C ** -LOSS_TRUE["alpha"]


def true_error(loss):
    return ERROR_TRUE["eps"] - ERROR_TRUE["k"] * math.exp(-ERROR_TRUE["gamma"] * loss)


def synthetic_pair(seed: int, n_runs: int = 30, noise: float = 0.01):
    """A loss data set and an error data set on the same runs (shared run ids)."""
    rng = np.random.default_rng(seed)
    C = np.exp(rng.uniform(np.log(1e17), np.log(1e21), n_runs))
    runs = np.array([f"run{i}" for i in range(n_runs)])
    loss_points = sample_law("compute", LOSS_TRUE, {"C": C}, noise=noise, seed=seed, run=runs)
    # The error law sees each run's measured loss, as Gadre et al. fit it.
    error_points = sample_law("downstream_exp", ERROR_TRUE, {"loss": loss_points["loss"]},
                              noise=noise, seed=seed + 7919, run=runs)  # fmt: skip
    return loss_points, error_points


def fit_pair(seed: int, bootstrap: int = 0, seeds=(0, 0), loss=None):
    loss_points, error_points = synthetic_pair(seed)
    loss_fit = fit(loss_points, "compute", start_grid=LOSS_GRID, bootstrap=bootstrap,
                   seed=seeds[0], loss=loss)  # fmt: skip
    error_fit = fit(error_points, "downstream_exp", start_grid=ERROR_GRID, bootstrap=bootstrap,
                    seed=seeds[1])  # fmt: skip
    return loss_fit, error_fit


def test_chain_recovers_the_laws_and_their_composition():
    loss_fit, error_fit = fit_pair(seed=1)
    for name, value in LOSS_TRUE.items():
        assert loss_fit.params[name] == pytest.approx(value, rel=0.15), name
    for name, value in ERROR_TRUE.items():
        assert error_fit.params[name] == pytest.approx(value, rel=0.15), name
    assert error_fit.loss == "lsq" and loss_fit.loss == "huber"  # each law's own default
    out = chain(loss_fit, error_fit).predict(C=TARGET_C)
    # The composition: the error law evaluated at the loss law's prediction.
    assert out.loss == loss_fit.predict(C=TARGET_C)
    assert out.error == error_fit.predict(loss=out.loss)
    assert out.error == pytest.approx(true_error(true_loss(TARGET_C)), rel=0.02)
    assert out.pairing == "none" and out.error_interval is None


def _covered(seed: int, n_resamples: int = 100) -> tuple[bool, bool]:
    """Whether the chained 95% interval covers the true error; and whether an interval
    carrying the loss law's uncertainty only (the error law at its point fit) would."""
    # Least squares for both laws here: the same coverage, and fast resample refits.
    loss_fit, error_fit = fit_pair(seed, bootstrap=n_resamples, loss="lsq")
    truth = true_error(true_loss(TARGET_C))
    out = chain(loss_fit, error_fit).predict(C=TARGET_C)
    assert out.pairing == "joint" and out.n_resamples == n_resamples
    lo, hi = out.error_interval
    error_fit.bootstrap_samples = None
    loss_only = chain(loss_fit, error_fit).predict(C=TARGET_C)
    assert loss_only.pairing == "first only"
    lo_1, hi_1 = loss_only.error_interval
    return lo <= truth <= hi, lo_1 <= truth <= hi_1


def test_chained_interval_covers_the_truth_20_draws():
    """20 synthetic pairs, 95% intervals: at least 18 cover the true chained error.

    Seeded, so the count is fixed. The same intervals without the error law's uncertainty
    cover clearly fewer, so the check can fail; `-m slow` runs it on 200 draws.
    """
    hits = np.array([_covered(seed) for seed in range(100, 120)])
    assert hits[:, 0].sum() >= 18, hits[:, 0]
    assert hits[:, 1].sum() < hits[:, 0].sum() - 2, hits[:, 1]


@pytest.mark.slow
def test_chained_interval_covers_the_truth_200_draws():
    hits = np.array([_covered(seed, n_resamples=200) for seed in range(1000, 1200)])
    assert hits[:, 0].mean() >= 0.90, hits[:, 0].mean()


def test_pairing_joint_paired_and_why():
    loss_fit, error_fit = fit_pair(seed=3, bootstrap=20)
    assert chain(loss_fit, error_fit).pairing()[0] == "joint"
    other_seed = fit_pair(seed=3, bootstrap=20, seeds=(0, 1))
    kind, notes = chain(*other_seed).pairing()
    assert kind == "paired" and "one --seed" in notes[0]
    error_fit.data["run_ids"] = ["elsewhere"]
    kind, notes = chain(loss_fit, error_fit).pairing()
    assert kind == "paired" and "share no run ids" in notes[0]


def test_joint_resamples_draw_each_shared_run_alike():
    from everyscale.laws.bootstrap import run_keyed_weights

    a = run_keyed_weights(np.array(["x", "y", "z"]), 50, seed=4)
    b = run_keyed_weights(np.array(["q", "y", "y", "x"]), 80, seed=4)
    np.testing.assert_array_equal(a[:, 0], b[:50, 3])  # run x
    np.testing.assert_array_equal(a[:, 1], b[:50, 1])  # run y, both of its points
    np.testing.assert_array_equal(b[:, 1], b[:, 2])
    assert abs(a.mean() - 1.0) < 0.2  # Poisson(1) counts


def test_chain_refuses_laws_that_do_not_compose():
    loss_fit, error_fit = fit_pair(seed=1)
    with pytest.raises(ValueError, match="takes C, not the loss"):
        chain(loss_fit, loss_fit)
    with pytest.raises(ValueError, match="both fits predict error"):
        chain(error_fit, error_fit)


def test_sigmoid_error_law_chains_the_same_way():
    loss_points, _ = synthetic_pair(seed=5)
    truth = {"floor": 0.25, "k": 4.0, "L0": 2.4}
    sigmoid = get_law("downstream_sigmoid", chance_error=0.75)
    errors = sample_law(sigmoid, truth, {"loss": loss_points["loss"]}, noise=0.005, seed=2)
    loss_fit = fit(loss_points, "compute", start_grid=LOSS_GRID)
    error_fit = fit(errors, sigmoid)
    assert error_fit.law_options == {"chance_error": 0.75} and error_fit.loss == "lsq"
    out = chain(loss_fit, error_fit).predict(C=TARGET_C)
    expected = 0.25 + 0.5 / (1 + math.exp(-4.0 * (true_loss(TARGET_C) - 2.4)))
    assert out.error == pytest.approx(expected, abs=0.01)


# ---------------------------------------------------------------------------------------------
# The command line: predict --fit loss.json --then err.json
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fit_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chain")
    loss_fit, error_fit = fit_pair(seed=2, bootstrap=40)
    loss_fit.to_json(folder / "loss.json")
    error_fit.to_json(folder / "err.json")
    return folder / "loss.json", folder / "err.json"


def test_cli_predict_then_gives_loss_error_and_interval(fit_files, capsys):
    loss_json, err_json = fit_files
    argv = ["predict", "--fit", str(loss_json), "--then", str(err_json), "--C", str(TARGET_C)]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairing"] == "joint" and out["law"] == "compute" and out["then"] == "downstream_exp"
    loss_fit, error_fit = FitResult.from_json(loss_json), FitResult.from_json(err_json)
    assert out["loss"] == loss_fit.predict(C=TARGET_C)
    assert out["prediction"] == error_fit.predict(loss=out["loss"])
    lo, hi = out["interval"]
    assert lo < out["prediction"] < hi
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("loss(C=3e+20) = ") and "error(loss=" in text and "joint" in text


def test_non_finite_prediction_is_an_error_with_the_reason(fit_files, capsys):
    _, err_json = fit_files
    assert main(["predict", "--fit", str(err_json), "--loss", "0.5", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no "prediction": NaN printed
    assert "outside the law's domain" in captured.err and captured.err.count("\n") == 1
    # Through the chain: the loss law's prediction is outside the error law's domain.
    with pytest.raises(ValueError, match="which the downstream_exp law cannot take"):
        chain(FitResult.from_params("compute", {"A": 1.0, "E": 0.5, "alpha": 0.1}),
              FitResult.from_json(err_json)).predict(C=1e20)  # fmt: skip


def test_inputs_a_law_does_not_use_are_refused(fit_files, capsys):
    loss_json, err_json = fit_files
    assert main(["predict", "--fit", str(err_json), "--loss", "3", "--N", "1e9"]) == 2
    assert "['N'] are not used by it" in capsys.readouterr().err
    assert main(["predict", "--fit", str(loss_json), "--C", "1e20", "--M", "20"]) == 2
    assert "['M'] are not used" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"\['C'\] are not used"):
        FitResult.from_params(
            "chinchilla", {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
        ).predict(N=1e9, D=2e10, C=1.2e20)


def test_downstream_report_has_no_embedding_or_flops_notes():
    _, errors = synthetic_pair(seed=1)
    text = fit(load_points([{**r, "N": 1e8, "D": 1e9} for r in _records(errors)]),
               "downstream_exp", start_grid=ERROR_GRID).summary()  # fmt: skip
    assert "least squares on the error" in text and "Gadre et al. 2024 fit by least" in text
    assert "embedding" not in text and "FLOPs" not in text and "6 N D" not in text


def _records(points):
    return [
        {**{k: float(v[i]) for k, v in points.columns.items()}, "run": points.run[i]}
        for i in range(len(points))
    ]
