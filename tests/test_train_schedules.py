"""Schedules hit their endpoints and shapes; batch-size rules follow Granziol et al. 2022.

(The maximal lr grows like sqrt(B) for adaptive and sign methods, like B for SGD.)
"""

import itertools
import math

import pytest
import torch

from everyscale.train.schedules import (
    SCHEDULES,
    batch_size_rule,
    get_schedule,
    scale_lr_for_batch_size,
)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_decaying_schedules_start_at_one_and_end_at_zero(name):
    f = get_schedule(name, 100)
    assert f(0) == 1.0
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    values = [f(s) for s in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values)), "must decrease monotonically"
    assert f(50) == pytest.approx(0.5)  # both pass through one half at mid-training


def test_constant_is_one_everywhere():
    f = get_schedule("constant", 10)
    assert [f(s) for s in range(11)] == [1.0] * 11


def test_wsd_warmup_stable_then_linear_cooldown_to_zero():
    f = get_schedule("wsd", 100, warmup=0.1, cooldown=0.3)
    assert f(0) == pytest.approx(0.1)  # (0 + 1) / 10: the first step already moves
    assert f(9) == 1.0
    assert all(f(s) == 1.0 for s in range(10, 71))
    assert f(85) == pytest.approx(0.5)
    assert f(100) == 0.0
    assert f(99) == pytest.approx(1 / 30)


def test_wsd_with_the_whole_run_as_cooldown_is_linear_decay():
    wsd, linear = get_schedule("wsd", 40, cooldown=1.0), get_schedule("linear", 40)
    assert [wsd(s) for s in range(41)] == pytest.approx([linear(s) for s in range(41)])


def test_warmup_then_cosine_decays_over_the_remaining_steps():
    f = get_schedule("cosine", 100, warmup=0.2)
    assert f(19) == 1.0
    assert f(20) == 1.0
    assert f(60) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", SCHEDULES)
def test_a_warmup_that_rounds_to_the_whole_run_still_ends_at_the_endpoint(name):
    f = get_schedule(name, 10, warmup=0.95)  # round(9.5) = 10 warmup steps, no decay phase
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f(10) == (1.0 if name in ("constant", "wsd") else 0.0)


def test_schedule_drives_torch_lambda_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, get_schedule("linear", 4))
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.2, 0.15, 0.1, 0.05])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "step"}, "unknown schedule"),
        ({"total_steps": 0}, "total_steps"),
        ({"warmup": 1.5}, "warmup"),
        ({"cooldown": 0.2}, "wsd schedule only"),
        ({"name": "wsd", "warmup": 0.6, "cooldown": 0.5}, "sum <= 1"),
        ({"warmup": 1.0}, "warmup < 1"),
        ({"warmup": math.nan}, "warmup"),
    ],
)
def test_bad_schedule_arguments_are_refused(kwargs, match):
    args = {"name": "cosine", "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        get_schedule(**args)


def test_all_schedules_listed_are_buildable():
    for name in SCHEDULES:
        assert get_schedule(name, 5)(0) > 0


def test_batch_size_rules():
    assert batch_size_rule("sgd") == "linear"
    assert batch_size_rule("adamw") == batch_size_rule("scion") == "sqrt"
    assert scale_lr_for_batch_size(0.01, 128, 32, "sqrt") == pytest.approx(0.02)
    assert scale_lr_for_batch_size(0.01, 128, 32, "linear") == pytest.approx(0.04)
    with pytest.raises(ValueError, match="rule"):
        scale_lr_for_batch_size(0.01, 128, 32, "cubic")
    with pytest.raises(ValueError, match="batch sizes"):
        scale_lr_for_batch_size(0.01, 0, 32)
