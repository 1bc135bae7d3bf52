"""Shampoo, SOAP and NorMuon: against slow float64 transcriptions of their papers' algorithms,
against the published implementations installed in the venv, and their own identities.

Every transcription below is written from the paper (one matrix, a quadratic loss so that the
gradient depends on the iterate, 20 steps, float64) and computes matrix functions its own
way (SciPy's ``fractional_matrix_power``, NumPy's ``eigh``/``qr``), not with everyscale's
helpers. Matrices are square where an eigenbasis must be unique: a rank-deficient factor has
a repeated zero eigenvalue, whose eigenvectors any two decompositions may rotate differently.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from everyscale.optim import NormOptimizer
from everyscale.optim import optimizer as make_optimizer
from everyscale.optim.normuon import normuon_kernel
from everyscale.optim.polar import polar_factor

STEPS = 20


def _problem(m: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``f(W) = ||A W - B||^2 / 2``: the start ``W0`` and ``A``, ``B`` (float64)."""
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((m, n)),
        rng.standard_normal((m + 3, m)),
        rng.standard_normal((m + 3, n)),
    )


def _gradient(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.T @ (a @ w - b)


def _run_ours(norm: str, w0, a, b, steps=STEPS, foreach=False, **group) -> np.ndarray:
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = NormOptimizer([w], norm=norm, step="sharp", foreach=foreach, **group)
    for _ in range(steps):
        w.grad = torch.tensor(_gradient(w.detach().numpy(), a, b))
        opt.step()
    return w.detach().numpy()


# ----------------------------------------------------------------------------- Shampoo
def _gupta_shampoo(w0, a, b, lr, eps) -> np.ndarray:
    """Gupta, Koren, Singer 2018, Algorithm 1 (matrix case), literally."""
    m, n = w0.shape
    w, left, right = w0.copy(), eps * np.eye(m), eps * np.eye(n)
    for _ in range(STEPS):
        g = _gradient(w, a, b)
        left = left + g @ g.T
        right = right + g.T @ g
        w = w - lr * np.real(
            scipy.linalg.fractional_matrix_power(left, -0.25)
            @ g
            @ scipy.linalg.fractional_matrix_power(right, -0.25)
        )
    return w


def _distributed_shampoo(w0, a, b, lr, wd, beta1, beta2, eps, every, graft_beta2, graft_eps):
    """Shi et al. 2023 (Distributed Shampoo, Sec. 2): EMA factors with bias correction, roots
    every ``every`` steps, filtered gradient, Adam grafting, decoupled weight decay."""
    m, n = w0.shape
    w, left, right = w0.copy(), np.zeros((m, m)), np.zeros((n, n))
    mom, v = np.zeros_like(w0), np.zeros_like(w0)
    for t in range(1, STEPS + 1):
        g = _gradient(w, a, b)
        left = beta2 * left + (1 - beta2) * g @ g.T
        right = beta2 * right + (1 - beta2) * g.T @ g
        if (t - 1) % every == 0:
            c = 1 - beta2**t
            p_left = np.real(
                scipy.linalg.fractional_matrix_power(left / c + eps * np.eye(m), -0.25)
            )
            p_right = np.real(
                scipy.linalg.fractional_matrix_power(right / c + eps * np.eye(n), -0.25)
            )
        mom = beta1 * mom + (1 - beta1) * g
        m_hat = mom / (1 - beta1**t)
        v = graft_beta2 * v + (1 - graft_beta2) * g * g
        adam = m_hat / (np.sqrt(v / (1 - graft_beta2**t)) + graft_eps)
        d = p_left @ m_hat @ p_right
        d = d * np.linalg.norm(adam) / np.linalg.norm(d)
        w = (1 - lr * wd) * w - lr * d
    return w


@pytest.mark.parametrize("foreach", [False, True])
def test_shampoo_matches_gupta_algorithm_1(foreach):
    w0, a, b = _problem(6, 4)
    lr, eps = 0.05, 1e-4
    kwargs = {"beta2": None, "epsilon": eps, "precondition_every": 1, "grafting": "none"}
    ours = _run_ours("shampoo", w0, a, b, foreach=foreach, lr=lr, norm_kwargs=kwargs)
    expected = _gupta_shampoo(w0, a, b, lr, eps)
    assert np.abs(ours - w0).max() > 0.1  # it moved
    assert np.abs(ours - expected).max() <= 1e-6


def test_shampoo_matches_distributed_shampoo_with_adam_grafting():
    w0, a, b = _problem(5, 5, seed=1)
    settings = {
        "lr": 0.02,
        "wd": 0.1,
        "beta1": 0.9,
        "beta2": 0.99,
        "eps": 1e-6,
        "every": 3,
        "graft_beta2": 0.999,
        "graft_eps": 1e-8,
    }
    kwargs = {
        "beta2": 0.99,
        "epsilon": 1e-6,
        "precondition_every": 3,
        "grafting": "adam",
        "graft_beta2": 0.999,
        "graft_eps": 1e-8,
    }
    ours = _run_ours(
        "shampoo", w0, a, b, lr=0.02, weight_decay=0.1, momentum=0.9, norm_kwargs=kwargs
    )
    assert np.abs(ours - _distributed_shampoo(w0, a, b, **settings)).max() <= 1e-6


@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (3, 5, 4)])
def test_shampoo_without_accumulation_is_the_polar_factor(shape):
    """beta2 = 0, exact roots, full-rank G, eps << s_min^2: the direction is U V^T."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(shape, dtype=torch.float64))
    grad = torch.randn(shape, dtype=torch.float64)
    kwargs = {"beta2": 0.0, "epsilon": 1e-13, "precondition_every": 1, "grafting": "none"}
    opt = NormOptimizer([w], lr=1.0, norm="shampoo", step="sharp", norm_kwargs=kwargs)
    before = w.detach().clone()
    w.grad = grad
    opt.step()
    direction = before - w.detach()
    assert torch.linalg.svdvals(grad).min() ** 2 > 1e-4  # eps is 1e9 times smaller
    polar = polar_factor(grad, method="svd")
    assert torch.allclose(direction, polar, atol=1e-6)  # scale 1 without grafting
    # and only the direction of the Spectral LMO: grafting changes the length, not U V^T
    kwargs["grafting"] = "sgd"
    w2 = torch.nn.Parameter(before.clone())
    opt = NormOptimizer([w2], lr=1.0, norm="shampoo", step="sharp", norm_kwargs=kwargs)
    w2.grad = grad
    opt.step()
    grafted = before - w2.detach()
    per_matrix = grafted.reshape(-1, *shape[-2:])
    scale = torch.linalg.matrix_norm(per_matrix) / torch.linalg.matrix_norm(
        polar.reshape(-1, *shape[-2:])
    )
    assert torch.allclose(
        per_matrix / scale[:, None, None], polar.reshape(per_matrix.shape), atol=1e-6
    )


def test_shampoo_matches_pytorch_optimizer_shampoo():
    """pytorch_optimizer's Shampoo is Gupta's (sums from eps I, roots by SVD, no grafting)."""
    from pytorch_optimizer import Shampoo as PeerShampoo

    w0, a, b = _problem(6, 4, seed=2)
    lr, eps = 0.05, 1e-4
    kwargs = {"beta2": None, "epsilon": eps, "precondition_every": 1, "grafting": "none"}
    ours = _run_ours("shampoo", w0, a, b, lr=lr, norm_kwargs=kwargs)
    w = torch.nn.Parameter(torch.tensor(w0))
    peer = PeerShampoo([w], lr=lr, matrix_eps=eps, preconditioning_compute_steps=1)
    for _ in range(STEPS):
        w.grad = torch.tensor(_gradient(w.detach().numpy(), a, b))
        peer.step()
    assert np.abs(ours - w.detach().numpy()).max() <= 1e-9


def test_shampoo_failed_decomposition_falls_back_to_the_grafted_step(monkeypatch):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 4))
    grad = torch.randn(6, 4)

    def fail(*args, **kwargs):
        raise torch.linalg.LinAlgError("did not converge")

    monkeypatch.setattr(torch.linalg, "eigh", fail)
    opt = NormOptimizer(
        [w],
        lr=0.1,
        norm="shampoo",
        step="sharp",
        momentum=0.0,
        norm_kwargs={"precondition_every": 1},
    )
    before = w.detach().clone()
    with pytest.warns(RuntimeWarning, match="could not be decomposed"):
        w.grad = grad.clone()
        opt.step()
    adam = grad / (grad.abs() + 1e-8)  # Adam's first step: m_hat / sqrt(v_hat)
    assert torch.allclose(before - w.detach(), 0.1 * adam, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        w.grad = grad.clone()
        opt.step()
    assert opt.preconditioner_fallbacks == 2
    assert opt.state_dict()["everyscale"]["preconditioner_fallbacks"] == 2


def test_shampoo_nonfinite_factors_never_reach_the_weights():
    """A finite gradient whose square overflows float32 makes L, R infinite."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 4))
    opt = make_optimizer([w], "shampoo", lr=1e-2, precondition_every=1)
    with pytest.warns(RuntimeWarning, match="shampoo preconditioner"):
        w.grad = torch.full((6, 4), 1e25)
        opt.step()
    assert torch.isfinite(w).all() and opt.preconditioner_fallbacks == 1
    for _ in range(3):  # the reset factors recover on ordinary gradients
        w.grad = torch.randn(6, 4)
        opt.step()
    assert torch.isfinite(w).all() and opt.preconditioner_fallbacks == 1


