"""state_dict round trips: stop after k steps, resume (same process or a fresh one), compare.

The resumed run must equal the uninterrupted run bit for bit (``torch.equal``), and the saved
state must load with ``torch.load(weights_only=True)`` (norms are stored as plain data).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from everyscale.optim import optimizer as make_optimizer

SHAPE = {"width": 16, "depth": 2, "heads": 2, "context": 8, "vocab": 32}
TOTAL, SPLIT = 6, 3


def _model(seed: int = 0) -> nn.Module:
    from everyscale.train.models import build_model

    torch.manual_seed(seed)
    return build_model("gpt", **SHAPE)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for k in steps:
        gen = torch.Generator().manual_seed(100 + k)  # batch k is the same in every run
        tokens = torch.randint(0, SHAPE["vocab"], (2, SHAPE["context"]), generator=gen)
        opt.zero_grad()
        logits = model(tokens)
        loss = nn.functional.cross_entropy(logits.reshape(-1, SHAPE["vocab"]), tokens.reshape(-1))
        loss.backward()
        opt.step()


PRESETS = [
    ("scion", {}),
    ("clipped_scion", {"radius": 0.5}),
    ("muon", {}),
    ("adamw", {"weight_decay": 0.1}),
    ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("lion", {}),
    ("shampoo", {"precondition_every": 2}),
    ("soap", {"precondition_every": 2}),
    ("normuon", {}),
]


def _setup(preset, options, seed=0):
    model = _model(seed)
    return model, make_optimizer(model, preset, lr=1e-2, **options)


@pytest.mark.parametrize(("preset", "options"), PRESETS, ids=[p for p, _ in PRESETS])
def test_resume_in_process_is_bit_for_bit(preset, options, tmp_path):
    model, opt = _setup(preset, options)
    _train(model, opt, range(TOTAL))
    reference = [p.detach().clone() for p in model.parameters()]

    model, opt = _setup(preset, options)
    _train(model, opt, range(SPLIT))
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)

    # A fresh model (other random init) and optimizer: only the checkpoint can make them equal.
    model, opt = _setup(preset, options, seed=1)
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    opt.load_state_dict(checkpoint["opt"])
    assert opt.steps_taken == SPLIT
    _train(model, opt, range(SPLIT, TOTAL))
    resumed = [p.detach() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(reference, resumed))

    # Losing the optimizer state (fresh momentum) must break the equality: the test can fail.
    model, opt = _setup(preset, options, seed=1)
    model.load_state_dict(checkpoint["model"])
    _train(model, opt, range(SPLIT, TOTAL))
    assert not all(torch.equal(a, p.detach()) for a, p in zip(reference, model.parameters()))


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    import test_optim_state as t
    model, opt = t._setup({preset!r}, {options!r}, seed=1)
    checkpoint = torch.load({path!r}, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    opt.load_state_dict(checkpoint["opt"])
    t._train(model, opt, range(t.SPLIT, t.TOTAL))
    torch.save([p.detach() for p in model.parameters()], {out!r})
    """
)


def test_resume_in_a_fresh_process_is_bit_for_bit(tmp_path):
    """Muon: Spectral groups and the AdamW geometry of the rest, in a new interpreter."""
    preset, options = PRESETS[2]
    model, opt = _setup(preset, options)
    _train(model, opt, range(TOTAL))
    reference = [p.detach().clone() for p in model.parameters()]

    model, opt = _setup(preset, options)
    _train(model, opt, range(SPLIT))
    path, out = tmp_path / "ckpt.pt", tmp_path / "resumed.pt"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)
    script = RESUME_SCRIPT.format(
        tests=str(Path(__file__).parent),
        preset=preset,
        options=options,
        path=str(path),
        out=str(out),
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    resumed = torch.load(out, weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(reference, resumed))


def test_state_dict_stores_norms_as_plain_data():
    _, opt = _setup("scion", {})
    state = opt.state_dict()
    norms = {(g["norm"], repr(g["norm_kwargs"])) for g in state["param_groups"]}
    assert ("sign", "{'normalized': True}") in norms
    assert all(isinstance(g["norm"], str) for g in state["param_groups"])
    record = state["everyscale"]
    assert (record["steps"], record["skipped_steps"], record["preconditioner_fallbacks"]) == (
        0,
        0,
        0,
    )
    assert record["preset"] == "scion"
    assert record["polar_dtype"]["dtype"] in ("float32", "bfloat16")  # chosen for ns_dtype="auto"


def test_skip_count_survives_state_dict(tmp_path):
    p = nn.Parameter(torch.ones(3, 3))
    opt = make_optimizer([p], "signum", lr=0.1, nonfinite="skip")
    p.grad = torch.full((3, 3), float("nan"))
    opt.step()
    p.grad = torch.ones(3, 3)
    opt.step()
    assert (opt.steps_taken, opt.skipped_steps) == (2, 1)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    fresh = make_optimizer([p], "signum", lr=0.1, nonfinite="skip")
    fresh.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert (fresh.steps_taken, fresh.skipped_steps) == (2, 1)
