"""Tests of the scaling ladder: planner, naive predictors, reporting, bad input, and a tiny
ladder trained end to end with the real engine and the real fitter."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from everyscale.ladder import LadderError, make_plan
from everyscale.ladder.cli import parse_lr_grid
from everyscale.ladder.ladder import choose_lr, compare
from everyscale.ladder.naive import (
    best_in_ladder,
    loglog_compute,
    loglog_fit,
    naive_predictions,
    relative_error,
)
from everyscale.ladder.plan import (
    LadderPlan,
    format_tokens,
    parse_int_list,
    parse_target,
    parse_tokens,
)
from everyscale.ladder.report import render_markdown


def hand_count(plan: LadderPlan, width: int) -> int:
    """A GPT block's hand count without embeddings: 12 d^2 per layer, plus a 256-way head."""
    return 12 * plan.depth * width**2 + 256 * width


# ----------------------------------------------------------------------------- planner


def test_parse_tokens_and_format_round_trip():
    assert parse_tokens("1M") == 2**20
    assert parse_tokens("512k") == 512 * 1024
    assert parse_tokens("2e6") == 2_000_000
    assert parse_tokens("4096") == 4096
    for t in (2**20, 3 * 2**19, 4096, 1500):
        assert parse_tokens(format_tokens(t)) == t
    for bad in ("", "abc", "1Q", "-5", "0"):
        with pytest.raises(ValueError, match="--tokens"):
            parse_tokens(bad)


def test_parse_lists_and_target():
    assert parse_int_list("32, 48,64", name="--widths") == (32, 48, 64)
    with pytest.raises(ValueError, match="--widths"):
        parse_int_list("32,abc", name="--widths")
    assert parse_target("128") == (128, None)
    assert parse_target("128x4M") == (128, 4 * 2**20)
    with pytest.raises(ValueError, match="--target"):
        parse_target("big")
    assert parse_lr_grid("2^-4:2^-2") == (2**-4, 2**-3, 2**-2)
    assert parse_lr_grid("0.01,2^-3") == (0.01, 0.125)
    with pytest.raises(ValueError, match="--lr-grid"):
        parse_lr_grid("2^-2:2^-4")
    with pytest.raises(ValueError, match="--lr-grid"):
        parse_lr_grid("-1")


@pytest.mark.parametrize("budget", ["tiny", "small", "medium", "large"])
def test_every_budget_plans_an_identifiable_ladder_and_a_real_extrapolation(budget):
    plan = make_plan(budget, count_params=hand_count)
    ladder = plan.ladder_runs(lr=0.01)
    assert len(ladder) == len(plan.widths) * len(plan.tokens) >= 6
    assert len({r.name for r in ladder}) == len(ladder)
    assert len(set(plan.widths)) >= 3 and len(set(plan.tokens)) >= 2
    # The sweep runs on the smallest model with the smallest budget, one run per lr.
    sweep = plan.sweep_runs()
    assert [r.lr for r in sweep] == list(plan.lr_grid)
    assert {(r.width, r.tokens) for r in sweep} == {(min(plan.widths), min(plan.tokens))}
    # The held-out model is at least 4x the largest ladder model in parameters or tokens.
    target = plan.target_run()
    n_ratio = hand_count(plan, target.width) / hand_count(plan, max(plan.widths))
    d_ratio = target.tokens / max(plan.tokens)
    assert max(n_ratio, d_ratio) >= 4 and min(n_ratio, d_ratio) >= 1
    # Every run has enough steps to anneal, and the plan survives a JSON round trip.
    assert all(plan.steps_for(r.tokens) >= 8 for r in [*ladder, target])
    assert LadderPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_planner_refuses_ladders_that_cannot_identify_the_law():
    with pytest.raises(ValueError, match=r"--widths.*3 distinct"):
        make_plan("small", widths=(32, 64), count_params=hand_count)
    with pytest.raises(ValueError, match=r"--widths.*3 distinct"):
        make_plan("small", widths=(32, 32, 64), count_params=hand_count)
    with pytest.raises(ValueError, match=r"--tokens.*2 distinct"):
        make_plan("small", tokens=(2**20,), count_params=hand_count)
    with pytest.raises(ValueError, match=r"--tokens.*fewer than"):
        make_plan("small", tokens=(1024, 2**20), count_params=hand_count)
    with pytest.raises(ValueError, match="--budget"):
        make_plan("huge", count_params=hand_count)
    with pytest.raises(ValueError, match="attention heads"):
        make_plan("small", widths=(32, 50, 64), count_params=hand_count)


