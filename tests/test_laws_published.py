"""For people who bring published fits: fixed and tied parameters, laws at given constants,
any target column, the objective each law is fitted with, and Gadre et al. 2024's numbers.

The Gadre et al. reproduction needs their released data, fetched with its licence by
`docs/data/fetch_published.py` (not committed); without it that test skips. The fetch script
itself is tested offline on a miniature clone built here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from everyscale.cli import main
from everyscale.laws import FitResult, chain, fit, get_law, load_points
from everyscale.laws.synthetic import HOFFMANN, chinchilla_params, chinchilla_points, sample_law

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EVERYSCALE_DATA", Path.home() / ".cache/everyscale/published"))
GRID = {"a": [5.0, 7.0], "b": [5.0, 8.0], "e": [0.5], "alpha": [0.3], "beta": [0.3]}


def test_tie_fits_two_parameters_as_one():
    truth = chinchilla_params(E=1.8, A=480.0, B=2000.0, alpha=0.35, beta=0.35)
    points = chinchilla_points(60, params=truth, noise=0.005, seed=3)
    tied = fit(points, start_grid=GRID, tie=["alpha=beta"], bootstrap=20)
    assert tied.params["alpha"] == tied.params["beta"]
    assert tied.params["alpha"] == pytest.approx(0.35, abs=0.02)
    assert tied.diagnostics["fitted_params"] == ["a", "b", "e", "alpha"]
    np.testing.assert_array_equal(tied.bootstrap_samples[:, 3], tied.bootstrap_samples[:, 4])
    free = fit(points, start_grid=GRID)
    assert tied.objective >= free.objective  # one constraint more cannot fit better
    assert "alpha = beta" in tied.summary()


def test_fixed_parameters_in_published_units_and_no_misleading_warnings():
    points = chinchilla_points(60, noise=0.005, seed=4)
    held = fit(points, start_grid=GRID, fixed={"E": 1.8172, "beta": 0.3658}, bootstrap=20)
    assert held.params["e"] == math.log(1.8172) and held.params["beta"] == 0.3658
    assert np.all(held.bootstrap_samples[:, 4] == 0.3658)
    assert held.diagnostics["on_bound"] == [] and not any(
        "bound" in w for w in held.diagnostics["warnings"]
    )
    # A fixed exponent at 0 (its bound) is where the user put it, not a warning either.
    at_bound = fit(points, start_grid=GRID, fixed={"beta": 0.0})
    assert not any("sit on a bound" in w for w in at_bound.diagnostics["warnings"])
    back = FitResult.from_json(held.to_json())
    assert back.constraints == held.constraints and back.predict(N=1e9, D=2e10) == held.predict(
        N=1e9, D=2e10
    )


def test_constraint_errors_name_the_parameter():
    points = chinchilla_points(20, seed=1)
    with pytest.raises(ValueError, match="has no parameter 'gamma'; its parameters are A, B, E"):
        fit(points, fixed={"gamma": 1.0})
    with pytest.raises(ValueError, match="ties a parameter to itself"):
        fit(points, tie=["alpha=alpha"])
    with pytest.raises(ValueError, match="nothing is left to fit"):
        fit(points, fixed={"E": 1.0, "A": 1.0, "B": 1.0, "alpha": 0.3, "beta": 0.3})
    with pytest.raises(ValueError, match="outside the law's bounds"):
        fit(points, fixed={"alpha": -0.5})


def test_muennighoff_two_stage_fit_with_the_base_fixed():
    """Muennighoff et al. 2023 fit R_D*, R_N* with the Chinchilla base held fixed."""
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e8), np.log(3e9), 80))
    D = N * np.exp(rng.uniform(np.log(10), np.log(400), 80))
    U = D / np.exp(rng.uniform(0, np.log(60), 80))
    base = chinchilla_params(E=1.87, A=521.0, B=1488.0, alpha=0.35, beta=0.353)
    truth = {**base, "log_rd_star": math.log(15.4), "log_rn_star": math.log(5.3)}
    points = sample_law("data_constrained", truth, {"N": N, "D": D, "U": U}, noise=0.002)
    law = get_law("data_constrained")
    assert len(law.start_grid["log_rd_star"]) >= 4 and len(law.start_grid["log_rn_star"]) >= 4
    result = fit(points, "data_constrained", fixed=base)
    assert result.diagnostics["fitted_params"] == ["log_rd_star", "log_rn_star"]
    assert result.derived["R_D_star"] == pytest.approx(15.4, rel=0.15)


def test_predict_a_law_at_published_constants(capsys):
    E, A, B, alpha, beta = (HOFFMANN[k] for k in ("E", "A", "B", "alpha", "beta"))
    expected = E + A / 7e10**alpha + B / 1.4e12**beta
    given = FitResult.from_params("chinchilla", HOFFMANN)
    assert given.predict(N=7e10, D=1.4e12) == pytest.approx(expected, rel=1e-12)
    params = ",".join(f"{k}={v}" for k, v in HOFFMANN.items())
    argv = ["predict", "--law", "chinchilla", "--params", params, "--N", "7e10", "--D", "1.4e12"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prediction"] == pytest.approx(expected, rel=1e-12)
    assert main(["predict", "--law", "chinchilla", "--params", "E=1.69,A=406.4", "--N", "1"]) == 2
    assert "missing B, alpha, beta" in capsys.readouterr().err
    assert main(["predict", "--law", "overtrain", "--params", "E=1,a=2,b=3,eta=-0.1,x=1",
                 "--N", "1e9", "--M", "20"]) == 2  # fmt: skip
    assert "--params: law 'overtrain' has no parameter 'x'" in capsys.readouterr().err


def test_target_column_need_not_be_named_loss(tmp_path, capsys):
    points = chinchilla_points(30, noise=0.005, seed=2)
    rows = [
        {"N": n, "D": d, "val_loss": v} for n, d, v in zip(points["N"], points["D"], points["loss"])
    ]
    result = fit(rows, start_grid=GRID, target="val_loss")
    assert result.get_law().target == "val_loss"
    assert result.params == fit(points, start_grid=GRID).params
    path = tmp_path / "runs.csv"
    path.write_text("N,D,val_loss\n" + "\n".join(f"{r['N']},{r['D']},{r['val_loss']}"
                                                  for r in rows))  # fmt: skip
    assert main(["fit", str(path), "--target", "val_loss", "--start-grid", json.dumps(GRID)]) == 0
    assert "target: `val_loss`" in capsys.readouterr().out
    assert main(["fit", str(path)]) == 2
    assert "needs column(s) ['loss']" in capsys.readouterr().err


def test_each_law_has_its_default_objective_with_a_source():
    for name in ("chinchilla", "data_constrained", "compute"):
        law = get_law(name)
        assert law.default_loss == "huber" and "Hoffmann et al. 2022" in law.default_loss_source
    for name in ("overtrain", "downstream_exp"):
        law = get_law(name)
        assert law.default_loss == "lsq" and "Gadre et al. 2024" in law.default_loss_source
    points = sample_law("downstream_exp", {"eps": 0.85, "k": 2.2, "gamma": 0.7},
                        {"loss": np.linspace(2.5, 5.0, 12)}, noise=0.01)  # fmt: skip
    default = fit(points, "downstream_exp")
    assert default.loss == "lsq" and "least squares on the error (the law's default: Gadre" in (
        default.summary()
    )
    chosen = fit(points, "downstream_exp", loss="huber")
    assert "log residuals of the error (chosen; the law's default is lsq)" in chosen.summary()


def test_predict_warns_far_outside_the_fitted_range():
    points = chinchilla_points(30, noise=0.005, seed=2, n_range=(1e7, 1e8))
    result = fit(points, start_grid=GRID)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result.predict(N=3e8, D=6e9)  # 3x beyond: what scaling laws are for
    with pytest.warns(UserWarning, match="N=1e\\+11 is far outside the fitted range"):
        result.predict(N=1e11, D=2e12)
    # Where extrapolating is the point (a ladder's held-out model), the caller silences it.
    from everyscale.laws.fit import planned_extrapolation

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with planned_extrapolation():
            assert result.predict(N=1e11, D=2e12) > 0


# ---------------------------------------------------------------------------------------------
# Published data: the fetch script (offline, on a miniature clone) and Gadre et al. 2024
# ---------------------------------------------------------------------------------------------


def _fetch_module():
    spec = importlib.util.spec_from_file_location(
        "fetch_published", ROOT / "docs/data/fetch_published.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_script_writes_the_data_with_its_licence(tmp_path):
    fetch = _fetch_module()
    clone = tmp_path / "clone"
    (clone / "exp_data/models").mkdir(parents=True)
    (clone / "exp_data/evals").mkdir(parents=True)
    (clone / "LICENSE.txt").write_text("MIT License (test copy)\n")
    for i, name in enumerate({*fetch.ERROR_RUNS, *fetch.TARGET_RUNS}):
        model = {"hyperparameters": {"params": 1e8 * (i + 1), "tokens": 2e9 * (i + 1),
                                     "chinchilla_multiplier": 1.0},
                 "results": [{"loss": 9.0, "val_data": ["x/openlm/shard.tar"]},
                             {"loss": 3.0 + i, "val_data": ["x/c4_val/shard.tar"]}]}  # fmt: skip
        (clone / f"exp_data/models/{name}.json").write_text(json.dumps(model))
        accuracy = {task: 0.5 for task in fetch.GADRE_17_TASKS} | {"mmlu": 0.0}
        (clone / f"exp_data/evals/evaluation_{name}_heavy.json").write_text(
            json.dumps({"eval_metrics": {"icl": accuracy}})
        )
    assert (
        fetch.main(["gadre2024", "--out", str(tmp_path / "out"), "--from-clone", str(clone)]) == 0
    )
    folder = tmp_path / "out/gadre2024"
    assert (folder / "LICENSE.txt").read_text() == "MIT License (test copy)\n"
    assert "licence" in (folder / "SOURCE.md").read_text()
    loss_runs = load_points(folder / "loss_runs.csv")
    assert len(loss_runs) == 5 and loss_runs.run_ids_given
    errors = load_points(folder / "error_runs.csv")
    np.testing.assert_allclose(errors["error"], 0.5)  # the 17-task average, not MMLU's 1.0
    assert sorted(errors["loss"]) == sorted(errors["loss"]) and errors["loss"].min() >= 3.0


@pytest.mark.skipif(
    not (DATA / "gadre2024/error_runs.csv").exists(),
    reason="Gadre et al. 2024's data not fetched: python docs/data/fetch_published.py gadre2024",
)
def test_gadre_2024_chained_numbers_reproduce():
    """Gadre et al. 2024's released runs: each law fitted as the paper does (least squares)."""
    folder = DATA / "gadre2024"
    loss_fit = fit(folder / "loss_runs.csv", "overtrain")
    error_fit = fit(folder / "error_runs.csv", "downstream_exp")
    assert error_fit.params["k"] == pytest.approx(2.20649, abs=1e-5)
    assert error_fit.params["gamma"] == pytest.approx(0.71459, abs=1e-5)
    assert error_fit.params["eps"] == pytest.approx(0.85699, abs=1e-5)
    targets = load_points(folder / "targets.csv")
    relative = []
    for i in range(len(targets)):
        out = chain(loss_fit, error_fit).predict(N=targets["N"][i], M=targets["M"][i])
        relative.append(abs(out.error - targets["error"][i]) / targets["error"][i])
    assert relative[0] == pytest.approx(0.036365, abs=2e-6)  # 1.4B, M = 640
    assert relative[1] == pytest.approx(0.000464, abs=2e-6)  # 6.9B, M = 20


