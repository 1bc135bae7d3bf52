"""Models: parameter and FLOP counts against hand counts and torch's FLOP counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from everyscale.train.models import build_model


def forward_flops(model, x):
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def test_gpt_parameter_counts_match_hand_count():
    d, L, V = 16, 2, 256
    untied = build_model("gpt", width=d, depth=L, heads=2, context=8, vocab=V)
    non_embedding = L * (12 * d * d + 2 * d) + d  # q,k,v,o + 4x MLP + 2 gains per block + final
    assert untied.num_params(embeddings=False) == non_embedding
    assert untied.num_params() == non_embedding + 2 * V * d
    tied = build_model("gpt", width=d, depth=L, heads=2, context=8, vocab=V, tied=True)
    assert tied.num_params() == non_embedding + V * d
    assert tied.num_params(embeddings=False) == non_embedding
    assert tied.head.weight is tied.embed.weight


def test_gpt_flops_per_token_match_torch_flop_counter_and_attention_term():
    d, L, V, T = 16, 2, 256, 8
    model = build_model("gpt", width=d, depth=L, heads=2, context=T, vocab=V)
    x = model.example_input(batch_size=3)
    # torch counts the matmuls (2 FLOPs per multiply-add); it does not count SDPA on the CPU.
    matmul_forward_per_token = forward_flops(model, x) / x.numel()
    assert model.flops_per_token(attention=False) == pytest.approx(3 * matmul_forward_per_token)
    assert model.flops_per_token(attention=False) == 6 * (L * 12 * d * d + V * d)
    assert model.flops_per_token() - model.flops_per_token(attention=False) == 6 * L * T * d


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_image_model_flops_match_torch_flop_counter(name, shape):
    model = build_model(name, width=8, depth=3, input_shape=shape, num_classes=10)
    x = model.example_input(batch_size=2)
    assert model(x).shape == (2, 10)
    assert model.flops_per_token() == pytest.approx(3 * forward_flops(model, x) / 2)


def test_mlp_and_cnn_parameter_hand_counts():
    mlp = build_model("mlp", width=10, depth=2, input_shape=(1, 8, 8), num_classes=10)
    assert mlp.num_params() == 64 * 10 + 10 * 10 + 10 * 10 == mlp.num_params(embeddings=False)
    cnn = build_model("cnn", width=4, depth=2, input_shape=(1, 8, 8), num_classes=10)
    assert cnn.num_params() == 9 * 1 * 4 + 9 * 4 * 4 + 4 * 10


def test_gpt_is_causal_and_residual_multiplier_acts():
    torch.manual_seed(0)
    model = build_model("gpt", width=16, depth=2, heads=2, context=8, vocab=32)
    x = model.example_input(batch_size=1) % 32
    y = x.clone()
    y[0, 5] = (y[0, 5] + 1) % 32  # change a later token
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[0, :5], b[0, :5]), "earlier positions must not see later tokens"
    assert not torch.allclose(a[0, 5:], b[0, 5:])
    torch.manual_seed(0)
    scaled = build_model(
        "gpt", width=16, depth=2, heads=2, context=8, vocab=32, residual_multiplier=0.5
    )
    with torch.no_grad():
        assert not torch.allclose(scaled(x), a)


def test_example_input_runs_and_is_deterministic():
    for name, shape in [("gpt", {"context": 8, "width": 16, "heads": 2}), ("cnn", {}), ("mlp", {})]:
        model = build_model(name, **shape)
        assert torch.equal(model.example_input(), model.example_input())
        model(model.example_input())


@pytest.mark.parametrize(
    ("name", "shape", "match"),
    [
        ("transformer", {}, "unknown model"),
        ("gpt", {"width": 30, "heads": 4}, "not divisible by heads"),
        ("gpt", {"width": 12, "heads": 4}, "even head dimension"),
        ("gpt", {"depth": 0}, "depth must be a positive integer"),
        ("gpt", {"residual_multiplier": float("nan")}, "residual_multiplier"),
        ("mlp", {"heads": 4}, "does not take heads"),
        ("cnn", {"input_shape": (28, 28)}, "channels, height, width"),
    ],
)
def test_bad_model_arguments_are_refused(name, shape, match):
    with pytest.raises(ValueError, match=match):
        build_model(name, **shape)