# ----------------------------------------------------------------------------- SOAP
def _vyas_soap(w0, a, b, lr, beta1, beta2, eps, shampoo_beta, every) -> np.ndarray:
    """Vyas et al. 2024, Algorithms 3-4 (first call initializes the bases; see soap.py)."""
    m, n = w0.shape
    w = w0.copy()
    left, right = np.zeros((m, m)), np.zeros((n, n))
    mom, v = np.zeros_like(w0), np.zeros_like(w0)
    g = _gradient(w, a, b)
    left = (1 - shampoo_beta) * g @ g.T
    right = (1 - shampoo_beta) * g.T @ g
    q_left = np.linalg.eigh(left)[1][:, ::-1]
    q_right = np.linalg.eigh(right)[1][:, ::-1]
    for k in range(1, STEPS):
        g = _gradient(w, a, b)
        g_rot = q_left.T @ g @ q_right
        mom = beta1 * mom + (1 - beta1) * g
        m_rot = q_left.T @ mom @ q_right
        v = beta2 * v + (1 - beta2) * g_rot * g_rot
        n_rot = m_rot / (np.sqrt(v) + eps)
        w = w - lr * np.sqrt(1 - beta2**k) / (1 - beta1**k) * (q_left @ n_rot @ q_right.T)
        left = shampoo_beta * left + (1 - shampoo_beta) * g @ g.T
        right = shampoo_beta * right + (1 - shampoo_beta) * g.T @ g
        if k % every == 0:
            order = np.argsort(-np.diag(q_left.T @ left @ q_left), kind="stable")
            v = v[order, :]
            q_left = np.linalg.qr((left @ q_left)[:, order])[0]
            order = np.argsort(-np.diag(q_right.T @ right @ q_right), kind="stable")
            v = v[:, order]
            q_right = np.linalg.qr((right @ q_right)[:, order])[0]
    return w


