"""The bench's pieces: search spaces, contenders, the trial clock, the Optuna harness."""

import itertools
import math
import os
import socket
from typing import ClassVar

import pytest
import schedulefree
import torch
from torch import nn

from everyscale.bench import BenchPlan, Range, builtin_workload, get_contender, run_trial
from everyscale.bench.optimizers import PEERS, Contender, _hidden_matrices
from everyscale.bench.space import FAMILY, parse_range, space_for
from everyscale.bench.study import Harness, open_storage, study_name
from everyscale.bench.trial import schedule_multiplier
from everyscale.bench.workloads import Workload, check_target
from everyscale.train import TrainConfig
from everyscale.train.models import build_model

ADAM = {"lr": 3e-3, "warmup": 0.05, "weight_decay": 0.0, "beta1": 0.9}


@pytest.fixture(scope="module")
def digits():
    return builtin_workload("digits")


# ----------------------------------------------------------------------------- spaces


def test_every_peer_and_preset_has_a_space():
    from everyscale.optim import PRESETS

    assert set(PEERS) <= set(FAMILY)
    for name in (*PRESETS, *PEERS):
        space = get_contender(name).space()
        assert "lr" in space and space["lr"].log


def test_a_preset_without_a_family_gets_the_fallback_around_its_default_lr():
    space = space_for("some_new_preset", default_lr=0.01)
    assert set(space) == {"lr", "warmup"}
    assert space["lr"].low == pytest.approx(0.01 / 30) and space["lr"].high == pytest.approx(0.3)


def test_signsgd_has_no_momentum_to_tune():
    assert "momentum" not in space_for("signsgd") and "momentum" in space_for("signum")


def test_parse_range_and_its_errors():
    assert parse_range("1e-4:1e-2:log", "adamw.lr") == Range(1e-4, 1e-2, True)
    assert parse_range("2^-12:2^-8", "scion.lr") == Range(2.0**-12, 2.0**-8)
    with pytest.raises(ValueError, match=r"adamw\.lr.*empty.*--space adamw\.lr=LOW:HIGH"):
        parse_range("1e-2:1e-4", "adamw.lr")
    with pytest.raises(ValueError, match="LOW > 0"):
        parse_range("0:1:log", "adamw.lr")
    with pytest.raises(ValueError, match="LOW:HIGH"):
        parse_range("0.1", "adamw.lr")


def test_schedule_warms_up_then_decays_to_zero():
    values = [schedule_multiplier(s, 100, 0.1) for s in range(101)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


# ----------------------------------------------------------------------------- contenders


def _tiny_gpt():
    torch.manual_seed(0)
    return build_model("gpt", width=16, depth=2, heads=2, context=8, vocab=32)


@pytest.mark.parametrize("name", sorted(PEERS))
def test_every_peer_steps_a_gpt(name):
    model = _tiny_gpt()
    contender = get_contender(name)
    hp = {
        k: (r.low * r.high) ** 0.5 if r.log else (r.low + r.high) / 2
        for k, r in contender.space().items()
    }
    opt = contender.build(model, hp, {}, 10)
    before = [p.detach().clone() for p in model.parameters()]
    if contender.schedule_free:
        opt.train()
    x = torch.randint(32, (2, 8))
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        model(x).logsumexp(-1).mean().backward()
        opt.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(moved), f"{name} left parameters unchanged"


def test_torch_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = _tiny_gpt()
    matrices, rest = _hidden_matrices(model)
    assert matrices and all(p.ndim == 2 for p in matrices)
    ids = {id(p) for p in matrices} | {id(p) for p in rest}
    assert ids == {id(p) for p in model.parameters()}  # nothing dropped
    in_muon = {id(p) for p in matrices}
    assert id(model.embed.weight) not in in_muon and id(model.head.weight) not in in_muon
    opt = get_contender("torch_muon").build(model, {"lr": 0.02, "adam_lr": 1e-3}, {}, 10)
    kinds = [type(o).__name__ for o in opt.optimizers]
    assert kinds == ["Muon", "AdamW"]
    assert {g["lr"] for g in opt.param_groups} == {0.02, 1e-3}


def test_unknown_optimizer_names_the_flag():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamx'.*--optimizers.*torch_adamw"):
        get_contender("adamx")


# ----------------------------------------------------------------------------- the trial


def test_a_trial_stops_at_the_target(digits):
    easy = digits.with_target(0.5)
    result = run_trial(easy, get_contender("torch_adamw"), dict(ADAM), seed=0)
    assert result.reached and not result.diverged
    assert result.steps_to_target % easy.eval_every == 0 and result.steps < easy.steps
    assert result.best_metric <= 0.5
    assert 0 < result.time_to_target == result.train_seconds


def test_a_miss_runs_the_whole_budget_and_scores_inf(digits):
    result = run_trial(digits.with_target(0.0), get_contender("torch_adamw"), dict(ADAM))
    assert not result.reached and result.steps == digits.steps
    assert result.time_to_target == math.inf and result.steps_to_target is None


def test_a_diverged_trial_is_a_miss(digits):
    result = run_trial(digits, get_contender("sgd"), {"lr": 1e12, "momentum": 0.9})
    assert result.diverged and not result.reached
    assert result.time_to_target == math.inf and "diverged" in result.message


def test_evaluation_time_is_left_out_of_the_clock(digits):
    slow_eval = Workload(**{**digits.__dict__, "eval_every": 1, "target": 0.0})
    result = run_trial(slow_eval, get_contender("torch_adamw"), dict(ADAM))
    assert result.eval_seconds > 0
    # the clock is the sum of the steps: evaluating at every step would otherwise dominate it
    assert result.train_seconds + result.compile_seconds < result.eval_seconds * 20


class _RecordingSF(schedulefree.AdamWScheduleFree):
    calls: ClassVar[list[str]] = []

    def train(self):
        self.calls.append("train")
        return super().train()

    def eval(self):
        self.calls.append("eval")
        return super().eval()


def test_schedule_free_is_evaluated_in_eval_mode(digits):
    _RecordingSF.calls = []
    contender = Contender(
        "sf",
        "recording",
        lambda model, hp, options, steps: _RecordingSF(model.parameters(), lr=hp["lr"]),
        schedule_free=True,
    )
    workload = Workload(**{**digits.__dict__, "eval_every": 20, "target": 0.0})
    run_trial(workload, contender, {"lr": 1e-2})
    evaluations = workload.steps // workload.eval_every
    assert _RecordingSF.calls == ["train"] + ["eval", "train"] * evaluations


def test_a_users_own_workload_with_a_model_factory():
    workload = Workload(
        "mine",
        TrainConfig(model="mlp", data="digits", batch_size=32, steps=60),
        target=0.5,
        metric="val_error",
        model_factory=lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
        ),
        eval_every=10,
    )
    result = run_trial(workload, get_contender("adamw"), dict(ADAM))
    assert result.reached and result.steps <= 60


