"""Every bad-input case of issue 2: a clear error naming the parameter and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from everyscale.optim import NonFiniteGradientError, NormOptimizer, get_norm
from everyscale.optim import optimizer as make_optimizer


def _named(shape=(3, 4), name="layer.weight"):
    return [(name, nn.Parameter(torch.randn(shape)))]


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown preset 'adam'.*adamw.*muon.*scion"):
        make_optimizer(_named(), "adam", lr=0.1)


def test_unknown_norm_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown norm 'nuclear'.*spectral.*colnorm"):
        NormOptimizer(_named(), norm="nuclear")
    with pytest.raises(ValueError, match="unknown norm"):
        get_norm("l2")


def test_unknown_preset_option_lists_valid_ones():
    with pytest.raises(ValueError, match=r"does not take momentum_decay.*options are"):
        make_optimizer(_named(), "sgd", lr=0.1, momentum_decay=0.9)


def test_spectral_on_a_vector_names_the_parameter():
    with pytest.raises(ValueError, match=r"'blocks\.0\.bias'.*'spectral'.*use 'rms'"):
        NormOptimizer(_named((5,), "blocks.0.bias"), norm="spectral")


def test_complex_parameter_names_the_parameter():
    p = nn.Parameter(torch.randn(3, 3, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"'rotor'.*complex"):
        NormOptimizer([("rotor", p)], norm="euclidean")


def test_sparse_gradient_names_the_parameter():
    emb = nn.Embedding(10, 4, sparse=True)
    opt = make_optimizer(emb, "signum", lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"'weight'.*sparse"):
        opt.step()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lr": -0.1}, "lr must be"),
        ({"lr": float("nan")}, "lr must be"),
        ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
        ({"momentum": -0.1}, r"momentum must be a number in \[0, 1\)"),
        ({"betas": (0.9, 1.0)}, r"betas\[1\] must be"),
        ({"betas": (-0.1, 0.9)}, r"betas\[0\] must be"),
        ({"radius": 0.0}, "radius must be a finite number > 0"),
        ({"radius": -2.0}, "radius must be a finite number > 0"),
        ({"step": "projected"}, "step must be one of"),
        ({"weight_decay": -1.0}, "weight_decay must be"),
        ({"step": "constrained", "weight_decay": 0.1}, "step='constrained' already decays"),
    ],
)
def test_bad_hyperparameters_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        NormOptimizer(_named(), **options)


@pytest.mark.parametrize(
    ("preset", "options", "message"),
    [
        ("sgd", {"lr": -1.0}, "lr must be"),
        ("adamw", {"betas": (0.9, 1.5)}, r"betas\[1\]"),
        ("signum", {"momentum": 1.2}, "momentum"),
        ("scion", {"radius": 0}, "radius"),
        ("scion", {"output_radius": -3.0}, "radius"),
        ("scion", {"weight_decay": 0.1}, "constrained step already decays.*uscion"),
        ("sgd", {"nesterov": True}, "Nesterov heavy-ball momentum needs momentum > 0"),
        ("muon", {"adjust_lr_fn": "sqrt"}, "adjust_lr_fn must be"),
        ("muon", {"rest": "scion"}, "rest must be an elementwise preset"),
        ("muon", {"ns_steps": 0}, "steps"),
        ("muon", {"ns_dtype": "float8"}, "dtype"),
    ],
)
def test_bad_preset_options_raise_value_error(preset, options, message):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    lr = options.pop("lr", 0.1)
    with pytest.raises(ValueError, match=message):
        make_optimizer(model, preset, lr=lr, example_input=torch.randn(2, 4), **options)


def test_adam_geometry_needs_the_sharp_step():
    with pytest.raises(ValueError, match="use step='sharp'"):
        NormOptimizer(_named(), norm="adam", step="unconstrained")


def test_nonfinite_gradient_raises_naming_parameter_and_step_and_changes_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2))
    # spectral_for="all": both matrices on the Spectral LMO, the biases on AdamW (two kinds
    # of state that must stay untouched); this model has no hidden matrix otherwise
    opt = make_optimizer(model, "muon", lr=0.1, spectral_for="all", example_input=torch.randn(1, 4))
    for _ in range(2):  # two good steps first: the error must report step 3
        opt.zero_grad()
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state_before = {k: {n: t.clone() for n, t in v.items()} for k, v in opt.state.items()}
    opt.zero_grad()
    model(torch.randn(3, 4)).sum().backward()
    model[1].bias.grad[0] = float("inf")
    with pytest.raises(NonFiniteGradientError, match=r"'1\.bias'.*non-finite.*step 3"):
        opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
    for k, v in opt.state.items():
        for n, t in v.items():
            assert torch.equal(t, state_before[k][n])
    assert issubclass(NonFiniteGradientError, ValueError)


def test_nonfinite_skip_leaves_parameters_and_counts():
    p = nn.Parameter(torch.ones(2, 3))
    opt = make_optimizer([("w", p)], "adamw", lr=0.1, nonfinite="skip")
    p.grad = torch.tensor([[1.0, float("nan"), 0.0], [0.0, 0.0, 0.0]])
    opt.step()
    assert torch.equal(p.detach(), torch.ones(2, 3))
    assert opt.skipped_steps == 1
    assert opt.state[p] == {}  # no moments were created or advanced
    p.grad = torch.ones(2, 3)
    opt.step()
    assert not torch.equal(p.detach(), torch.ones(2, 3))
    assert opt.skipped_steps == 1


def test_huge_but_finite_gradient_is_not_reported_as_nonfinite():
    """The fused norm check overflows for entries ~1e20; the exact check must clear it."""
    p = nn.Parameter(torch.zeros(4))
    opt = make_optimizer([p], "signsgd", lr=0.1)
    p.grad = torch.full((4,), 1e20)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((4,), -0.1))


def test_bad_nonfinite_policy():
    with pytest.raises(ValueError, match="nonfinite must be one of raise, skip, ignore"):
        NormOptimizer(_named(), nonfinite="warn")


def test_empty_and_frozen_parameter_lists():
    with pytest.raises(ValueError, match="empty parameter list"):
        make_optimizer([], "adamw", lr=0.1)
    frozen = nn.Parameter(torch.ones(3), requires_grad=False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer([frozen], "adamw", lr=0.1)
