"""The template's steps and the formula presets, written out by hand in the tests.

Each test drives ``NormOptimizer`` with known gradients and recomputes the expected iterate
from the formulas of Pethick et al. 2025 ([S]; clipped: Pethick et al., arXiv 2506.01913,
[G]; Chen et al. 2023 for Lion).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from everyscale.optim import NormOptimizer
from everyscale.optim import optimizer as make_optimizer
from everyscale.optim.norms import RMS, ColNorm, Euclidean, RowNorm, Sign, Spectral

STEPS = 12


def _grads(shape, steps=STEPS, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(shape, generator=gen) for _ in range(steps)]


def _run(opt: torch.optim.Optimizer, p: torch.Tensor, grads) -> list[torch.Tensor]:
    """Apply the given gradients one step each; return the iterates after every step."""
    history = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        history.append(p.detach().clone())
    return history


def _param(shape, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return nn.Parameter(0.1 * torch.randn(shape, generator=gen))


# ------------------------------------------------------------------ constrained / clipped

CONSTRAINED = [
    ("spectral-svd", Spectral(method="svd"), (6, 9)),
    ("spectral-polar-express", Spectral(method="polar_express", steps=8), (9, 6)),
    ("colnorm", ColNorm(transpose=True), (10, 4)),
    ("rownorm", RowNorm(), (5, 7)),
    ("sign-head", Sign(normalized=True), (5, 7)),
    ("rms", RMS(), (8,)),
    ("euclidean", Euclidean(), (3, 4)),
]


@pytest.mark.parametrize(("label", "norm", "shape"), CONSTRAINED, ids=[c[0] for c in CONSTRAINED])
def test_constrained_step_keeps_iterates_in_the_ball(label, norm, shape):
    """W <- (1 - lr) W + lr rho lmo(d) is a convex combination of points of the rho-ball."""
    radius = 3.0
    p = _param(shape)
    with torch.no_grad():
        norm.init_(p, radius=radius)  # start on the sphere: the hardest case
    opt = NormOptimizer([p], lr=0.3, norm=norm, radius=radius, step="constrained", momentum=0.5)
    history = _run(opt, p, _grads(shape, scale=5.0))
    # Polar Express is approximate (singular values within ~1e-3 of 1 after 8 steps).
    slack = 1e-2 if "polar" in label else 1e-5
    for w in history:
        assert float(norm.norm(w)) <= radius * (1 + slack)
    assert float(norm.norm(history[-1])) > 0.5 * radius  # it did move toward the boundary


def test_unconstrained_step_formula():
    """W <- W + lr rho lmo(d) with d the EMA momentum (spectral, exact polar factor)."""
    norm, lr, radius, beta = Spectral(method="svd"), 0.05, 2.0, 0.8
    p = _param((4, 6))
    w, d = p.detach().clone(), torch.zeros(4, 6)
    opt = NormOptimizer([p], lr=lr, norm=norm, radius=radius, momentum=beta)
    for g, got in zip(_grads((4, 6)), _run(opt, p, _grads((4, 6)))):
        d = (1 - beta) * g + beta * d
        u, _, vh = torch.linalg.svd(d, full_matrices=False)
        w = w - lr * radius * math.sqrt(4 / 6) * (u @ vh)
        torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)


def _steepest_descent(shape, norm, lr, grads, p0):
    """W <- W - lr d#, d# = ||d||_* (-lmo(d)) (exact dual norm)."""
    w = p0.clone()
    out = []
    for g in grads:
        w = w + lr * norm.dual_norm(g) * norm.lmo(g)
        out.append(w.clone())
    return out


