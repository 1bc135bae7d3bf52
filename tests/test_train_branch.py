"""WSD branches and lengthened runs: a branch equals the run trained alone, bit for bit on the
CPU; schedules that cannot be continued are refused with the earlier run untouched."""

import json
import os
from pathlib import Path

import pytest
import torch

from everyscale.train import CheckpointError, TrainConfig, run
from everyscale.train.branch import branch, cooldown_start, snapshot_path, train_trunk
from everyscale.train.schedules import get_schedule
from tiny_runs import tiny_config

BRANCH_RUN = dict(steps=20, eval_every=5, schedule="wsd", cooldown=0.3, optimizer="adamw", lr=3e-3)


def tiny(tmp_path, name, **overrides) -> TrainConfig:
    return tiny_config(tmp_path, name, **{**BRANCH_RUN, **overrides})


def losses(config):
    with open(os.path.join(config.out, "metrics.jsonl")) as f:
        return [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in f
            if line.strip()
        ]


def weights(config):
    saved = torch.load(os.path.join(config.out, "checkpoint.pt"), weights_only=False)
    return saved["model"]


# ----------------------------------------------------------------------------- schedules


def test_sqrt_cooldown_is_one_minus_sqrt_of_the_progress():
    f = get_schedule("wsd", 100, cooldown_steps=20, cooldown_shape="sqrt")
    g = get_schedule("wsd", 100, cooldown_steps=20)
    assert f(80) == g(80) == 1.0
    assert f(85) == pytest.approx(1 - (5 / 20) ** 0.5)
    assert g(85) == pytest.approx(1 - 5 / 20)
    assert f(100) == pytest.approx(0.0)
    assert all(f(s) <= g(s) for s in range(101))  # 1 - sqrt drops fast, then lingers low


def test_absolute_warmup_does_not_grow_with_the_run():
    short = get_schedule("wsd", 40, warmup_steps=5, cooldown_steps=10)
    long = get_schedule("wsd", 80, warmup_steps=5, cooldown_steps=10)
    assert [short(s) for s in range(31)] == [long(s) for s in range(31)]
    with pytest.raises(ValueError, match="warmup_steps"):
        get_schedule("wsd", 10, warmup_steps=11)
    with pytest.raises(ValueError, match="cooldown_shape"):
        get_schedule("wsd", 10, cooldown_shape="cubic")
    with pytest.raises(ValueError, match="--steps"):
        get_schedule("wsd", 10, warmup_steps=6, cooldown_steps=6)


def test_power_decay_lowers_the_stable_phase_and_the_cooldown_starts_from_its_level():
    """(s / S0)^-b after S0; a run of T steps with S0 = 0.7 T0 ends its stable phase at
    (T / T0)^-b, and runs of every length agree step for step until their cooldown."""
    b, t0 = 0.5, 40
    f = {t: get_schedule("wsd", t, cooldown=0.3, power_decay=b, power_decay_from=28)
         for t in (40, 80, 160)}  # fmt: skip
    assert [f[40](s) for s in range(29)] == [1.0] * 29  # the shortest run is plain wsd
    for t, g in f.items():
        end_of_stable = g(round(0.7 * t))
        assert end_of_stable == pytest.approx((t / t0) ** -b)
        assert g(round(0.7 * t) + 1) < end_of_stable and g(t) == pytest.approx(0.0)
        assert [g(s) for s in range(round(0.7 * t) + 1)] == [
            f[160](s) for s in range(round(0.7 * t) + 1)
        ]
    assert get_schedule("constant", 100, power_decay=1.0, power_decay_from=10)(50) == 0.2
    with pytest.raises(ValueError, match="power_decay_from"):
        get_schedule("wsd", 100, power_decay=0.5)
    with pytest.raises(ValueError, match="power_decay applies"):
        get_schedule("cosine", 100, power_decay=0.5, power_decay_from=10)
    with pytest.raises(ValueError, match="power_decay must"):
        get_schedule("wsd", 100, power_decay=-0.5, power_decay_from=10)


# ----------------------------------------------------------------------------- branches


