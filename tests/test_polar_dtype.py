"""The polar-factor dtype: chosen once per job (argument, environment, hardware, cached measure),
stored in the optimizer's state, agreed between ranks; and a preset's state is refused by another.

The measurement is replaced by fake timers (``measure=``), so every branch of the choice can be
driven both ways; the real probe runs once, in the test of ``time_polar_probes``.
"""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import everyscale.optim.polar_dtype as polar_dtype
from everyscale.optim import NormOptimizer
from everyscale.optim import optimizer as make_optimizer
from everyscale.optim.polar_dtype import (
    BFLOAT16_MARGIN,
    DTYPE_ENV,
    PolarDtypeChoice,
    choose_by_timings,
    choose_polar_dtype,
    device_key,
    time_polar_probes,
)


class FakeTimer:
    """``measure(device) -> (float32_seconds, bfloat16_seconds)`` that counts its calls."""

    def __init__(self, float32: float, bfloat16: float) -> None:
        self.times = (float32, bfloat16)
        self.calls = 0

    def __call__(self, device: torch.device) -> tuple[float, float]:
        self.calls += 1
        return self.times


def _never(device: torch.device) -> tuple[float, float]:
    raise AssertionError("the measurement should not have run")


@pytest.fixture(autouse=True)
def _no_dtype_env(monkeypatch):
    monkeypatch.delenv(DTYPE_ENV, raising=False)


# ------------------------------------------------------------------ the rule


@pytest.mark.parametrize(
    ("float32", "bfloat16", "expected"),
    [
        (3.0, 1.0, "bfloat16"),  # bf16 units: 3x faster
        (1.0, 60.0, "float32"),  # emulated bf16: 60x slower
        (1.0, 0.95, "float32"),  # a near tie goes to the more accurate float32
        (1.0, BFLOAT16_MARGIN, "bfloat16"),  # exactly at the margin
    ],
)
def test_choose_by_timings(float32, bfloat16, expected):
    choice = choose_by_timings(float32, bfloat16)
    assert choice.dtype == expected
    assert "ms in float32" in choice.reason and "ms in bfloat16" in choice.reason


@pytest.mark.parametrize(("timer", "expected"), [((1.0, 3.0), "float32"), ((3.0, 1.0), "bfloat16")])
def test_measured_choice_follows_the_timer_and_is_cached(tmp_path, timer, expected):
    fake = FakeTimer(*timer)
    flags = frozenset({"avx512_bf16"})  # has the units: the measurement decides
    first = choose_polar_dtype("cpu", cache_dir=tmp_path, measure=fake, cpu_flags=flags)
    assert first.dtype == expected and fake.calls == 1
    assert f"cached in {tmp_path}" in first.reason
    cached = json.loads((tmp_path / "polar_dtype.json").read_text())
    assert cached[device_key("cpu")]["dtype"] == expected
    # the next job on this machine reads the cache and does not measure again
    again = choose_polar_dtype("cpu", cache_dir=tmp_path, measure=_never, cpu_flags=flags)
    assert again.dtype == expected and "cached" in again.reason
    # another torch version (part of the key) is measured afresh
    other = FakeTimer(*reversed(timer))
    key = device_key("cpu")
    cached[key.replace(torch.__version__, "0.0.0")] = cached.pop(key)
    (tmp_path / "polar_dtype.json").write_text(json.dumps(cached))
    fresh = choose_polar_dtype("cpu", cache_dir=tmp_path, measure=other, cpu_flags=flags)
    assert fresh.dtype != expected and other.calls == 1


def test_cpu_without_bfloat16_units_is_float32_without_measuring(tmp_path):
    choice = choose_polar_dtype(
        "cpu", cache_dir=tmp_path, measure=_never, cpu_flags=frozenset({"avx2", "fma"})
    )
    assert choice.dtype == "float32" and "no bfloat16 units" in choice.reason
    assert not (tmp_path / "polar_dtype.json").exists()