def test_planner_refuses_a_target_that_does_not_extrapolate():
    # Smaller than the largest ladder model.
    with pytest.raises(ValueError, match=r"--target.*smaller than the largest"):
        make_plan("small", target_width=48, count_params=hand_count)
    with pytest.raises(ValueError, match=r"--target.*smaller than the largest"):
        make_plan("small", target_width=128, target_tokens=2**19, count_params=hand_count)
    # Larger, but not 4x in either parameters or tokens.
    with pytest.raises(ValueError, match=r"--target.*at least 4x"):
        make_plan("small", target_width=128, count_params=hand_count)  # 3.7x with the head
    # The default target is the narrowest multiple of 16 with >= 4x the parameters.
    plan = make_plan("small", count_params=hand_count)
    ratio = hand_count(plan, plan.target_width) / hand_count(plan, 64)
    smaller = hand_count(plan, plan.target_width - 16) / hand_count(plan, 64)
    assert plan.target_width % 16 == 0 and ratio >= 4 > smaller
    # 4x the tokens at the largest width is a valid extrapolation.
    plan = make_plan("small", target_width=64, target_tokens=2**22, count_params=hand_count)
    assert plan.target_run().tokens == 4 * max(plan.tokens)


# ----------------------------------------------------------------------------- naive predictors


def test_naive_predictors_on_known_truths():
    assert best_in_ladder([3.0, 2.5, 2.7]) == 2.5
    # Points on an exact power law L = 5 C^-0.07: the log-log line recovers it.
    compute = np.geomspace(1e9, 1e12, 7)
    losses = 5.0 * compute**-0.07
    slope, intercept = loglog_fit(compute, losses)
    assert slope == pytest.approx(-0.07, rel=1e-10)
    assert math.exp(intercept) == pytest.approx(5.0, rel=1e-9)
    assert loglog_compute(compute, losses, 1e14) == pytest.approx(5.0 * 1e14**-0.07, rel=1e-10)
    both = naive_predictions(compute, losses, 1e14)
    assert set(both) == {"best_in_ladder", "loglog_compute"}
    assert both["best_in_ladder"]["prediction"] == pytest.approx(losses.min())
    assert relative_error(1.1, 1.0) == pytest.approx(0.1)
    assert relative_error(0.9, 1.0) == pytest.approx(0.1)


def test_naive_predictors_refuse_bad_input():
    with pytest.raises(ValueError, match="finite"):
        best_in_ladder([2.0, float("nan")])
    with pytest.raises(ValueError, match="same compute"):
        loglog_fit([1e9, 1e9], [2.0, 2.1])
    with pytest.raises(ValueError, match="positive"):
        loglog_fit([1e9, -1.0], [2.0, 2.1])
    with pytest.raises(ValueError, match="actual"):
        relative_error(1.0, float("inf"))


# ----------------------------------------------------------------------------- choosing and judging


def _sweep(losses: dict[float, float | None]) -> list[dict]:
    return [
        {
            "lr": lr,
            "status": "ok" if loss is not None else "diverged",
            "final_val_loss": loss,
        }
        for lr, loss in losses.items()
    ]


def test_choose_lr_takes_the_lowest_loss_and_flags_edges():
    lr, note = choose_lr(_sweep({0.01: 2.0, 0.02: 1.9, 0.04: 1.95, 0.08: None}))
    assert lr == 0.02 and "interior" in note
    lr, note = choose_lr(_sweep({0.01: 1.8, 0.02: 1.9, 0.04: None}))
    assert lr == 0.01 and "smallest" in note
    with pytest.raises(LadderError, match="every learning rate"):
        choose_lr(_sweep({0.01: None, 0.02: None}))