@pytest.mark.parametrize("decay", [{}, {"power_decay": 0.5, "power_decay_from": 5}])
def test_a_branch_equals_the_run_trained_alone_bit_for_bit(tmp_path, decay):
    trunk = tiny(tmp_path, "trunk", steps=20, **decay)
    short = tiny(tmp_path, "branch", steps=12, **decay)  # cooldown 0.3 -> 4 steps, from step 8
    alone = tiny(tmp_path, "alone", steps=12, **decay)
    start = cooldown_start(short)
    assert start == 8
    trunk_summary = train_trunk(trunk, [start])
    assert trunk_summary["status"] == "completed" and not trunk_summary["reused"]
    # The paused-and-resumed trunk is the trunk trained in one go.
    straight = run(tiny(tmp_path, "straight", steps=20, **decay))
    assert trunk_summary["final_val_loss"] == straight["final_val_loss"]

    summary = branch(
        snapshot_path(trunk.out, start), short, trunk_metrics=f"{trunk.out}/metrics.jsonl"
    )
    reference = run(alone)
    assert summary["final_val_loss"] == reference["final_val_loss"]
    assert summary["final_train_loss"] == reference["final_train_loss"]
    assert losses(short) == losses(alone)  # every step's loss and lr, the trunk's part included
    for name, tensor in weights(alone).items():
        assert torch.equal(weights(short)[name], tensor), name
    # A second call reuses the finished branch.
    again = branch(
        snapshot_path(trunk.out, start), tiny(tmp_path, "branch", steps=12, resume=True, **decay)
    )
    assert again["reused"] and again["final_val_loss"] == summary["final_val_loss"]


def test_a_branch_past_the_stable_phase_is_refused_and_nothing_is_touched(tmp_path):
    trunk = tiny(tmp_path, "trunk", steps=20)
    train_trunk(trunk, [8, 13])
    snapshot = snapshot_path(trunk.out, 13)
    before = snapshot.read_bytes()
    short = tiny(tmp_path, "branch", steps=12)  # its cooldown starts at step 8, not 13
    with pytest.raises(ValueError, match="step <= 8"):
        branch(snapshot, short)
    assert snapshot.read_bytes() == before
    assert not os.path.exists(short.out)
    # Other settings than the trunk's (not only the schedule): refused too.
    with pytest.raises(ValueError, match="width"):
        branch(snapshot_path(trunk.out, 8), tiny(tmp_path, "wide", steps=12, width=32, heads=2))
    with pytest.raises(FileNotFoundError, match="snapshot"):
        branch(snapshot_path(trunk.out, 5), short)
    with pytest.raises(ValueError, match="snapshot_steps"):
        train_trunk(tiny(tmp_path, "trunk2", steps=20), [20])


# ----------------------------------------------------------------------------- longer runs


def test_a_constant_run_resumed_with_more_steps_equals_the_longer_run(tmp_path):
    first = run(tiny(tmp_path, "grow", schedule="constant", cooldown=None, steps=10))
    assert first["status"] == "completed"
    longer = run(tiny(tmp_path, "grow", schedule="constant", cooldown=None, steps=16, resume=True))
    reference = run(tiny(tmp_path, "ref", schedule="constant", cooldown=None, steps=16))
    assert longer["steps"] == 16
    assert longer["final_val_loss"] == reference["final_val_loss"]


def test_a_wsd_run_in_its_stable_phase_may_be_lengthened_but_not_after_its_cooldown(tmp_path):
    # Stop a wsd run of 20 steps at step 6 (stable phase): with 30 steps it is the same run.
    train_trunk(tiny(tmp_path, "wsd", steps=20), [6])  # leaves a snapshot at step 6
    grown = tiny(tmp_path, "grown", steps=30)
    branch(snapshot_path(tmp_path / "wsd", 6), grown)
    assert (
        run(tiny(tmp_path, "ref30", steps=30))["final_val_loss"]
        == json.loads(Path(grown.out, "summary.json").read_text())["final_val_loss"]
    )
    # A finished wsd run has cooled down: more steps would make its learning rate jump.
    done = tiny(tmp_path, "done", steps=10)
    run(done)
    checkpoint = Path(done.out, "checkpoint.pt")
    before = checkpoint.read_bytes()
    with pytest.raises(CheckpointError, match="cannot continue under the new schedule"):
        run(tiny(tmp_path, "done", steps=20, resume=True))
    assert checkpoint.read_bytes() == before
    # A warmup given as a fraction grows with the run: refused, and the message says why.
    warm = tiny(tmp_path, "warm", schedule="constant", cooldown=None, warmup=0.5, steps=10)
    run(warm)
    with pytest.raises(CheckpointError, match="warmup-steps"):
        run(
            tiny(
                tmp_path,
                "warm",
                schedule="constant",
                cooldown=None,
                warmup=0.5,
                steps=20,
                resume=True,
            )
        )