def test_damaged_or_unwritable_cache_still_chooses(tmp_path):
    flags = frozenset({"amx_bf16"})
    (tmp_path / "polar_dtype.json").write_text("{not json")
    fake = FakeTimer(2.0, 1.0)
    assert choose_polar_dtype("cpu", cache_dir=tmp_path, measure=fake, cpu_flags=flags).dtype == (
        "bfloat16"
    )
    assert fake.calls == 1 and json.loads((tmp_path / "polar_dtype.json").read_text())
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    choice = choose_polar_dtype("cpu", cache_dir=blocked, measure=fake, cpu_flags=flags)
    assert choice.dtype == "bfloat16" and "not cached" in choice.reason


def test_argument_beats_environment_beats_measurement(tmp_path, monkeypatch):
    flags = frozenset({"avx512_bf16"})
    monkeypatch.setenv(DTYPE_ENV, "bfloat16")
    choice = choose_polar_dtype("cpu", cache_dir=tmp_path, measure=_never, cpu_flags=flags)
    assert choice == PolarDtypeChoice("bfloat16", f"environment variable {DTYPE_ENV}=bfloat16")
    forced = choose_polar_dtype("cpu", "float32", measure=_never)
    assert forced.dtype == "float32" and "ns_dtype='float32'" in forced.reason
    assert choose_polar_dtype("cpu", torch.float64, measure=_never).dtype == "float64"
    monkeypatch.setenv(DTYPE_ENV, "auto")  # auto in the environment: measure
    assert choose_polar_dtype("cpu", cache_dir=tmp_path, measure=FakeTimer(1, 9)).dtype == (
        "float32"
    )


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_unknown_dtype_names_its_source(monkeypatch, where):
    if where == "environment":
        monkeypatch.setenv(DTYPE_ENV, "float8")
        with pytest.raises(ValueError, match=f"environment variable {DTYPE_ENV}.*float8"):
            choose_polar_dtype("cpu")
    else:
        with pytest.raises(ValueError, match="ns_dtype must be 'auto' or one of"):
            choose_polar_dtype("cpu", "int8")


def test_real_probe_times_both_dtypes():
    float32, bfloat16 = time_polar_probes(torch.device("cpu"), rounds=1)
    assert 0 < float32 < 10 and 0 < bfloat16 < 60
    assert torch.get_num_threads() == 1  # restored (the session runs tests on one thread)


# ------------------------------------------------------------------ in the optimizer


def _gpt(seed: int = 0) -> nn.Module:
    from everyscale.train.models import build_model

    torch.manual_seed(seed)
    return build_model("gpt", width=16, depth=2, heads=2, context=8, vocab=32)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for k in steps:
        tokens = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(k))
        opt.zero_grad()
        logits = model(tokens)
        nn.functional.cross_entropy(logits.reshape(-1, 32), tokens.reshape(-1)).backward()
        opt.step()


def _polar_dtypes(opt) -> set[str]:
    return {g["norm_kwargs"]["dtype"] for g in opt.param_groups if "method" in g["norm_kwargs"]}


@pytest.mark.parametrize("preset", ["muon", "scion"])
def test_auto_is_resolved_once_per_optimizer_and_described(monkeypatch, preset, capsys):
    calls = []

    def choose(device):
        calls.append(device)
        return PolarDtypeChoice("bfloat16", "a fake machine with fast bfloat16")

    monkeypatch.setattr(sys.modules[NormOptimizer.__module__], "choose_polar_dtype", choose)
    opt = make_optimizer(_gpt(), preset)
    assert _polar_dtypes(opt) == {"bfloat16"} and len(calls) == 1
    assert opt.polar_dtype.reason == "a fake machine with fast bfloat16"
    opt.add_param_group({"params": [("extra", nn.Parameter(torch.randn(4, 6)))], "norm": "spectral",
                         "norm_kwargs": {"dtype": "auto"}, "preset": preset})  # fmt: skip
    assert _polar_dtypes(opt) == {"bfloat16"} and len(calls) == 1  # the job's one choice

    from everyscale.optim import describe

    text = describe(_gpt(), preset)
    assert "polar_express, 5 steps, in bfloat16 (a fake machine with fast bfloat16)" in text
    forced = describe(_gpt(), preset, ns_dtype="float32", ns_method="newton_schulz")
    assert "newton_schulz, 5 steps, in float32 (asked for)" in forced
    capsys.readouterr()