def test_a_target_no_reference_reached_is_refused(digits):
    assert digits.reference  # the built-ins carry their reference values
    check_target(digits)
    with pytest.raises(ValueError, match=r"--target digits=0\.01: no reference run reached it"):
        check_target(digits.with_target(0.01))


# ----------------------------------------------------------------------------- the harness


def test_a_storage_that_cannot_be_opened_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--storage"):
        open_storage(f"sqlite:///{tmp_path}/missing/folder/x.db")
    with pytest.raises(ValueError, match="--storage"):
        open_storage("nosuchdb://somewhere")


def test_a_plan_with_an_empty_range_names_the_flag(digits):
    plan = BenchPlan([digits], ["adamw"], spaces={"adamw": {"lr": Range(1e-2, 1e-3, True)}})
    with pytest.raises(ValueError, match=r"adamw\.lr.*empty"):
        plan.check()


def test_an_option_fixes_a_tuned_hyperparameter(digits):
    plan = BenchPlan([digits], ["adamw"], options={"adamw": {"lr": 1e-3, "eps": 1e-10}})
    space, fixed = plan.space_of("adamw")
    assert "lr" not in space and fixed == {"lr": 1e-3}
    assert plan.passthrough_options("adamw") == {"eps": 1e-10}


def test_a_trial_killed_mid_run_is_rerun_with_its_parameters(tmp_path, digits):
    plan = BenchPlan([digits], ["torch_adamw"], trials=2, studies=1)
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    harness = Harness(plan, storage, progress=False)
    study = harness.study(digits, "torch_adamw", 0)
    assert study.study_name == study_name("digits", "torch_adamw", 0)
    # A trial drawn by a process of this host that died before telling its result.
    dead = harness._claim(study)
    drawn = {
        k: dead.suggest_float(k, r.low, r.high, log=r.log)
        for k, r in plan.space_of("torch_adamw")[0].items()
    }
    dead.set_user_attr("worker", f"{socket.gethostname()}:{_dead_pid()}")
    harness.run()
    finished = harness.finished(study)
    assert [t.number for t in finished] == [0, 1]
    assert finished[0].params == pytest.approx(drawn)  # rerun as drawn, not redrawn
    assert finished[0].result["hparams"]["lr"] == pytest.approx(drawn["lr"])
    # A second run has nothing left to do.
    Harness(plan, storage, progress=False).run()
    assert len(study.trials) == 2


def _dead_pid() -> int:
    pid = os.getpid() + 100_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1
