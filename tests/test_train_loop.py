"""The training loop: learning happens, resume is exact, bad states stop cleanly."""

import json
import os
import signal

import pytest
import torch

from available_data import HAS_SHAKESPEARE
from everyscale.train import (
    CheckpointError,
    NonFiniteLossError,
    TrainConfig,
    TrainingInterrupted,
    run,
)
from everyscale.train.data import FASHION_MNIST_DEBIAN_DIR
from tiny_runs import metric_rows, tiny_config


def adamw(lr=3e-3):
    return lambda model: torch.optim.AdamW(model.parameters(), lr=lr)


def tiny(tmp_path, name="run", **overrides) -> TrainConfig:
    return tiny_config(tmp_path, name, **overrides)


rows = metric_rows


def without_time(metrics):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in metrics]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(
            {"data": "shakespeare"},
            marks=pytest.mark.skipif(not HAS_SHAKESPEARE, reason="tinyshakespeare.txt not found"),
        ),
        {"data": "stdlib"},
        {"data": "digits", "model": "mlp", "width": 32, "batch_size": 32},
        {"data": "digits", "model": "cnn", "width": 8, "depth": 2, "batch_size": 32, "steps": 60},
        pytest.param(
            {"data": "fashion-mnist", "model": "mlp", "width": 32, "batch_size": 32},
            marks=pytest.mark.skipif(
                not FASHION_MNIST_DEBIAN_DIR.exists(),
                reason="Debian package dataset-fashion-mnist is not installed",
            ),
        ),
    ],
    ids=["shakespeare", "stdlib", "digits-mlp", "digits-cnn", "fashion-mnist"],
)
def test_a_short_run_lowers_the_validation_loss(tmp_path, overrides):
    config = tiny(tmp_path, **{"steps": 30, **overrides, "eval_every": 1000})
    summary = run(config, optimizer_factory=adamw(3e-2 if config.model == "cnn" else 1e-2))
    assert summary["status"] == "completed" and summary["steps"] == config.steps
    assert summary["final_val_loss"] < summary["initial_val_loss"] - 0.3
    if config.model != "gpt":  # ten classes: learning must beat chance clearly
        assert summary["final_val_accuracy"] > 0.3
    assert rows(config)[-1]["val_accuracy"] == summary["final_val_accuracy"]
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved == summary
    assert TrainConfig.from_json(tmp_path / "run" / "config.json") == config


def test_summary_counts_tokens_params_and_flops(tmp_path):
    config = tiny(tmp_path, steps=3)
    summary = run(config, optimizer_factory=adamw())
    metrics = rows(config)
    assert [r["step"] for r in metrics] == [0, 1, 2, 3]
    assert summary["tokens"] == 3 * 8 * 16 == metrics[-1]["tokens"]
    d, V = 16, 256
    assert summary["non_embedding_params"] == 12 * d * d + 2 * d + d
    assert summary["params"] == summary["non_embedding_params"] + 2 * V * d
    assert summary["flops_per_token"] == 6 * (12 * d * d + V * d) + 6 * 16 * d
    assert summary["total_flops"] == summary["flops_per_token"] * summary["tokens"]
    assert summary["best_val_loss"] == min(r["val_loss"] for r in metrics if "val_loss" in r)


def test_schedule_sets_the_logged_learning_rate(tmp_path):
    config = tiny(tmp_path, steps=10, schedule="wsd", cooldown=0.5, lr=0.004)
    run(config, optimizer_factory=adamw(0.004))
    lrs = [r["lr"] for r in rows(config) if "lr" in r]
    assert lrs == pytest.approx([0.004] * 6 + [0.004 * k / 5 for k in (4, 3, 2, 1)])


