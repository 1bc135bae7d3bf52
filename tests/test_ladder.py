"""Tests of the scaling ladder: planner, naive predictors, reporting, bad input, and a tiny
ladder trained end to end with the real engine and the real fitter."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from available_data import TEXT_DATA
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
    points = {(r.width, r.tokens) for r in ladder}
    assert len(points) == len(plan.widths) * len(plan.tokens) >= 6
    assert len(ladder) == sum(plan.seeds_at(w) for w in plan.widths) * len(plan.tokens)
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
    with pytest.raises(ValueError, match=r"--data.*text"):
        make_plan("small", data="digits", count_params=hand_count)
    with pytest.raises(FileNotFoundError, match=r"--data.*check the path"):
        make_plan("small", data="/no/such/corpus.txt", count_params=hand_count)
    with pytest.raises(ValueError, match=r"--optimizer.*scion"):
        make_plan("small", preset="adam", count_params=hand_count)
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


# ----------------------------------------------------------------------------- whole ladders


def known_law(n: float, d: float) -> float:
    """The synthetic truth of the fake engine below: a Chinchilla law [H]."""
    return 1.2 + 30.0 / n**0.30 + 90.0 / d**0.35


def fake_train(spec, plan, run_dir, resume):
    """Stands in for the engine: writes the files a run writes, with the known law's loss.

    The learning rate matters only through a penalty away from 2^-11 (so the sweep has an
    interior optimum); every ladder run uses the chosen rate, so the ladder lies on the law.
    Like the engine, it records the run's config and optimizer settings (what a reuse checks).
    """
    from everyscale.ladder.ladder import describe_run, optimizer_fingerprint, train_config

    info = describe_run(spec, plan)
    loss = known_law(info["N"], info["D"]) + 0.01 * (math.log2(spec.lr) + 11) ** 2
    run_dir.mkdir(parents=True, exist_ok=True)
    train_config(spec, plan, run_dir, resume).to_json(run_dir / "config.json")
    (run_dir / "metrics.jsonl").write_text(
        json.dumps({"step": info["steps"], "tokens": info["D"], "train_loss": loss}) + "\n"
    )
    summary = {"status": "completed", "final_val_loss": loss, "wall_seconds": 0.0}
    summary["optimizer_fingerprint"] = optimizer_fingerprint(spec, plan)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture(scope="module")
def known_law_ladder(tmp_path_factory):
    """A ladder whose runs lie on the known law (fake engine: only the fits cost time)."""
    from everyscale.ladder import run_ladder

    # Three token budgets: with two, beta and E are not separately identified (the held-out
    # model's prediction still is, at the largest budget, which the default plans rely on).
    plan = make_plan(
        "tiny",
        tokens=(8192, 16384, 32768),
        lr_grid=(2.0**-12, 2.0**-11, 2.0**-10),
        bootstrap=20,
    )
    out = tmp_path_factory.mktemp("known") / "ladder"
    result = run_ladder(plan, out, progress=False, workers=1, train_fn=fake_train)
    return plan, out, result


def test_ladder_recovers_a_known_law_and_beats_the_naive_predictions(known_law_ladder):
    _, _, result = known_law_ladder
    assert result["status"] == "done"
    assert result["lr"]["chosen"] == 2.0**-11
    truth = known_law(result["target"]["N"], result["target"]["D"])
    assert result["actual"] == pytest.approx(truth, rel=1e-12)
    # Noise-free points on the law: the fit extrapolates to the held-out model almost exactly,
    # far better than either naive guess (which miss by percents at this extrapolation).
    assert result["relative_error"] < 1e-3
    better_naive = min(v["relative_error"] for v in result["naive"].values())
    assert better_naive > 0.01 and result["beats_naive_by_half"]
    fitted = result["fits"]["chinchilla"]["params"]
    assert fitted["alpha"] == pytest.approx(0.30, rel=0.05)
    assert fitted["beta"] == pytest.approx(0.35, rel=0.05)
    # The over-training law (equal exponents) is fitted and reported beside it.
    assert "overtrain" in result["predictions"]


def diverging_ladder_run(spec, plan, run_dir, resume):
    """The real engine, except that the first ladder run gets an absurd learning rate."""
    import dataclasses

    from everyscale.ladder.ladder import train_config
    from everyscale.train import run

    config = train_config(spec, plan, run_dir, resume)
    if spec.name == plan.ladder_runs()[0].name:
        config = dataclasses.replace(config, optimizer="sgd", lr=1e6)
    return run(config)


def test_a_diverged_ladder_run_stops_with_a_clear_message_and_keeps_finished_runs(tmp_path):
    from everyscale.ladder import run_ladder

    plan = make_plan("tiny", data=TEXT_DATA, lr_grid=(2.0**-11,))
    first = plan.ladder_runs()[0].name
    with pytest.raises(LadderError, match=rf"{first} .*diverged.*kept") as caught:
        run_ladder(plan, tmp_path, progress=False, workers=1, train_fn=diverging_ladder_run)
    assert "--lr-grid" in str(caught.value)
    saved = json.loads((tmp_path / "ladder.json").read_text())
    assert saved["status"] == "failed" and "diverged" in saved["error"]
    assert "prediction" not in saved and "fits" not in saved
    assert not (tmp_path / "prediction.json").exists()
    # The sweep's run finished and is kept with its own metrics.
    sweep_dir = tmp_path / "runs" / plan.sweep_runs()[0].name
    assert json.loads((sweep_dir / "summary.json").read_text())["status"] == "completed"
    assert (sweep_dir / "metrics.jsonl").stat().st_size > 0
    assert "The ladder stopped" in (tmp_path / "report.md").read_text()


def test_out_folder_is_not_overwritten_and_resume_needs_the_same_plan(known_law_ladder):
    from everyscale.ladder import run_ladder

    plan, out, _ = known_law_ladder
    with pytest.raises(ValueError, match="--resume"):
        run_ladder(plan, out, progress=False, workers=1, train_fn=fake_train)
    other = make_plan("tiny", tokens=(8192, 16384, 32768), lr_grid=(2.0**-12,), bootstrap=20)
    with pytest.raises(ValueError, match=r"different plan.*lr_grid"):
        run_ladder(other, out, progress=False, workers=1, train_fn=fake_train, resume=True)


@pytest.fixture(scope="module")
def tiny_ladder(tmp_path_factory):
    """A real tiny ladder, trained once through the command line (two worker processes)."""
    from everyscale.cli import main

    out = tmp_path_factory.mktemp("ladder") / "tiny"
    argv = ["ladder", "--budget", "tiny", "--data", TEXT_DATA, "--out", str(out), "--quiet"]
    assert main(argv) == 0
    return out


def test_tiny_ladder_writes_every_artifact_consistently(tiny_ladder):
    from everyscale.ladder.report import PLOTS

    out = tiny_ladder
    for name in ("report.md", "ladder.json", "prediction.json", "points.csv", "plan.json"):
        assert (out / name).stat().st_size > 0, name
    for name in PLOTS:
        assert (out / name).stat().st_size > 5_000, name
    saved = json.loads((out / "ladder.json").read_text())
    assert saved["status"] == "done" and "plot_errors" not in saved
    plan = LadderPlan.from_json(saved["plan"])
    runs = {r["name"]: r for r in saved["runs"]}
    expected = [*plan.sweep_runs(), *plan.ladder_runs(), plan.target_run()]
    assert sorted(runs) == sorted(s.name for s in expected)

    # Every run kept the engine's own files, and the ladder's numbers are the engine's.
    for r in runs.values():
        run_dir = out / r["dir"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert r["final_val_loss"] == summary["final_val_loss"]
        assert r["D"] == summary["tokens"]
        assert r["N"] == summary["non_embedding_params"]
        assert r["C"] == pytest.approx(6 * r["N"] * r["D"])
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) > r["steps"]

    # The chosen lr is the sweep's best, and every later run used it.
    sweep = [r for r in runs.values() if r["stage"] == "sweep"]
    best = min(sweep, key=lambda r: r["final_val_loss"])
    assert saved["lr"]["chosen"] == best["lr"]
    later = [r for r in runs.values() if r["stage"] != "sweep"]
    assert all(r["lr"] == best["lr"] for r in later)

    # The held-out model is >= 4x the largest ladder model, and was predicted before training.
    ladder = [r for r in later if r["stage"] == "ladder"]
    target = runs[plan.target_run().name]
    assert target["N"] >= 4 * max(r["N"] for r in ladder)
    prediction = json.loads((out / "prediction.json").read_text())
    target_config = out / target["dir"] / "config.json"
    assert (out / "prediction.json").stat().st_mtime <= target_config.stat().st_mtime
    assert prediction["prediction"] == saved["prediction"]
    lo, hi = saved["interval"]
    assert lo <= saved["prediction"] <= hi

    # The verdict is recomputed from the raw numbers.
    actual = target["final_val_loss"]
    assert saved["actual"] == actual
    assert saved["relative_error"] == pytest.approx(abs(saved["prediction"] - actual) / actual)
    assert saved["inside_interval"] == (lo <= actual <= hi)
    best_loss = min(r["final_val_loss"] for r in ladder)
    assert saved["naive"]["best_in_ladder"]["prediction"] == best_loss
    line = loglog_compute(
        [r["C"] for r in ladder], [r["final_val_loss"] for r in ladder], target["C"]
    )
    assert saved["naive"]["loglog_compute"]["prediction"] == pytest.approx(line, rel=1e-12)
    for entry in saved["naive"].values():
        assert entry["relative_error"] == pytest.approx(abs(entry["prediction"] - actual) / actual)

    # The points the law was fitted to are the ladder's runs.
    rows = (out / "points.csv").read_text().splitlines()
    assert len(rows) == 1 + len(ladder)
    report = (out / "report.md").read_text()
    assert f"{actual:.4f}" in report and "best_in_ladder" in report


def test_resume_reuses_every_finished_run(tiny_ladder):
    from everyscale.ladder import run_ladder

    before = json.loads((tiny_ladder / "ladder.json").read_text())
    plan = LadderPlan.from_json(before["plan"])
    after = run_ladder(plan, tiny_ladder, resume=True, progress=False, workers=1)
    assert all(r["reused"] for r in after["runs"])
    assert after["actual"] == before["actual"] and after["prediction"] == before["prediction"]


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from everyscale.cli import main

    out = str(tmp_path / "x")
    assert main(["ladder", "--budget", "tiny", "--widths", "16,32", "--out", out]) == 2
    assert "--widths" in capsys.readouterr().err
    assert main(["ladder", "--budget", "tiny", "--target", "24", "--out", out]) == 2
    assert "--target" in capsys.readouterr().err
    assert main(["ladder", "--budget", "tiny", "--optimizer", "nope", "--out", out]) == 2
    assert "--optimizer" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing is trained or written on bad input


def test_idle_wall_estimate_packs_each_stage_onto_the_workers():
    from everyscale.ladder.ladder import idle_wall_estimate

    def run(stage, cpu):
        return {"stage": stage, "status": "ok", "cpu_seconds": cpu}

    runs = [run("sweep", c) for c in (4.0, 3.0, 2.0, 1.0)]
    runs += [run("ladder", 6.0), run("ladder", 6.0), run("target", 10.0)]
    result = {"runs": runs, "fit_cpu_seconds": 1.0}
    # Longest first: sweep 4+1 | 3+2 -> 5; ladder 6 | 6 -> 6; target 10; fit 1.
    assert idle_wall_estimate(result, 2) == pytest.approx(22.0)
    assert idle_wall_estimate(result, 1) == pytest.approx(10.0 + 12.0 + 10.0 + 1.0)
    runs[0]["cpu_seconds"] = None  # a reused run: its CPU time is unknown
    assert idle_wall_estimate(result, 2) is None


def test_an_interrupted_ladder_resumes_where_it_stopped(tmp_path):
    from everyscale.ladder import run_ladder

    plan = make_plan("tiny", lr_grid=(2.0**-12, 2.0**-11, 2.0**-10), bootstrap=0)
    stop_at = plan.ladder_runs()[2].name

    def interrupted(spec, plan, run_dir, resume):
        if spec.name == stop_at:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a run
        return fake_train(spec, plan, run_dir, resume)

    with pytest.raises(KeyboardInterrupt):
        run_ladder(plan, tmp_path, progress=False, workers=1, train_fn=interrupted)
    saved = json.loads((tmp_path / "ladder.json").read_text())
    assert saved["status"] == "interrupted" and "--resume" in saved["error"]
    assert not (tmp_path / "prediction.json").exists()

    result = run_ladder(plan, tmp_path, progress=False, workers=1, train_fn=fake_train, resume=True)
    assert result["status"] == "done"
    reused = {r["name"] for r in result["runs"] if r["reused"]}
    finished_before = {s.name for s in plan.sweep_runs()} | {s.name for s in plan.ladder_runs()[:2]}
    assert reused == finished_before


def test_resume_refuses_a_finished_run_trained_under_other_settings(tmp_path):
    """A finished run is reused only when its recorded config and optimizer settings match."""
    from everyscale.ladder import run_ladder
    from everyscale.ladder.ladder import train_config

    plan = make_plan("tiny", lr_grid=(2.0**-12, 2.0**-11, 2.0**-10), bootstrap=0)
    run_ladder(plan, tmp_path, progress=False, workers=1, train_fn=fake_train)
    again = run_ladder(plan, tmp_path, resume=True, progress=False, workers=1, train_fn=fake_train)
    assert all(r["reused"] for r in again["runs"])

    # The first ladder run's folder now holds a finished run trained with another lr.
    spec = plan.ladder_runs(again["lr"]["chosen"])[0]
    run_dir = tmp_path / "runs" / spec.name
    other = dataclasses.replace(train_config(spec, plan, run_dir, True), lr=spec.lr * 4)
    other.to_json(run_dir / "config.json")
    with pytest.raises(ValueError, match=r"other settings \(lr: "):
        run_ladder(plan, tmp_path, resume=True, progress=False, workers=1, train_fn=fake_train)

    # Same config, other optimizer settings (e.g. another initialization radius): refused too.
    train_config(spec, plan, run_dir, True).to_json(run_dir / "config.json")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["optimizer_fingerprint"]["init"] = 0.5
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"other settings \(optimizer: "):
        run_ladder(plan, tmp_path, resume=True, progress=False, workers=1, train_fn=fake_train)


def test_branched_ladder_runs_equal_the_runs_trained_alone(tiny_ladder, tmp_path):
    """The tiny ladder trained its shorter budgets as cooldowns branched from each width's
    trunk; one of them, trained alone by the engine, gives the same numbers bit for bit."""
    from everyscale.ladder.ladder import optimizer_factory, optimizer_fingerprint, train_config
    from everyscale.train import run

    saved = json.loads((tiny_ladder / "ladder.json").read_text())
    plan = LadderPlan.from_json(saved["plan"])
    phases = {r["name"]: r.get("phase") for r in saved["runs"] if r["stage"] == "ladder"}
    assert set(phases.values()) == {"trunk", "branch"}
    spec = next(s for s in plan.ladder_runs(saved["lr"]["chosen"]) if phases[s.name] == "branch")
    alone = run(
        train_config(spec, plan, tmp_path / "alone", False),
        optimizer_factory=optimizer_factory(spec, plan),
        optimizer_fingerprint=optimizer_fingerprint(spec, plan),
    )
    branched = next(r for r in saved["runs"] if r["name"] == spec.name)
    assert branched["final_val_loss"] == alone["final_val_loss"]
    assert saved["ladder_tokens"]["trained"] < saved["ladder_tokens"]["alone"]


@pytest.mark.parametrize("budget", ["small", "medium", "large"])
def test_branches_train_at_most_three_quarters_of_the_tokens(budget):
    from everyscale.ladder.ladder import ladder_tokens

    plan = make_plan(budget, count_params=hand_count)
    tokens = ladder_tokens(plan)
    assert tokens["ratio"] <= 0.75  # three doubling budgets, a 30% cooldown: 0.7
    alone = ladder_tokens(dataclasses.replace(plan, branches=False))
    assert alone["trained"] == alone["alone"] == tokens["alone"]


def test_resume_accepts_a_plan_json_written_before_an_option_existed(tmp_path):
    from everyscale.ladder import run_ladder

    plan = make_plan("tiny", lr_grid=(2.0**-12, 2.0**-11, 2.0**-10), bootstrap=0)
    run_ladder(plan, tmp_path, progress=False, workers=1, train_fn=fake_train)
    saved = json.loads((tmp_path / "plan.json").read_text())
    for name in ("branches", "cooldown_shape"):  # options added later, at their defaults
        del saved[name]
    (tmp_path / "plan.json").write_text(json.dumps(saved))
    again = run_ladder(plan, tmp_path, resume=True, progress=False, workers=1, train_fn=fake_train)
    assert all(r["reused"] for r in again["runs"])
    other = dataclasses.replace(plan, cooldown_shape="sqrt")
    with pytest.raises(ValueError, match="cooldown_shape"):
        run_ladder(other, tmp_path, resume=True, progress=False, workers=1, train_fn=fake_train)


def test_no_check_predicts_without_training_the_target_and_resume_checks_it(tmp_path):
    """--no-check: the prediction is written and the held-out model is not trained; a later
    --resume trains it and checks the prediction written before, unchanged."""
    from everyscale.ladder import run_ladder

    plan = make_plan("tiny", lr_grid=(2.0**-12, 2.0**-11, 2.0**-10), bootstrap=0)
    predicted = run_ladder(
        plan, tmp_path, progress=False, workers=1, train_fn=fake_train, check=False
    )
    assert predicted["status"] == "predicted" and "actual" not in predicted
    assert not (tmp_path / "runs" / plan.target_run().name).exists()
    written = json.loads((tmp_path / "prediction.json").read_text())
    report = (tmp_path / "report.md").read_text()
    assert report.splitlines()[0].endswith(": predicted") and "--resume" in report

    checked = run_ladder(
        plan, tmp_path, progress=False, workers=1, train_fn=fake_train, resume=True
    )
    assert checked["status"] == "done"
    assert checked["prediction"] == written["prediction"]
    assert checked["written_at"] == written["written_at"]
    truth = known_law(checked["target"]["N"], checked["target"]["D"])
    assert checked["actual"] == pytest.approx(truth + 0.0, rel=0.02)


def test_seeds_train_every_ladder_point_once_per_seed_and_fit_them_all(tmp_path):
    """--seeds 2: each width x budget twice (seeds 0 and 1), trunks and branches per seed,
    the same share of tokens saved by branching, and the law fitted to every run."""
    from everyscale.ladder import run_ladder
    from everyscale.ladder.ladder import ladder_tokens, split_trunks

    one = make_plan("tiny", lr_grid=(2.0**-12, 2.0**-11, 2.0**-10), bootstrap=0)
    plan = make_plan("tiny", lr_grid=(2.0**-12, 2.0**-11, 2.0**-10), bootstrap=0, seeds=2)
    runs = plan.ladder_runs(2.0**-11)
    assert len(runs) == 2 * len(one.ladder_runs())
    assert {r.name for r in runs if r.replicate == 0} == {r.name for r in one.ladder_runs()}
    assert all(r.name.endswith("-seed1") for r in runs if r.replicate == 1)
    trunks, branches = split_trunks(runs, plan)
    assert len(trunks) == 2 * len(plan.widths)
    assert all(plan.trunk_of(b.width, b.replicate).endswith("-seed1") == (b.replicate == 1)
               for b in branches)  # fmt: skip
    assert ladder_tokens(plan)["ratio"] == ladder_tokens(one)["ratio"]
    assert ladder_tokens(plan)["trained"] == 2 * ladder_tokens(one)["trained"]

    result = run_ladder(plan, tmp_path, progress=False, workers=1, train_fn=fake_train)
    assert result["status"] == "done"
    seeds = {
        json.loads((tmp_path / "runs" / r.name / "config.json").read_text())["seed"] for r in runs
    }
    assert seeds == {0, 1}
    points = (tmp_path / "points.csv").read_text().splitlines()
    assert len(points) == 1 + len(runs)
    with pytest.raises(ValueError, match="--seeds"):
        make_plan("tiny", seeds=0)


def test_horizon_lr_ends_each_runs_stable_phase_at_its_horizons_rate(tmp_path):
    """Every ladder and target run decays its stable phase from where the sweep's budget ends
    its own, so a run of D tokens ends it at (D / D0)^-0.505 (Scion at a fixed batch); the
    sweep is untouched, and --no-horizon-lr keeps the sweep's rate for every run."""
    from everyscale.ladder.ladder import train_config
    from everyscale.train.extend import cooldown_start

    plan = make_plan("tiny", tokens=(8192, 16384, 32768))
    assert plan.horizon_decay == pytest.approx(0.505)
    sweep = train_config(plan.sweep_runs()[0], plan, tmp_path, False)
    assert sweep.power_decay == 0.0 and sweep.power_decay_from is None
    shortest, *_, longest = [
        train_config(s, plan, tmp_path, False) for s in plan.ladder_runs(2.0**-11)
    ]
    for config in (shortest, longest):
        assert config.power_decay_from == cooldown_start(sweep)
    f = shortest.schedule_function()
    assert [f(s) for s in range(cooldown_start(shortest) + 1)] == [1.0] * (
        cooldown_start(shortest) + 1
    )
    g = longest.schedule_function()
    ratio = cooldown_start(longest) / cooldown_start(sweep)  # 4x the tokens
    assert g(cooldown_start(longest)) == pytest.approx(ratio**-0.505)
    target = train_config(plan.target_run(2.0**-11), plan, tmp_path, False)
    assert target.power_decay == plan.horizon_decay
    off = make_plan("tiny", tokens=(8192, 16384, 32768), horizon_lr=False)
    assert off.horizon_decay == 0.0
    assert train_config(off.ladder_runs(1e-3)[-1], off, tmp_path, False).power_decay == 0.0


def test_smallest_seeds_add_runs_at_the_smallest_width_only():
    """The budgets train two seeds at the smallest width (cheapest runs, whose noise weighs
    most on the fitted exponents) and one elsewhere; each seed has its own trunk."""
    from everyscale.ladder.ladder import ladder_tokens, split_trunks

    plan = make_plan("small")
    assert plan.smallest_seeds == 2 and plan.seeds == 1
    runs = plan.ladder_runs(2.0**-11)
    extra = [r for r in runs if r.replicate == 1]
    assert {r.width for r in extra} == {min(plan.widths)}
    assert len(extra) == len(plan.tokens) and len(runs) == (len(plan.widths) + 1) * len(plan.tokens)
    trunks, _ = split_trunks(runs, plan)
    assert len(trunks) == len(plan.widths) + 1
    assert ladder_tokens(plan)["ratio"] <= 0.75
    both = make_plan("tiny", seeds=2, smallest_seeds=3)
    assert [both.seeds_at(w) for w in both.widths] == [3, 2, 2]
    with pytest.raises(ValueError, match="--smallest-seeds"):
        make_plan("tiny", smallest_seeds=0)
