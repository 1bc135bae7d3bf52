"""Properties of every geometry in everyscale.optim.norms, checked against independent math.

For a norm with unit-ball LMO ``lmo`` and dual norm ``||.||_*`` (computed separately: nuclear
norm, sums of column lengths, ...), the tests check ``<d, lmo(d)> = -||d||_*``,
``||lmo(d)|| = 1``, that no other unit vector does better, invariance to scaling ``d``,
batched == looped, the sharp operator identities and ``init_`` landing on the sphere.
"""

from __future__ import annotations

import math

import pytest
import torch

from everyscale.optim.norms import (
    NORMS,
    RMS,
    Adam,
    ColNorm,
    Euclidean,
    Identity,
    RowNorm,
    Sign,
    Spectral,
    SpectralConv,
    adam_denominator,
    get_norm,
)

# (label, norm, shape of one parameter); exact polar factors so the identities hold exactly.
CASES = [
    ("euclidean-matrix", Euclidean(), (5, 7)),
    ("euclidean-vector", Euclidean(), (6,)),
    ("identity", Identity(), (4, 3)),
    ("sign", Sign(), (5, 7)),
    ("sign-vector", Sign(), (6,)),
    ("sign-head", Sign(normalized=True), (5, 7)),
    ("spectral-wide", Spectral(method="svd"), (5, 7)),
    ("spectral-tall", Spectral(method="svd"), (7, 5)),
    ("spectral-max1", Spectral(scaling="max1", method="svd"), (3, 8)),
    ("spectral-muon-rms", Spectral(scaling="muon_rms", method="svd"), (6, 4)),
    ("spectral-conv2d", SpectralConv(method="svd"), (4, 3, 3, 3)),
    ("spectral-conv1d", SpectralConv(method="svd"), (4, 3, 5)),
    ("colnorm", ColNorm(), (5, 7)),
    ("colnorm-embedding", ColNorm(transpose=True), (9, 4)),
    ("colnorm-normalized", ColNorm(normalized=True), (5, 7)),
    ("rownorm", RowNorm(), (5, 7)),
    ("rownorm-l2", RowNorm(normalized=False), (5, 7)),
    ("rownorm-transposed", RowNorm(transpose=True), (5, 7)),
    ("rms", RMS(), (6,)),
]
IDS = [c[0] for c in CASES]