SOAP_SETTINGS = {
    "lr": 0.02,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "shampoo_beta": 0.9,
    "every": 3,
}


def _soap_group(settings=SOAP_SETTINGS) -> dict:
    return {
        "lr": settings["lr"],
        "betas": (settings["beta1"], settings["beta2"]),
        "eps": settings["eps"],
        "norm_kwargs": {
            "shampoo_beta": settings["shampoo_beta"],
            "precondition_every": settings["every"],
        },
    }


@pytest.mark.parametrize("foreach", [False, True])
def test_soap_matches_vyas_algorithm_3(foreach):
    w0, a, b = _problem(5, 5, seed=3)
    ours = _run_ours("soap", w0, a, b, foreach=foreach, **_soap_group())
    expected = _vyas_soap(w0, a, b, **SOAP_SETTINGS)
    assert np.abs(ours - w0).max() > 0.05
    assert np.abs(ours - expected).max() <= 1e-6


def test_soap_matches_pytorch_optimizer_soap():
    """Same algorithm and step order. Their QR runs in float32 (our bases stay float64 for
    float64 weights): after 20 steps the weights agree to about 2e-5 of the distance moved
    (to about 3e-7 when their QR is made to run in float64, checked by hand)."""
    from pytorch_optimizer import SOAP as PeerSOAP

    w0, a, b = _problem(5, 5, seed=3)
    s = SOAP_SETTINGS
    ours = _run_ours("soap", w0, a, b, **_soap_group())
    w = torch.nn.Parameter(torch.tensor(w0))
    peer = PeerSOAP(
        [w],
        lr=s["lr"],
        betas=(s["beta1"], s["beta2"]),
        eps=s["eps"],
        shampoo_beta=s["shampoo_beta"],
        precondition_frequency=s["every"],
        weight_decay=0.0,
    )
    for _ in range(STEPS):
        w.grad = torch.tensor(_gradient(w.detach().numpy(), a, b))
        peer.step()
    moved = np.abs(ours - w0).max()
    assert np.abs(ours - w.detach().numpy()).max() <= 1e-4 * moved