def test_resumed_run_keeps_its_dtype_on_a_machine_that_would_choose_another(tmp_path, monkeypatch):
    monkeypatch.setenv(DTYPE_ENV, "bfloat16")  # the machine the run started on
    model = _gpt()
    opt = make_optimizer(model, "muon")
    _train(model, opt, range(5))
    reference = [p.detach().clone() for p in model.parameters()]

    model = _gpt()
    opt = make_optimizer(model, "muon")
    _train(model, opt, range(2))
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)

    monkeypatch.setenv(DTYPE_ENV, "float32")  # the machine it resumes on
    checkpoint = torch.load(path, weights_only=True)
    model = _gpt(seed=1)
    opt = make_optimizer(model, "muon")
    assert _polar_dtypes(opt) == {"float32"}
    model.load_state_dict(checkpoint["model"])
    opt.load_state_dict(checkpoint["opt"])
    assert _polar_dtypes(opt) == {"bfloat16"} and opt.polar_dtype.dtype == "bfloat16"
    _train(model, opt, range(2, 5))
    assert all(torch.equal(a, b.detach()) for a, b in zip(reference, model.parameters()))

    # without the checkpoint's dtype (float32 from step 2 on) the run differs: the test can fail
    model = _gpt(seed=1)
    opt = make_optimizer(model, "muon")
    model.load_state_dict(checkpoint["model"])
    state = checkpoint["opt"]
    state["param_groups"] = [
        {**g, "norm_kwargs": {**g["norm_kwargs"], "dtype": "float32"}}
        if "method" in g["norm_kwargs"] else g
        for g in state["param_groups"]
    ]  # fmt: skip
    opt.load_state_dict(state)
    _train(model, opt, range(2, 5))
    assert not all(torch.equal(a, b.detach()) for a, b in zip(reference, model.parameters()))


# ------------------------------------------------------------------ another preset's state


def test_state_of_another_preset_is_refused_with_both_names():
    model = _gpt()
    adamw = make_optimizer(model, "adamw")
    _train(model, adamw, range(1))
    scion = make_optimizer(model, "scion")
    before = [dict(g) for g in scion.param_groups]
    with pytest.raises(ValueError, match=r"saved by the 'adamw' preset.*is the 'scion' preset"):
        scion.load_state_dict(adamw.state_dict())
    assert [g["norm"] for g in scion.param_groups] == [g["norm"] for g in before]  # unchanged
    # a checkpoint written before the preset was recorded: the groups still name it
    old_style = adamw.state_dict()
    del old_style["everyscale"]["preset"]
    with pytest.raises(ValueError, match=r"'adamw'.*'scion'"):
        scion.load_state_dict(old_style)
    # the same preset loads
    again = make_optimizer(model, "adamw")
    again.load_state_dict(adamw.state_dict())
    assert again.preset == "adamw" and again.steps_taken == 1


# ------------------------------------------------------------------ ranks agree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, cache_dir: str, results) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # rank 0 measures fast bfloat16, rank 1 the opposite (a near tie measured twice)
        timer = FakeTimer(3.0, 1.0) if rank == 0 else FakeTimer(1.0, 3.0)
        flags = frozenset({"avx512_bf16"})
        directory = os.path.join(cache_dir, str(rank))
        choice = choose_polar_dtype("cpu", cache_dir=directory, measure=timer, cpu_flags=flags)
        results[rank] = (choice.dtype, choice.reason)
    finally:
        dist.destroy_process_group()


def test_every_rank_takes_rank_zeros_choice(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(_free_port(), str(tmp_path), results), nprocs=2)
        results = dict(results)
    assert results[0][0] == results[1][0] == "bfloat16"
    assert results[1][1].startswith("rank 0's choice")


def test_no_distributed_means_no_broadcast():
    choice = PolarDtypeChoice("float32", "x")
    assert polar_dtype.agree_across_ranks(choice) is choice