def test_compare_computes_errors_and_interval_membership():
    prediction = {
        "prediction": 2.0,
        "interval": [1.9, 2.1],
        "predictions": {"chinchilla": {"prediction": 2.0, "interval": [1.9, 2.1]}},
        "naive": {"best_in_ladder": {"prediction": 2.2}, "loglog_compute": {"prediction": 1.7}},
    }
    checked = compare(prediction, 2.05)
    assert checked["relative_error"] == pytest.approx(0.05 / 2.05)
    assert checked["inside_interval"] is True
    assert checked["naive"]["best_in_ladder"]["relative_error"] == pytest.approx(0.15 / 2.05)
    assert checked["naive"]["loglog_compute"]["relative_error"] == pytest.approx(0.35 / 2.05)
    assert checked["beats_naive_by_half"] is True  # 0.05 <= 0.5 * 0.15
    assert compare(prediction, 2.5)["inside_interval"] is False


# ----------------------------------------------------------------------------- reporting


def _synthetic_result(tmp_path, *, status: str = "done") -> tuple[LadderPlan, dict]:
    """A finished ladder's result, with metrics files, drawn from a known Chinchilla law."""
    plan = make_plan("tiny", count_params=hand_count)

    def law(n, d):
        return 1.5 + 40.0 / n**0.35 + 60.0 / d**0.3

    runs = []
    specs = [*plan.sweep_runs(), *plan.ladder_runs(lr=plan.lr_grid[0]), plan.target_run()]
    for spec in specs:
        n, d = hand_count(plan, spec.width), spec.tokens
        run_dir = tmp_path / "runs" / spec.name
        run_dir.mkdir(parents=True)
        steps = plan.steps_for(d)
        with open(run_dir / "metrics.jsonl", "w") as f:
            for step in range(1, steps + 1):
                tokens = step * plan.tokens_per_step
                row = {"step": step, "tokens": tokens, "train_loss": law(n, tokens) + 0.01}
                if step == steps:
                    row["val_loss"] = law(n, tokens)
                f.write(json.dumps(row) + "\n")
        runs.append(
            {
                "name": spec.name,
                "stage": spec.stage,
                "width": spec.width,
                "lr": spec.lr,
                "N": n,
                "N_total": n + 2 * 256 * spec.width,
                "D": d,
                "C": 6.0 * n * d,
                "dir": f"runs/{spec.name}",
                "status": "ok",
                "final_val_loss": law(n, d),
                "wall_seconds": 1.0,
            }
        )
    ladder = [r for r in runs if r["stage"] == "ladder"]
    target = runs[-1]
    result = {
        "status": status,
        "runs": runs if status == "done" else runs[:3],
        "lr": {"chosen": plan.lr_grid[0], "note": "interior optimum of the grid"},
        "wall_seconds": 12.0,
    }
    if status == "done":
        prediction = {
            "law": "chinchilla",
            "target": target,
            "prediction": target["final_val_loss"] * 1.01,
            "interval": [target["final_val_loss"] * 0.98, target["final_val_loss"] * 1.03],
            "interval_level": 0.95,
            "predictions": {"chinchilla": {"prediction": target["final_val_loss"] * 1.01}},
            "naive": naive_predictions(
                [r["C"] for r in ladder], [r["final_val_loss"] for r in ladder], target["C"]
            ),
        }
        result.update(prediction)
        result["actual"] = target["final_val_loss"]
        result.update(compare(prediction, target["final_val_loss"]))
    else:
        result["error"] = "run ladder-w24-t8k diverged at step 3"
    return plan, result


def test_report_writes_every_artifact_consistently(tmp_path):
    from everyscale.ladder.report import PLOTS, write_all

    plan, result = _synthetic_result(tmp_path)
    write_all(tmp_path, plan, result)
    for name in PLOTS:
        assert (tmp_path / name).stat().st_size > 5_000, name
    saved = json.loads((tmp_path / "ladder.json").read_text())
    assert "plot_errors" not in saved
    assert saved["relative_error"] == pytest.approx(0.01, rel=1e-9)
    assert saved["inside_interval"] is True
    assert set(saved["naive"]) == {"best_in_ladder", "loglog_compute"}
    report = (tmp_path / "report.md").read_text()
    assert f"{saved['actual']:.4f}" in report and f"{saved['prediction']:.4f}" in report
    assert "without" in report  # the parameter count says embeddings are excluded
    assert "![loss_vs_compute.png](loss_vs_compute.png)" in report


def test_report_of_a_failed_ladder_draws_no_verdict(tmp_path):
    plan, result = _synthetic_result(tmp_path, status="failed")
    report = render_markdown(plan, result)
    assert "The ladder stopped" in report and "diverged at step 3" in report
    assert "relative error of the law" not in report and "Fitted laws" not in report