def test_soap_direction_against_heavyball_soap(monkeypatch):
    """heavyball's SOAP differs from the paper on purpose (docs/adaptive.md lists what we
    found): both moments live in the rotated basis and are rotated with it, the factors'
    EMA is bias-corrected, and its first two steps differ (its first call already moves by
    ~1e-7, ours not at all; the cosine of the two displacements is 0.46 after the second
    call). The paths converge: after 20 steps on a square matrix with the same betas and a
    basis refresh every step, the displacements point the same way (cosine 0.999 measured)."""
    import heavyball

    monkeypatch.setattr(heavyball.utils, "compile_mode", None)  # no torch.compile: seconds
    w0, a, b = _problem(5, 5, seed=4)
    settings = {**SOAP_SETTINGS, "every": 1}
    ours = _run_ours("soap", w0, a, b, **_soap_group(settings))
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float32))  # heavyball: float32 only
    peer = heavyball.SOAP(
        [w],
        lr=settings["lr"],
        betas=(0.9, 0.95),
        shampoo_beta=0.9,
        eps=1e-8,
        weight_decay=0.0,
        precondition_frequency=1,
    )
    for _ in range(STEPS):
        w.grad = torch.tensor(_gradient(w.detach().double().numpy(), a, b)).float()
        peer.step()
    ours_step, peer_step = (ours - w0).ravel(), (w.detach().double().numpy() - w0).ravel()
    cosine = ours_step @ peer_step / (np.linalg.norm(ours_step) * np.linalg.norm(peer_step))
    assert cosine >= 0.99
    assert 0.9 <= np.linalg.norm(ours_step) / np.linalg.norm(peer_step) <= 1.1