def test_resume_after_sigint_reproduces_the_uninterrupted_run_exactly(tmp_path):
    reference = tiny(tmp_path, "reference")
    expected = run(reference, optimizer_factory=adamw())

    def interrupt_at_step_5(row):
        if row["step"] == 5:
            os.kill(os.getpid(), signal.SIGINT)

    config = tiny(tmp_path, "interrupted")
    with pytest.raises(TrainingInterrupted, match="checkpoint saved at step 5") as info:
        run(config, optimizer_factory=adamw(), callback=interrupt_at_step_5)
    assert info.value.summary["status"] == "interrupted"
    assert json.loads((tmp_path / "interrupted" / "summary.json").read_text())["steps"] == 5
    resumed = run(tiny(tmp_path, "interrupted", resume=True), optimizer_factory=adamw())
    assert without_time(rows(config)) == without_time(rows(reference))
    assert resumed["final_val_loss"] == expected["final_val_loss"]
    assert resumed["steps"] == expected["steps"] == 12


def test_resume_after_a_crash_truncates_metrics_to_the_checkpoint(tmp_path):
    reference = tiny(tmp_path, "reference", grad_accum=2, clip=0.5)
    run(reference, optimizer_factory=adamw())

    def crash_at_step_7(row):
        if row["step"] == 7:
            raise RuntimeError("simulated crash")

    config = tiny(tmp_path, "crashed", grad_accum=2, clip=0.5, checkpoint_every=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(config, optimizer_factory=adamw(), callback=crash_at_step_7)
    assert rows(config)[-1]["step"] == 7  # step 7 will be redone from the step-6 checkpoint
    assert json.loads((tmp_path / "crashed" / "summary.json").read_text())["status"] == "failed"
    run(tiny(tmp_path, "crashed", grad_accum=2, clip=0.5, resume=True), optimizer_factory=adamw())
    steps = [r["step"] for r in rows(config)]
    assert steps == list(range(13)), "no step may appear twice"
    assert without_time(rows(config)) == without_time(rows(reference))


def test_resuming_a_completed_run_returns_its_summary(tmp_path):
    first = run(tiny(tmp_path, steps=3), optimizer_factory=adamw())
    again = run(tiny(tmp_path, steps=3, resume=True), optimizer_factory=adamw())
    assert again == first


def test_corrupt_checkpoint_is_refused_and_kept(tmp_path):
    run(tiny(tmp_path, steps=3), optimizer_factory=adamw())
    path = tmp_path / "run" / "checkpoint.pt"
    damaged = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(damaged)
    with pytest.raises(CheckpointError, match="unreadable"):
        run(tiny(tmp_path, steps=6, resume=True), optimizer_factory=adamw())
    assert path.read_bytes() == damaged


def test_checkpoint_from_another_config_is_refused_and_kept(tmp_path):
    run(tiny(tmp_path, steps=3), optimizer_factory=adamw())
    path = tmp_path / "run" / "checkpoint.pt"
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"different config \(lr"):
        run(tiny(tmp_path, steps=3, lr=0.5, resume=True), optimizer_factory=adamw())
    assert path.read_bytes() == before


def test_a_run_resumes_from_its_own_config_json_with_tuple_options(tmp_path):
    def interrupt_at_step_3(row):
        if row["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    first = tiny(tmp_path, steps=6, optimizer_options={"betas": (0.9, 0.95)})
    with pytest.raises(TrainingInterrupted):
        run(first, optimizer_factory=adamw(), callback=interrupt_at_step_3)
    again = TrainConfig.from_json(tmp_path / "run" / "config.json")  # betas is now a list
    again.resume = True
    assert run(again, optimizer_factory=adamw())["steps"] == 6


class PoisonedSGD(torch.optim.SGD):
    """SGD that writes NaN into the weights on its third update (a forced divergence)."""

    def step(self, closure=None):
        super().step(closure)
        self.updates = getattr(self, "updates", 0) + 1
        if self.updates == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))


