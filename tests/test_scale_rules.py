"""Scale rules: batch size, horizon and depth, checked against their closed forms."""

from __future__ import annotations

import math

import pytest

from everyscale.scale import rules


def test_batch_size_rule_is_sqrt_for_normalized_and_linear_for_sgd():
    # 4x the batch: Adam/sign/LMO learning rate doubles, SGD's quadruples [Granziol et al.].
    assert rules.batch_size_lr(0.01, 256, 64, "adamw") == pytest.approx(0.02)
    assert rules.batch_size_lr(0.01, 256, 64, "scion") == pytest.approx(0.02)
    assert rules.batch_size_lr(0.01, 256, 64, "sgd") == pytest.approx(0.04)
    # Halving the batch goes the other way.
    assert rules.batch_size_lr(0.01, 32, 64, "lion") == pytest.approx(0.01 / math.sqrt(2))


def test_horizon_rules_follow_the_fitted_exponents():
    # 10x the tokens: lr times 10^-0.28, batch times 10^0.45 (Filatov et al. 2025).
    assert rules.horizon_lr(0.1, 1e9, 1e8) == pytest.approx(0.1 * 10**-0.28)
    assert rules.horizon_batch_size(32, 1e9, 1e8) == round(32 * 10**0.45)
    assert rules.horizon_batch_size(1, 1e6, 1e9) == 1  # never below one example
    assert rules.horizon_lr(0.1, 2e8, 1e8, exponent=-0.5) == pytest.approx(0.1 / math.sqrt(2))


def test_horizon_exponent_at_a_fixed_batch_takes_the_batch_rules_share_off():
    # Along B*(D): -0.28; at a fixed batch: -0.28 - 0.45/2 (sqrt rule) or -0.28 - 0.45 (SGD),
    # the exponent transfer_lr applies when the batch size is given and unchanged.
    assert rules.horizon_lr_exponent("scion", fixed_batch=False) == pytest.approx(-0.28)
    assert rules.horizon_lr_exponent("scion") == pytest.approx(-0.505)
    assert rules.horizon_lr_exponent("sgd") == pytest.approx(-0.73)
    same_batch = rules.transfer_lr(
        0.01, "scion", batch_size=32, base_batch_size=32, tokens=16, base_tokens=1
    )
    assert same_batch == pytest.approx(0.01 * 16 ** rules.horizon_lr_exponent("scion"))


def test_transfer_lr_combines_both_rules_and_needs_pairs():
    # 4x the batch and 4x the tokens: the horizon rule already moves the batch to
    # 32 * 4^0.45; the square-root rule covers only the rest, 128 / (32 * 4^0.45).
    expected = 0.01 * 4**-0.28 * math.sqrt(4 / 4**0.45)
    got = rules.transfer_lr(
        0.01, "scion", batch_size=128, base_batch_size=32, tokens=4, base_tokens=1
    )
    assert got == pytest.approx(expected)
    # A batch that follows B*(D) ~ D^0.45 gets the horizon rule alone, for SGD too; the same
    # token count gets the batch rule alone.
    for preset in ("scion", "sgd"):
        on_path = rules.transfer_lr(
            0.01, preset, batch_size=32 * 10**0.45, base_batch_size=32, tokens=10, base_tokens=1
        )
        assert on_path == pytest.approx(rules.horizon_lr(0.01, 10, 1))
    same_tokens = rules.transfer_lr(
        0.01, "sgd", batch_size=128, base_batch_size=32, tokens=5, base_tokens=5
    )
    assert same_tokens == pytest.approx(rules.batch_size_lr(0.01, 128, 32, "sgd"))
    assert rules.transfer_lr(0.01, "scion") == 0.01
    with pytest.raises(ValueError, match="base_batch_size"):
        rules.transfer_lr(0.01, "scion", batch_size=128)
    with pytest.raises(ValueError, match="base_tokens"):
        rules.transfer_lr(0.01, "scion", tokens=1e9)


def test_residual_multiplier_and_depth_lr_factor():
    assert rules.residual_multiplier(8) == pytest.approx(1 / 8)
    assert rules.residual_multiplier(8, alpha=0.5) == pytest.approx(1 / math.sqrt(8))
    assert rules.residual_multiplier(8, base_depth=2) == pytest.approx(1 / 4)
    assert rules.residual_multiplier(2, base_depth=2) == 1.0  # the proxy is left as it is
    # CompleteP (alpha=1): normalized updates keep their lr; depth-muP (alpha=1/2): 1/sqrt(m_L).
    assert rules.depth_lr_factor(4, 1.0, "scion") == pytest.approx(1.0)
    assert rules.depth_lr_factor(4, 0.5, "adamw") == pytest.approx(0.5)
    # SGD: m_L^(2 alpha - 1): constant at alpha=1/2 (depth-muP), linear in m_L at alpha=1.
    assert rules.depth_lr_factor(4, 0.5, "sgd") == pytest.approx(1.0)
    assert rules.depth_lr_factor(4, 1.0, "sgd") == pytest.approx(4.0)


def test_depth_rule_keeps_each_blocks_contribution_at_one_over_depth():
    # The derivation in depth_lr_factor: branch multiplier times the weight change per step
    # (normalized: eta; SGD: eta times the gradient's own m_L^-alpha) must equal 1/m_L.
    for alpha in (0.5, 1.0):
        for m in (2.0, 4.0, 16.0):
            mult = m**-alpha
            normalized = mult * rules.depth_lr_factor(m, alpha, "adamw")
            linear = mult * rules.depth_lr_factor(m, alpha, "sgd") * mult
            assert normalized == pytest.approx(1 / m)
            assert linear == pytest.approx(1 / m)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: rules.batch_size_lr(0.01, 0, 64, "adamw"), "batch_size"),
        (lambda: rules.batch_size_lr(0.01, 64, 64, "adam"), "preset"),
        (lambda: rules.batch_size_lr(-1.0, 64, 64, "adamw"), "lr"),
        (lambda: rules.horizon_lr(float("nan"), 1, 1), "lr"),
        (lambda: rules.horizon_lr(0.1, float("inf"), 1), "tokens"),
        (lambda: rules.residual_multiplier(2, base_depth=4), "larger than the target"),
        (lambda: rules.residual_multiplier(4, alpha=2.0), "alpha"),
        (lambda: rules.residual_multiplier(0), "depth"),
    ],
)
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()