@pytest.mark.parametrize(
    ("norm", "shape"),
    [(Spectral(method="svd"), (5, 3)), (ColNorm(), (4, 6)), (Sign(normalized=True), (3, 5))],
    ids=["spectral", "colnorm", "sign"],
)
def test_clipped_step_is_steepest_descent_below_the_radius(norm, shape):
    lr, grads = 0.01, _grads(shape, seed=2)
    p = _param(shape)
    expected = _steepest_descent(shape, norm, lr, grads, p.detach().clone())
    radius = 10 * max(float(norm.dual_norm(g)) for g in grads)  # every ||d||_* < radius
    opt = NormOptimizer([p], lr=lr, norm=norm, radius=radius, step="clipped")
    for got, want in zip(_run(opt, p, grads), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # The "sharp" step of the same norm is the same steepest descent.
    q = _param(shape)
    sharp = NormOptimizer([q], lr=lr, norm=norm, step="sharp")
    for got, want in zip(_run(sharp, q, grads), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_clipped_step_is_unconstrained_above_the_radius():
    norm, lr, shape = Spectral(method="svd"), 0.01, (5, 3)
    grads = _grads(shape, seed=3)
    radius = 0.1 * min(float(norm.dual_norm(g)) for g in grads)  # every ||d||_* > radius
    p, q = _param(shape), _param(shape)
    clipped = _run(NormOptimizer([p], lr=lr, norm=norm, radius=radius, step="clipped"), p, grads)
    plain = _run(NormOptimizer([q], lr=lr, norm=norm, radius=radius), q, grads)
    for a, b in zip(clipped, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ formula presets


def test_normalized_sgd_formula():
    lr, beta, shape = 0.1, 0.9, (3, 4)
    p = _param(shape)
    w, d = p.detach().clone(), torch.zeros(shape)
    opt = make_optimizer([p], "normalized_sgd", lr=lr, momentum=beta)
    grads = _grads(shape, seed=4)
    for g, got in zip(grads, _run(opt, p, grads)):
        d = beta * d + (1 - beta) * g
        w = w - lr * d / d.norm()
        torch.testing.assert_close(got, w)


@pytest.mark.parametrize("preset", ["signsgd", "signum"])
def test_sign_presets_formula(preset):
    lr, shape = 0.01, (3, 4)
    beta = 0.0 if preset == "signsgd" else 0.9
    p = _param(shape)
    w, m = p.detach().clone(), torch.zeros(shape)
    opt = make_optimizer([p], preset, lr=lr, weight_decay=0.1)
    grads = _grads(shape, seed=5)
    for g, got in zip(grads, _run(opt, p, grads)):
        m = beta * m + (1 - beta) * g
        w = w * (1 - lr * 0.1) - lr * torch.sign(m)
        torch.testing.assert_close(got, w)


def test_lion_formula():
    """Chen et al. 2023, Alg. 2: c = b1 m + (1-b1) g; W <- W(1 - lr wd) - lr sign(c);
    m <- b2 m + (1-b2) g."""
    lr, wd, (b1, b2), shape = 1e-3, 0.5, (0.9, 0.99), (4, 3)
    p = _param(shape)
    w, m = p.detach().clone(), torch.zeros(shape)
    opt = make_optimizer([p], "lion", lr=lr, betas=(b1, b2), weight_decay=wd)
    grads = _grads(shape, seed=6)
    for g, got in zip(grads, _run(opt, p, grads)):
        c = b1 * m + (1 - b1) * g
        w = w * (1 - lr * wd) - lr * torch.sign(c)
        m = b2 * m + (1 - b2) * g
        torch.testing.assert_close(got, w)


def test_scion_formula_on_a_head_and_a_hidden_matrix():
    """Constrained Scion: W <- (1-lr) W + lr rho s lmo_0(d), Sign head s = 1/d_in."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.ReLU(), nn.Linear(8, 6, bias=False),
                          nn.ReLU(), nn.Linear(6, 3, bias=False))  # fmt: skip
    head = model[4].weight
    w, d = head.detach().clone(), torch.zeros_like(head)
    lr, beta = 0.01, 0.9
    opt = make_optimizer(model, "scion", lr=lr, radius=2.0, output_radius=7.0,
                         example_input=torch.randn(2, 5))  # fmt: skip
    gen = torch.Generator().manual_seed(7)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(4, 5, generator=gen)).pow(2).sum().backward()
        d = beta * d + (1 - beta) * head.grad
        opt.step()
        w = (1 - lr) * w - lr * 7.0 * torch.sign(d) / 6
        torch.testing.assert_close(head.detach(), w)


# ------------------------------------------------------------------ foreach == loop


@pytest.mark.parametrize("preset", ["scion", "uscion", "clipped_scion", "muon", "lion", "sgd"])
def test_foreach_path_matches_the_loop(preset):
    """Both code paths of every geometry a GPT uses (ColNorm, Spectral, Sign, RMS, Adam)."""
    from everyscale.train.models import build_model

    def train(foreach):
        torch.manual_seed(0)
        model = build_model("gpt", width=16, depth=2, heads=2, context=8, vocab=32)
        extra = {"momentum": 0.9, "nesterov": True} if preset == "sgd" else {}
        if preset in ("scion", "uscion", "clipped_scion", "muon"):
            # float32: in bfloat16 a batched product rounds differently from single ones
            extra["ns_dtype"] = "float32"
        opt = make_optimizer(model, preset, lr=1e-2, foreach=foreach, **extra)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            opt.zero_grad()
            tokens = torch.randint(0, 32, (2, 8), generator=gen)
            logits = model(tokens)
            nn.functional.cross_entropy(logits.reshape(-1, 32), tokens.reshape(-1)).backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    looped, fused = train(False), train(True)
    for a, b in zip(looped, fused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ every preset trains

# A learning rate per preset that suits this small problem (radius 1 for the Scion family:
# the nanoGPT radii 50/3000 are for GPT-2 small).
TRAIN_SETTINGS = {
    "sgd": (0.1, {"momentum": 0.9}),
    "normalized_sgd": (0.05, {}),
    "signsgd": (1e-2, {}),
    "signum": (1e-2, {}),
    "lion": (1e-2, {}),
    "adamw": (1e-2, {}),
    "muon": (0.05, {"rest_lr": 1e-2}),
    "scion": (0.05, {"radius": 1.0, "output_radius": 32.0}),
    "uscion": (0.05, {"radius": 1.0, "output_radius": 32.0}),
    "clipped_scion": (0.05, {"radius": 1.0, "output_radius": 32.0}),
}


@pytest.mark.parametrize("preset", list(TRAIN_SETTINGS))
def test_every_preset_reduces_the_training_loss(preset):
    """40 full-batch steps on a separable 4-class problem: a wrong sign or scale would not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 4))  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=gen)
    y = x[:, :4].argmax(1)
    lr, options = TRAIN_SETTINGS[preset]
    opt = make_optimizer(model, preset, lr=lr, example_input=x[:2], **options)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]