# ----------------------------------------------------------------------------- NorMuon
def _newton_schulz5(x: np.ndarray) -> np.ndarray:
    """Jordan et al. 2024: X/(||X||_F + 1e-7), five quintic steps, on the wide orientation."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = x.shape[0] > x.shape[1]
    y = x.T if tall else x
    y = y / (np.linalg.norm(y) + 1e-7)
    for _ in range(5):
        s = y @ y.T
        y = a * y + (b * s + c * s @ s) @ y
    return y.T if tall else y


def _li_normuon(w0, a, b, lr, wd, beta1, beta2, eps) -> np.ndarray:
    """Li et al. 2025, Algorithm 1, literally."""
    m, n = w0.shape
    w, mom, v = w0.copy(), np.zeros_like(w0), np.zeros(m)
    for _ in range(STEPS):
        g = _gradient(w, a, b)
        mom = beta1 * mom + (1 - beta1) * g
        o = _newton_schulz5(mom)
        v = beta2 * v + (1 - beta2) * (o * o).mean(axis=1)
        o_hat = o / (np.sqrt(v)[:, None] + eps)
        lr_hat = 0.2 * lr * np.sqrt(m * n) / np.linalg.norm(o_hat)
        w = w - lr * wd * w - lr_hat * o_hat
    return w


@pytest.mark.parametrize(("shape", "foreach"), [((6, 4), False), ((4, 6), True)])
def test_normuon_matches_li_algorithm_1(shape, foreach):
    w0, a, b = _problem(*shape, seed=5)
    ours = _run_ours(
        "normuon",
        w0,
        a,
        b,
        foreach=foreach,
        lr=0.02,
        weight_decay=0.1,
        momentum=0.95,
        norm_kwargs={"beta2": 0.95, "eps": 1e-8},
    )
    expected = _li_normuon(w0, a, b, lr=0.02, wd=0.1, beta1=0.95, beta2=0.95, eps=1e-8)
    assert np.abs(ours - w0).max() > 0.01
    assert np.abs(ours - expected).max() <= 1e-6


def test_normuon_rows_have_equal_rms_and_the_step_muons_rms():
    """With beta2 = 0 every row of O_hat has RMS 1; the update's RMS is 0.2 (per unit lr)."""
    torch.manual_seed(0)
    grad = torch.randn(3, 8, 5, dtype=torch.float64)
    grad[:, 0] *= 100  # one neuron dominates the gradient
    state = {"momentum_buffer": torch.zeros_like(grad), "row_sq": torch.zeros(3, 8).double()}
    update = normuon_kernel(
        grad,
        state,
        beta1=0.0,
        nesterov=False,
        beta2=0.0,
        eps=1e-12,
        polar=lambda x: polar_factor(x, method="svd"),
    )
    row_rms = update.square().mean(dim=-1).sqrt()
    assert torch.allclose(row_rms, row_rms[:, :1].expand_as(row_rms), rtol=1e-9)
    assert torch.allclose(update.square().mean(dim=(-2, -1)).sqrt(), torch.tensor(0.2).double())
    muon = polar_factor(grad, method="svd")
    muon_rows = muon.square().mean(dim=-1).sqrt()
    assert (muon_rows.max(dim=-1).values / muon_rows.min(dim=-1).values > 1.05).all()


# ----------------------------------------------------------------------------- all three
ADAPTIVE = ["shampoo", "soap", "normuon"]


def _every(preset: str) -> dict:
    return {} if preset == "normuon" else {"precondition_every": 2}