@pytest.mark.parametrize(("checkpoint_every", "diverged_step"), [(2, 4), (1, 3)])
def test_non_finite_loss_stops_cleanly_with_the_last_good_checkpoint(
    tmp_path, checkpoint_every, diverged_step
):
    config = tiny(tmp_path, checkpoint_every=checkpoint_every, eval_every=0)
    with pytest.raises(NonFiniteLossError, match=f"at step {diverged_step}") as info:
        run(config, optimizer_factory=lambda m: PoisonedSGD(m.parameters(), lr=0.1))
    assert info.value.step == diverged_step
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_step"] == diverged_step
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    full = tiny(tmp_path, "full", steps=4)
    accumulated = tiny(tmp_path, "accumulated", steps=4, grad_accum=4)
    run(full, optimizer_factory=adamw())
    run(accumulated, optimizer_factory=adamw())
    for a, b in zip(rows(full), rows(accumulated)):
        assert a["step"] == b["step"]
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4)


def test_keep_checkpoint_false_removes_it_after_a_completed_run(tmp_path):
    run(tiny(tmp_path, steps=2, keep_checkpoint=False), optimizer_factory=adamw())
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert (tmp_path / "run" / "summary.json").exists()


def test_config_json_round_trip_and_unknown_fields(tmp_path):
    config = tiny(tmp_path, optimizer_options={"weight_decay": 0.1}, clip=1.0, cooldown=0.2)
    assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_json('{"widht": 3}')


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"model": "resnet"}, ValueError, "unknown model .*set --model"),
        ({"optimizer": "adamm"}, ValueError, "unknown optimizer .*set --optimizer"),
        ({"schedule": "exp"}, ValueError, "unknown schedule .*set --schedule"),
        ({"width": 18, "heads": 4}, ValueError, "not divisible by heads"),
        ({"batch_size": 10, "grad_accum": 4}, ValueError, "grad_accum.*--grad-accum"),
        ({"lr": -1.0}, ValueError, "lr must be.*change --lr"),
        ({"steps": 0}, ValueError, "steps must be.*change --steps"),
        ({"val_windows": 0}, ValueError, "change --val-windows"),
        ({"clip": 0.0}, ValueError, "clip.*--clip"),
        ({"clip": "1"}, ValueError, "clip must be a number.*--clip"),
        ({"warmup": None}, ValueError, "warmup must be a number.*--warmup"),
        ({"context": 4096 * 1024}, ValueError, "choose --context at most"),
        ({"data": "no/such/file.txt"}, FileNotFoundError, "check the spelling or the path"),
        ({"data": "digits"}, ValueError, "model 'gpt' needs text data"),
        ({"model": "cnn"}, ValueError, "needs image data"),
        ({"schedule": "cosine", "cooldown": 0.3}, ValueError, "wsd schedule only"),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, overrides, error, match):
    config = tiny(tmp_path, **overrides)
    with pytest.raises(error, match=match):
        run(config)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize(("preset", "lr"), [("adamw", 1e-2), ("scion", 2**-10)])
def test_real_presets_learn_and_resume_exactly(tmp_path, preset, lr):
    """The default path: ``everyscale.optimizer(model, config.optimizer, lr=config.lr)``."""
    reference = tiny(tmp_path, "reference", optimizer=preset, lr=lr, steps=20, eval_every=10)
    summary = run(reference)
    assert summary["final_val_loss"] < summary["initial_val_loss"] - 1.0

    def interrupt_at_step_7(row):
        if row["step"] == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    config = tiny(tmp_path, "interrupted", optimizer=preset, lr=lr, steps=20, eval_every=10)
    with pytest.raises(TrainingInterrupted, match="SIGTERM"):
        run(config, callback=interrupt_at_step_7)
    config.resume = True
    run(config)
    assert without_time(rows(config)) == without_time(rows(reference))