def _gradient(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum()


@pytest.mark.parametrize(("label", "norm", "shape"), CASES, ids=IDS)
def test_lmo_attains_minus_dual_norm_on_unit_sphere(label, norm, shape):
    d = _gradient(shape)
    direction = norm.lmo(d)
    assert direction.shape == d.shape
    dual = norm.dual_norm(d)
    assert float(dual) > 0
    torch.testing.assert_close(_inner(d, direction), -dual, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(norm.norm(direction), torch.tensor(1.0, dtype=d.dtype))


@pytest.mark.parametrize(("label", "norm", "shape"), CASES, ids=IDS)
def test_lmo_beats_random_unit_points(label, norm, shape):
    """No point of the unit ball has a smaller inner product with d than lmo(d)."""
    d = _gradient(shape, seed=1)
    best = float(_inner(d, norm.lmo(d)))
    gen = torch.Generator().manual_seed(2)
    for _ in range(50):
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        x = x / norm.norm(x)
        assert float(_inner(d, x)) >= best - 1e-9


@pytest.mark.parametrize(("label", "norm", "shape"), CASES, ids=IDS)
def test_lmo_invariant_to_positive_scaling(label, norm, shape):
    d = _gradient(shape, seed=3)
    torch.testing.assert_close(norm.lmo(3.7 * d), norm.lmo(d), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(norm.dual_norm(3.7 * d), 3.7 * norm.dual_norm(d))
    torch.testing.assert_close(norm.norm(3.7 * d), 3.7 * norm.norm(d))


@pytest.mark.parametrize(("label", "norm", "shape"), CASES, ids=IDS)
def test_batched_equals_looped(label, norm, shape):
    stack = torch.stack([_gradient(shape, seed=s) for s in range(3)])
    batched = norm.lmo(stack, batched=True)
    for i in range(3):
        torch.testing.assert_close(batched[i], norm.lmo(stack[i]), rtol=1e-9, atol=1e-12)
    looped_dual = torch.stack([norm.dual_norm(stack[i]) for i in range(3)])
    torch.testing.assert_close(norm.dual_norm(stack, batched=True), looped_dual)
    looped_norm = torch.stack([norm.norm(stack[i]) for i in range(3)])
    torch.testing.assert_close(norm.norm(stack, batched=True), looped_norm)


@pytest.mark.parametrize(("label", "norm", "shape"), CASES, ids=IDS)
def test_sharp_operator_identities(label, norm, shape):
    """d# = argmax <d,x> - ||x||^2/2 satisfies <d, d#> = ||d||_*^2 and ||d#|| = ||d||_*."""
    d = _gradient(shape, seed=4)
    sharp = norm.sharp(d)
    dual = norm.dual_norm(d)
    torch.testing.assert_close(_inner(d, sharp), dual**2, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(norm.norm(sharp), dual, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("label", "norm", "shape"), CASES, ids=IDS)
def test_init_lands_on_the_sphere(label, norm, shape):
    w = torch.empty(shape, dtype=torch.float64)
    torch.manual_seed(0)
    out = norm.init_(w, radius=2.5)
    assert out is w
    torch.testing.assert_close(norm.norm(w), torch.tensor(2.5, dtype=torch.float64))


def test_spectral_lmo_is_scaled_svd_polar_factor():
    d = _gradient((6, 10), seed=5)
    u, _, vh = torch.linalg.svd(d, full_matrices=False)
    expected = -math.sqrt(6 / 10) * (u @ vh)
    torch.testing.assert_close(Spectral(method="svd").lmo(d), expected)
    torch.testing.assert_close(
        Spectral(scaling="max1", method="svd").lmo(d), -(u @ vh)
    )  # max(1, sqrt(6/10)) = 1


def test_spectral_conv_uses_the_reshaped_kernel():
    d = _gradient((4, 3, 3, 3), seed=6)
    u, _, vh = torch.linalg.svd(d.reshape(4, 27), full_matrices=False)
    expected = -(math.sqrt(4 / 3) / 9) * (u @ vh).reshape(4, 3, 3, 3)
    torch.testing.assert_close(SpectralConv(method="svd").lmo(d), expected)


def test_newton_schulz_singular_values_in_band_and_polar_express_closer():
    """Jordan's iteration lands in about [0.7, 1.2]; Polar Express closer to 1 (same steps)."""
    d = torch.randn(32, 64, generator=torch.Generator().manual_seed(7))
    scale = math.sqrt(32 / 64)
    ns = torch.linalg.svdvals(-Spectral().lmo(d) / scale)
    pe = torch.linalg.svdvals(-Spectral(method="polar_express").lmo(d) / scale)
    assert float(ns.min()) > 0.6 and float(ns.max()) < 1.25
    assert float((pe - 1).abs().max()) < float((ns - 1).abs().max())


def test_spectral_bfloat16_option_returns_input_dtype():
    d = torch.randn(8, 12, generator=torch.Generator().manual_seed(8))
    out = Spectral(dtype=torch.bfloat16).lmo(d)
    assert out.dtype == torch.float32
    exact = Spectral(method="svd").lmo(d)
    # bfloat16 keeps ~3 significant digits; Newton-Schulz is itself approximate.
    cosine = _inner(out, exact) / (out.norm() * exact.norm())
    assert float(cosine) > 0.95


def test_colnorm_embedding_normalizes_each_token_vector():
    """Transposed ColNorm on (vocab, d): every token's row gets RMS 1 (length sqrt(d))."""
    d = _gradient((9, 4), seed=9)
    out = ColNorm(transpose=True).lmo(d)
    torch.testing.assert_close(out.norm(dim=1), torch.full((9,), 2.0, dtype=torch.float64))
    cosines = torch.nn.functional.cosine_similarity(out, -d, dim=1)
    torch.testing.assert_close(cosines, torch.ones(9, dtype=torch.float64))


def test_sign_head_scale_is_one_over_fan_in():
    d = _gradient((5, 8), seed=10)
    torch.testing.assert_close(Sign(normalized=True).lmo(d), -torch.sign(d) / 8)


def test_zero_direction_gives_zero_step_not_nan():
    for norm, shape in [(Euclidean(), (3, 4)), (ColNorm(), (3, 4)), (RowNorm(), (3, 4)),
                        (RMS(), (5,)), (Sign(), (3,))]:  # fmt: skip
        out = norm.lmo(torch.zeros(shape))
        assert torch.equal(out, torch.zeros(shape)), norm


def test_adam_geometry_with_denominator():
    gen = torch.Generator().manual_seed(11)
    d = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    v = torch.rand(4, 5, generator=gen, dtype=torch.float64)
    denom = adam_denominator(v, step=3, beta2=0.999, eps=1e-8)
    torch.testing.assert_close(denom, (v / (1 - 0.999**3)).sqrt() + 1e-8)
    norm = Adam()
    direction = norm.lmo(d, denom=denom)
    torch.testing.assert_close(_inner(d, direction), -norm.dual_norm(d, denom=denom))
    torch.testing.assert_close(norm.norm(direction, denom=denom), torch.tensor(1.0, dtype=d.dtype))
    torch.testing.assert_close(norm.sharp(d, denom=denom), d / denom)
    with pytest.raises(ValueError, match="denom"):
        norm.lmo(d)
    with pytest.raises(ValueError, match="no fixed ball"):
        norm.init_(torch.empty(3))


def test_get_norm_registry_and_round_trip():
    assert set(NORMS) == {
        "euclidean", "sign", "spectral", "spectral_conv", "colnorm", "rownorm", "rms",
        "identity", "adam",
    }  # fmt: skip
    norm = Spectral(scaling="max1", steps=7, dtype=torch.bfloat16)
    config = norm.config()
    assert config["dtype"] == "bfloat16"  # plain data, loadable with weights_only=True
    assert get_norm(config.pop("name"), **config) == norm
    with pytest.raises(ValueError, match=r"valid norms are .*spectral"):
        get_norm("frobenius")
    with pytest.raises(ValueError, match="bad options"):
        get_norm("sign", radius=3)
    with pytest.raises(ValueError, match="scaling"):
        Spectral(scaling="wide")
    with pytest.raises(ValueError, match="polar method"):
        Spectral(method="qr")


def test_matrix_norm_on_vector_names_the_fix():
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*use 'rms'"):
        Spectral().lmo(torch.randn(5))
    with pytest.raises(ValueError, match=r"embed\.weight"):
        ColNorm().check((5,), "embed.weight")