@pytest.mark.parametrize("preset", ADAPTIVE)
def test_batched_equals_per_matrix(preset):
    """Same-shape matrices and 3-D expert stacks batched give the per-parameter result."""
    torch.manual_seed(0)
    shapes = [(6, 6), (6, 6), (2, 6, 6), (5, 7)]
    runs = []
    for foreach in (False, True):
        params = [
            torch.nn.Parameter(
                torch.randn(s, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
            )
            for i, s in enumerate(shapes)
        ]
        opt = make_optimizer(params, preset, lr=1e-2, foreach=foreach, **_every(preset))
        for k in range(5):
            gen = torch.Generator().manual_seed(100 + k)
            for p in params:
                p.grad = torch.randn(p.shape, dtype=torch.float64, generator=gen)
            opt.step()
        runs.append(params)
    for ours, theirs in zip(*runs):
        assert torch.allclose(ours, theirs, atol=1e-10)


@pytest.mark.parametrize("preset", ADAPTIVE)
def test_experts_stack_is_independent_matrices(preset):
    """A (E, m, n) parameter is E matrices, each with its own factors: as E separate ones."""
    torch.manual_seed(1)
    stack = torch.nn.Parameter(torch.randn(3, 5, 4, dtype=torch.float64))
    singles = [torch.nn.Parameter(stack.detach()[e].clone()) for e in range(3)]
    opt_stack = make_optimizer([stack], preset, lr=1e-2, **_every(preset))
    opts = [make_optimizer([p], preset, lr=1e-2, **_every(preset)) for p in singles]
    for k in range(4):
        grad = torch.randn(3, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
        stack.grad = grad
        opt_stack.step()
        for e, (p, opt) in enumerate(zip(singles, opts)):
            p.grad = grad[e].clone()
            opt.step()
    assert torch.allclose(stack.detach(), torch.stack([p.detach() for p in singles]), atol=1e-10)


def test_presets_put_vectors_and_embeddings_on_adam():
    from everyscale.train.models import build_model

    model = build_model("gpt", width=16, depth=1, heads=2, context=8, vocab=32)
    for preset in ADAPTIVE:
        opt = make_optimizer(model, preset)
        by_name = {n: g["norm"] for g in opt.param_groups for n in g["param_names"]}
        assert by_name["embed.weight"] == "adam" and by_name["blocks.0.norm1.weight"] == "adam"
        assert by_name["blocks.0.attn.q.weight"] == preset


def test_describe_shows_state_bytes_of_experts():
    """Shampoo's state for an (E, m, n) stack: E (2 (m^2 + n^2)) float32 + moments."""
    from everyscale.optim.presets import state_bytes

    experts = torch.nn.Parameter(torch.zeros(4, 8, 3))
    opt = make_optimizer([experts], "shampoo", momentum=0.0, grafting="sgd")
    group = opt.param_groups[0]
    assert state_bytes(opt, group, experts) == 4 * (2 * (64 + 9) * 4 + 1)
    soap = make_optimizer([experts], "soap")
    assert state_bytes(soap, soap.param_groups[0], experts) == 4 * (2 * (64 + 9) * 4 + 2 * 24 * 4)
    w = torch.nn.Parameter(torch.zeros(4, 8, 3))
    opt = make_optimizer([w], "soap")
    opt.step() if w.grad is not None else None
    w.grad = torch.randn(4, 8, 3)
    opt.step()
    held = sum(t.numel() * t.element_size() for t in opt.state[w].values() if t.ndim > 0)
    assert held == state_bytes(opt, opt.param_groups[0], w)


@pytest.mark.parametrize(
    ("preset", "option", "value"),
    [
        ("shampoo", "grafting", "adagrad"),
        ("shampoo", "precondition_every", 0),
        ("soap", "shampoo_beta", 1.5),
        ("normuon", "beta2", -0.1),
    ],
)
def test_bad_options_name_the_option(preset, option, value):
    with pytest.raises(ValueError, match=option):
        make_optimizer([torch.nn.Parameter(torch.zeros(3, 3))], preset, **{option: value})


@pytest.mark.parametrize("preset", ["shampoo", "soap"])
def test_resume_keeps_float32_factors_of_bfloat16_weights(preset, tmp_path):
    """torch casts loaded state to the weight's dtype; the factors must stay float32."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 4).bfloat16())
    opt = make_optimizer([w], preset, lr=1e-2, precondition_every=2)
    for _ in range(3):
        w.grad = torch.randn(6, 4).bfloat16()
        opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    fresh = make_optimizer([w], preset, lr=1e-2, precondition_every=2)
    fresh.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    for key, value in opt.state[w].items():
        assert fresh.state[w][key].dtype == value.dtype and torch.equal(fresh.state[w][key], value)


@pytest.mark.parametrize("preset", ["shampoo", "soap", "normuon"])
def test_layouts_give_each_logical_matrix_its_own_state(preset):
    """GPT-2's fused, transposed c_attn (d, 3d) is three d x d matrices (q, k, v); its c_fc
    (d, 4d) is one 4d x d matrix (Conv1D stores (in, out)). (Expert stacks: above.)"""
    import hf_zoo

    model, batch, loss_fn = hf_zoo.gpt2()
    opt = make_optimizer(model, preset, **_every(preset))
    loss_fn(model, batch).backward()
    opt.step()
    params = dict(model.named_parameters())
    state_attn = opt.state[params["transformer.h.0.attn.c_attn.weight"]]
    state_fc = opt.state[params["transformer.h.0.mlp.c_fc.weight"]]
    assert state_attn["momentum_buffer" if preset != "soap" else "exp_avg"].shape == (3, 128, 128)
    if preset == "normuon":
        assert state_fc["row_sq"].shape == (1, 512)  # one per output neuron
    else:
        assert state_fc["factor_left"].shape == (1, 512, 512)
        assert state_fc["factor_right"].shape == (1, 128, 128)