@pytest.mark.parametrize("clip", [None, 1.0])
def test_non_finite_gradient_with_finite_loss_is_a_divergence(tmp_path, clip):
    import everyscale

    def factory(model):
        model.head.weight.register_hook(lambda grad: grad * float("nan"))
        return everyscale.optimizer(model, "adamw", lr=1e-3)

    config = tiny(tmp_path, clip=clip)
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient.* at step 1") as info:
        run(config, optimizer_factory=factory)
    assert info.value.summary["status"] == "diverged"


def test_a_fresh_run_moves_an_earlier_run_aside(tmp_path):
    run(tiny(tmp_path, steps=2), optimizer_factory=adamw())
    names = ("checkpoint.pt", "metrics.jsonl", "summary.json", "config.json")
    before = {name: (tmp_path / "run" / name).read_bytes() for name in names}
    run(tiny(tmp_path, steps=3, lr=0.01), optimizer_factory=adamw())
    for name in names:
        stem, suffix = name.split(".")
        assert (tmp_path / "run" / f"{stem}.previous-1.{suffix}").read_bytes() == before[name]
    assert [r["step"] for r in rows(tiny(tmp_path))] == [0, 1, 2, 3]


def test_evaluate_matches_a_direct_computation():
    from everyscale.train import build_model, evaluate, load_dataset

    dataset = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("mlp", width=8, depth=1, input_shape=(1, 8, 8), num_classes=10)
    loss, accuracy = evaluate(model, dataset, batch_size=100)
    with torch.no_grad():
        logits = model(dataset.val_x)
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, dataset.val_y)))
    assert accuracy == pytest.approx(float((logits.argmax(1) == dataset.val_y).float().mean()))


def test_gpt_trains_on_npy_token_ids_with_their_vocabulary(tmp_path):
    import numpy as np

    np.save(tmp_path / "tokens.npy", (np.arange(20000) * 7 % 300).astype(np.int32))
    config = tiny(tmp_path, data=str(tmp_path / "tokens.npy"), steps=30, eval_every=30)
    summary = run(config, optimizer_factory=adamw(1e-2))
    assert summary["params"] - summary["non_embedding_params"] == 2 * 300 * 16
    assert summary["final_val_loss"] < summary["initial_val_loss"] - 0.3


def test_device_is_validated_and_cpu_runs(tmp_path):
    with pytest.raises(ValueError, match="not a torch device"):
        run(tiny(tmp_path, device="gpu0"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use --device cpu"):
            run(tiny(tmp_path, device="cuda"))
    assert run(tiny(tmp_path, steps=2, device="cpu"), optimizer_factory=adamw())["steps"] == 2


@pytest.mark.slow
def test_sigterm_to_a_training_process_then_resume_in_a_new_one(tmp_path):
    """A real signal from outside, a resume in a fresh process: the losses still match."""
    import subprocess
    import sys
    import time

    # checkpoint_every flushes metrics.jsonl early (it is buffered), so the signal below lands
    # mid-run however fast the machine is; it does not change the updates (resume-free field).
    config = tiny(
        tmp_path, "killed", steps=300, eval_every=100, width=32, heads=2, checkpoint_every=10
    )
    script = (
        "import sys, torch; from everyscale.train import TrainConfig, run; "
        "c = TrainConfig.from_json(sys.argv[1]); "
        "run(c, optimizer_factory=lambda m: torch.optim.AdamW(m.parameters(), lr=3e-3))"
    )
    config_path = tmp_path / "killed.json"
    config.to_json(config_path)
    process = subprocess.Popen([sys.executable, "-c", script, str(config_path)])
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.stat().st_size) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    stopped = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and 0 < stopped["steps"] < 300

    config.resume = True
    config.to_json(config_path)
    subprocess.run([sys.executable, "-c", script, str(config_path)], check=True, timeout=600)
    reference = tiny(tmp_path, "reference", steps=300, eval_every=100, width=32, heads=2)
    run(reference, optimizer_factory=adamw())
    assert without_time(rows(config)) == without_time(rows(reference))
