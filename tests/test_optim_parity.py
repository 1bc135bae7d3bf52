"""Presets against their torch.optim counterparts: 20 steps, same seed, same inputs.

Both sides train the same small network from the same initialization on the same batches;
after 20 steps every parameter must agree to 1e-6 (both in float32). Muon's reference runs
Newton-Schulz in bfloat16; see ``test_muon_matches_torch_muon_bfloat16`` for its tolerance.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import everyscale
from everyscale.optim import optimizer as make_optimizer

STEPS = 20


# Layer widths: the first weight (16 x 6) is tall, the others wide.
WIDTHS = (6, 16, 12, 3)
# Only wide matrices: see test_muon_matches_torch_muon_float32.
WIDE = (16, 12, 8, 3)


def _model(bias: bool = True, widths: tuple[int, ...] = WIDTHS) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(widths):
        layers += [nn.Linear(d_in, d_out, bias=bias), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def _batches(d_in: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, d_in, generator=gen), torch.randint(0, 3, (8,), generator=gen))
        for _ in range(STEPS)
    ]


def _train(opt_factory, bias: bool = True, widths: tuple[int, ...] = WIDTHS) -> list[torch.Tensor]:
    model = _model(bias, widths)
    opt = opt_factory(model)
    for x, y in _batches(widths[0]):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _moved(params: list[torch.Tensor], bias: bool = True, widths=WIDTHS) -> float:
    """How far training moved the weights (guards against a parity test of two no-ops)."""
    return _max_diff(params, [p.detach() for p in _model(bias, widths).parameters()])


SGD_SETTINGS = [
    {"momentum": 0.0},
    {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05},
    {"momentum": 0.5, "dampening": 0.5},
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "settings", SGD_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_sgd_matches_torch_sgd(settings, foreach):
    ours = _train(
        lambda m: make_optimizer(m.parameters(), "sgd", lr=0.1, foreach=foreach, **settings)
    )
    theirs = _train(lambda m: torch.optim.SGD(m.parameters(), lr=0.1, foreach=foreach, **settings))
    assert _moved(theirs) > 1e-2
    assert _max_diff(ours, theirs) < 1e-6


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_matches_torch_adamw(weight_decay, foreach):
    kwargs = {"betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": weight_decay}
    ours = _train(lambda m: make_optimizer(m, "adamw", lr=1e-2, foreach=foreach, **kwargs))
    theirs = _train(lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, foreach=foreach, **kwargs))
    assert _moved(theirs) > 1e-2
    assert _max_diff(ours, theirs) < 1e-6


def test_adamw_preset_is_reachable_from_package_root():
    ours = _train(lambda m: everyscale.optimizer(m, "adamw", lr=1e-2))
    theirs = _train(lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2))
    assert _max_diff(ours, theirs) < 1e-6


def _float32_newton_schulz(grad, ns_coefficients, ns_steps, eps):
    """torch.optim.Muon's Newton-Schulz written out in float32 (the test's reference).

    Jordan et al. 2024: X = G / (||G||_F + eps) (transposed if tall), then
    ``ns_steps`` times A = X X^T, X <- a X + (b A + c A^2) X, in torch's op order. One detail
    follows Jordan rather than torch: torch divides by ``max(||G||_F, eps)``; the two differ by
    a relative 1e-7 / ||G||_F, which the iteration (slope ~ a^5 near zero) amplifies past 1e-6
    in float32. In bfloat16 the difference rounds away, and the bfloat16 test below runs the
    real torch.optim.Muon.
    """
    a, b, c = ns_coefficients
    x = grad.float()
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    if grad.size(0) > grad.size(1):
        x = x.T
    return x


MUON_CASES = [None, "original", "match_rms_adamw"]
# torch.optim.Muon's exact recipe (Jordan's coefficients in Muon's order of operations); the
# preset's default is the faster Polar Express in the dtype the machine computes fastest.
TORCH_RECIPE = {"ns_method": "newton_schulz"}
FLOAT32_RECIPE = {**TORCH_RECIPE, "ns_dtype": "float32"}


def _muon_pair(kwargs, widths, ours_extra=None):
    ours = _train(
        lambda m: make_optimizer(
            list(m.parameters()), "muon", lr=0.02, **kwargs, **(ours_extra or {})
        ),
        bias=False,
        widths=widths,
    )
    theirs = _train(
        lambda m: torch.optim.Muon(m.parameters(), lr=0.02, **kwargs), bias=False, widths=widths
    )
    assert _moved(theirs, bias=False, widths=widths) > 1e-2
    return ours, theirs


@pytest.mark.parametrize("adjust_lr_fn", MUON_CASES)
def test_muon_matches_torch_muon_float32(adjust_lr_fn, monkeypatch):
    """Our float32 Newton-Schulz against torch.optim.Muon with its iteration run in float32.

    Wide matrices only: for a tall one torch's first product runs on a transposed (column-major)
    view while ours starts from a contiguous copy, so the float32 BLAS sums in another order
    (about 4e-7 per call, measured), which 20 steps of Newton-Schulz amplify past 1e-6; see
    the next test for that case.
    """
    kwargs = {"momentum": 0.9, "weight_decay": 0.05, "ns_steps": 5, "adjust_lr_fn": adjust_lr_fn}
    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", _float32_newton_schulz)
    ours, theirs = _muon_pair(kwargs, WIDE, FLOAT32_RECIPE)
    assert _max_diff(ours, theirs) < 1e-6


def test_muon_matches_torch_muon_float32_tall_matrix(monkeypatch):
    """With a tall matrix: the same up to the summation order of float32 products (1e-5)."""
    kwargs = {"momentum": 0.9, "weight_decay": 0.05}
    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", _float32_newton_schulz)
    ours, theirs = _muon_pair(kwargs, WIDTHS, FLOAT32_RECIPE)
    assert _max_diff(ours, theirs) < 1e-5


@pytest.mark.parametrize("adjust_lr_fn", MUON_CASES)
def test_muon_matches_torch_muon_bfloat16(adjust_lr_fn):
    """Both sides in bfloat16 Newton-Schulz, the real torch.optim.Muon, tall matrix included.

    Same sequence of bfloat16 mm/addmm calls (a tall matrix is orthogonalized through its
    transpose, as torch does), so the trajectories agree to float32 rounding: 1e-6
    (measured: bit-for-bit equal).
    """
    kwargs = {"momentum": 0.95, "weight_decay": 0.1, "adjust_lr_fn": adjust_lr_fn}
    ours, theirs = _muon_pair(kwargs, WIDTHS, {**TORCH_RECIPE, "ns_dtype": torch.bfloat16})
    assert _max_diff(ours, theirs) < 1e-6


def test_muon_foreach_batches_same_shapes_and_matches_loop():
    """The foreach path orthogonalizes same-shape matrices together; same result to 1e-6."""

    def build(foreach):
        def factory(m):
            return make_optimizer(list(m.parameters()), "muon", lr=0.02, foreach=foreach)

        return factory

    def train(foreach):
        torch.manual_seed(0)
        model = nn.Sequential(*[nn.Linear(8, 8, bias=False) for _ in range(3)])
        opt = build(foreach)(model)
        gen = torch.Generator().manual_seed(1)
        for _ in range(10):
            opt.zero_grad()
            model(torch.randn(4, 8, generator=gen)).pow(2).mean().backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    calls = []
    import everyscale.optim.polar as polar

    original = polar.polar_factor

    def counting(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return original(x, *args, **kwargs)

    polar.polar_factor = counting
    try:
        batched = train(True)
        batched_calls = list(calls)
        calls.clear()
        looped = train(False)
    finally:
        polar.polar_factor = original
    assert batched_calls == [(3, 8, 8)] * 10  # one batched call per step
    assert calls == [(8, 8)] * 30
    assert _max_diff(batched, looped) < 1e-6