def test_the_laws_package_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, everyscale.laws, everyscale.laws.cli, everyscale.laws.chain; "
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr


def test_cli_predict_prints_the_range_warning(tmp_path, capsys):
    points = chinchilla_points(30, noise=0.005, seed=2, n_range=(1e7, 1e8))
    path = tmp_path / "fit.json"
    fit(points, start_grid=GRID).to_json(path)
    assert main(["predict", "--fit", str(path), "--N", "1e11", "--D", "2e12"]) == 0
    captured = capsys.readouterr()
    assert "warning: N=1e+11 is far outside the fitted range" in captured.err
    assert captured.out.startswith("loss(N=1e+11, D=2e+12) = ")


def test_fetch_script_ruan_keeps_one_family_with_flops(tmp_path):
    fetch = _fetch_module()
    clone = tmp_path / "clone"
    (clone / "eval_results").mkdir(parents=True)
    (clone / "LICENSE").write_text("Apache License 2.0 (test copy)\n")
    (clone / "eval_results/base_llm_benchmark_eval.csv").write_text(
        "Model,Model Family,Model Size (B),Pretraining Data Size (T),FLOPs (1E21),MMLU\n"
        "Qwen/Qwen1.5-1.8B,Qwen1.5,1.8,2.4,25.92,0.467\n"
        "Qwen/Qwen1.5-0.5B,Qwen1.5,0.5,2.4,7.2,0.39\n"
        "Qwen/Qwen1.5-110B,Qwen1.5,110.0,,,0.80\n"
        "facebook/opt-1.3b,OPT,1.3,0.18,1.404,0.25\n"
    )
    assert fetch.main(["ruan2024", "--out", str(tmp_path / "out"), "--from-clone", str(clone)]) == 0
    folder = tmp_path / "out/ruan2024"
    assert (folder / "LICENSE").read_text().startswith("Apache License")
    points = load_points(folder / "qwen15_mmlu.csv")
    np.testing.assert_allclose(points["C"], [7.2e21, 2.592e22])  # sorted, no FLOPs: dropped
    np.testing.assert_allclose(points["error"], [0.61, 0.533])


@pytest.mark.skipif(
    not (DATA / "ruan2024/qwen15_mmlu.csv").exists(),
    reason="Ruan et al. 2024's data not fetched: python docs/data/fetch_published.py ruan2024",
)
def test_ruan_2024_compute_sigmoid_predicts_the_larger_qwen_models():
    points = load_points(DATA / "ruan2024/qwen15_mmlu.csv")
    small = points.subset(np.arange(5))  # 0.5B .. 14B
    result = fit(small, "compute_sigmoid", law_options={"chance_error": 0.75})
    for i in (5, 6):  # 32B, 72B
        predicted = result.predict(C=points["C"][i])
        assert abs(predicted - points["error"][i]) / points["error"][i] < 0.015


def test_fit_optimizer_keyword_is_a_deprecated_alias_of_solver():
    points = chinchilla_points(20, noise=0.005, seed=1)
    with pytest.warns(FutureWarning, match="use fit\\(solver=\\)"):
        old = fit(points, start_grid=GRID, optimizer="lbfgsb")
    assert (
        old.diagnostics["optimizer"]
        == fit(points, start_grid=GRID, solver="lbfgsb").diagnostics["optimizer"]
    )
