"""run_or_reuse (one rule for reusing a finished run) and the loop's should_stop hook."""

import dataclasses
import json

import pytest
import torch

from everyscale.train import TrainConfig, run, run_or_reuse
from tiny_runs import metric_rows, tiny_config


def tiny(tmp_path, name="run", **overrides) -> TrainConfig:
    return tiny_config(tmp_path, name, **{"steps": 8, "resume": True, **overrides})


rows = metric_rows


def adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=3e-3)


def test_a_finished_run_is_reused_only_under_the_same_config(tmp_path):
    config = tiny(tmp_path)
    first = run_or_reuse(config)
    assert first["status"] == "completed" and first["reused"] is False
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()

    again = run_or_reuse(config)
    assert again["reused"] is True
    assert again["final_val_loss"] == first["final_val_loss"]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics  # nothing retrained
    # Fields that do not change the updates (quiet, eval cadence, threads) may differ.
    assert run_or_reuse(dataclasses.replace(config, eval_every=2))["reused"] is True

    with pytest.raises(ValueError, match=r"other settings \(steps: 8 vs now 9\)"):
        run_or_reuse(dataclasses.replace(config, steps=9))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 8  # kept

    # resume=False asks for a fresh run: trained again, not reused.
    assert run_or_reuse(dataclasses.replace(config, resume=False))["reused"] is False


def test_a_custom_optimizer_needs_and_must_match_its_fingerprint(tmp_path):
    config = tiny(tmp_path)
    with pytest.raises(ValueError, match="fingerprint"):
        run_or_reuse(config, optimizer_factory=adamw)
    first = run_or_reuse(config, optimizer_factory=adamw, fingerprint={"lr": 3e-3})
    assert first["reused"] is False and first["custom_optimizer"]
    again = run_or_reuse(config, optimizer_factory=adamw, fingerprint={"lr": 3e-3})
    assert again["reused"] is True
    with pytest.raises(ValueError, match=r"other settings \(optimizer: "):
        run_or_reuse(config, optimizer_factory=adamw, fingerprint={"lr": 1e-3})
    with pytest.raises(ValueError, match=r"other settings \(optimizer: "):
        run_or_reuse(config)  # the preset lookup is not the factory it was trained with


def test_a_divergence_is_returned_and_then_reused(tmp_path):
    config = tiny(tmp_path, optimizer="sgd", lr=1e6)
    first = run_or_reuse(config)
    assert first["status"] == "diverged" and first["reused"] is False
    again = run_or_reuse(config)
    assert again["status"] == "diverged" and again["reused"] is True


def test_should_stop_ends_the_run_early_and_a_resume_finishes_it_exactly(tmp_path):
    whole = run(tiny(tmp_path, "whole"))
    seen = []

    def stop_at_3(row):
        seen.append(row["step"])
        return row["step"] == 3

    config = tiny(tmp_path, "stopped", keep_checkpoint=False)
    stopped = run(config, should_stop=stop_at_3)
    assert stopped["status"] == "stopped" and stopped["steps"] == stopped["stopped_step"] == 3
    assert seen == [1, 2, 3]
    assert json.loads((tmp_path / "stopped" / "summary.json").read_text())["status"] == "stopped"
    assert [r["step"] for r in rows(config)] == [0, 1, 2, 3]
    assert (tmp_path / "stopped" / "checkpoint.pt").exists()  # kept: the run is not done

    # A stopped run is not finished: run_or_reuse trains it on from its checkpoint.
    finished = run_or_reuse(config)
    assert finished["status"] == "completed" and finished["reused"] is False
    assert finished["final_val_loss"] == whole["final_val_loss"]
    assert [r["train_loss"] for r in rows(config)[1:]] == [
        r["train_loss"] for r in rows(tiny(tmp_path, "whole"))[1:]
    ]


def test_should_stop_at_the_last_step_is_a_completed_run(tmp_path):
    calls = []
    summary = run(tiny(tmp_path), should_stop=lambda row: calls.append(row["step"]) or True)
    # Asked after step 1, it stops there; asked never after the last step.
    assert summary["status"] == "stopped" and calls == [1]
    finished = run(tiny(tmp_path), should_stop=lambda row: row["step"] >= 8)
    assert finished["status"] == "completed" and finished["steps"] == 8
