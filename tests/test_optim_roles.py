"""Roles from the order of use in a forward pass, preset tables, and `everyscale describe`."""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch
from torch import nn

import everyscale
from everyscale.optim import Role, assign_roles
from everyscale.optim import optimizer as make_optimizer
from everyscale.optim.presets import PRESETS


def _gpt(**shape):
    from everyscale.train.models import build_model

    torch.manual_seed(0)
    return build_model("gpt", width=16, depth=2, heads=2, context=8, vocab=32, **shape)


def test_gpt_roles_untied():
    roles = assign_roles(_gpt())
    assert roles["embed.weight"] == Role.INPUT
    assert roles["head.weight"] == Role.OUTPUT
    assert roles["norm.weight"] == Role.VECTOR
    assert roles["blocks.0.attn.q.weight"] == Role.HIDDEN
    assert roles["blocks.1.mlp.proj.weight"] == Role.HIDDEN
    assert set(roles) == {n for n, _ in _gpt().named_parameters()}


def test_gpt_roles_tied():
    roles = assign_roles(_gpt(tied=True))
    assert roles["embed.weight"] == Role.TIED
    assert "head.weight" not in roles  # one Parameter, listed once
    assert list(roles.values()).count(Role.OUTPUT) == 0


class Reversed(nn.Module):
    """Registered head-first, used input-first: registration order would get it wrong."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.middle = nn.Linear(8, 8)
        self.stem = nn.Linear(5, 8)
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return self.head(self.middle(self.stem(x)) * self.scale)


def test_roles_follow_forward_order_not_registration_order():
    roles = assign_roles(Reversed(), example_input=torch.randn(2, 5))
    assert roles == {
        "head.weight": Role.OUTPUT,
        "head.bias": Role.VECTOR,
        "middle.weight": Role.HIDDEN,
        "middle.bias": Role.VECTOR,
        "stem.weight": Role.INPUT,
        "stem.bias": Role.VECTOR,
        "scale": Role.VECTOR,
    }


def test_without_example_input_every_matrix_is_hidden_with_one_warning():
    """Nothing tells which end is which: the safe geometry, and the guesses named once."""
    with pytest.warns(UserWarning, match="stem.weight") as caught:
        roles = assign_roles(Reversed())
    assert len([w for w in caught if "assign_roles" in str(w.message)]) == 1
    assert "input layer or the head" in str(caught[0].message)
    assert {roles[n] for n in ("head.weight", "middle.weight", "stem.weight")} == {Role.HIDDEN}
    assert roles["scale"] == Role.VECTOR


def test_sequential_structure_decides_without_warning():
    seq = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8)), nn.Linear(8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        roles = assign_roles(seq)
    assert [roles[f"{i}.weight"] for i in (0, 3)] == [Role.INPUT, Role.OUTPUT]
    assert roles["2.0.weight"] == Role.HIDDEN


def test_overrides_by_pattern_first_match_wins():
    roles = assign_roles(
        Reversed(),
        example_input=torch.randn(2, 5),
        overrides={"middle.*": "output", "*.bias": Role.HIDDEN, "head.*": "vector"},
    )
    assert roles["middle.weight"] == Role.OUTPUT
    assert roles["middle.bias"] == Role.OUTPUT  # first pattern wins over '*.bias'
    assert roles["stem.bias"] == Role.HIDDEN
    assert roles["head.bias"] == Role.HIDDEN
    with pytest.raises(ValueError, match=r"pattern 'midle\*' matches no parameter"):
        assign_roles(Reversed(), example_input=torch.randn(2, 5), overrides={"midle*": "hidden"})
    with pytest.raises(ValueError, match="unknown role 'first'"):
        assign_roles(Reversed(), example_input=torch.randn(2, 5), overrides={"stem.*": "first"})


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.spare = nn.Linear(4, 4)  # never called
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.a(x))


def test_unused_parameters_fall_back_and_are_not_dropped():
    with pytest.warns(UserWarning, match="never used spare.weight, spare.bias"):
        roles = assign_roles(WithUnused(), example_input=torch.randn(1, 4))
    assert roles["spare.weight"] == Role.HIDDEN
    assert roles["spare.bias"] == Role.VECTOR
    assert roles["a.weight"] == Role.INPUT and roles["b.weight"] == Role.OUTPUT


def test_cnn_and_mlp_roles():
    from everyscale.train.models import build_model

    cnn = assign_roles(build_model("cnn", width=4, depth=2, input_shape=(1, 8, 8)))
    assert list(cnn.values()) == [Role.INPUT, Role.HIDDEN, Role.OUTPUT]
    mlp = assign_roles(build_model("mlp", width=8, depth=3, input_shape=(1, 8, 8)))
    values = list(mlp.values())
    assert values[0] == Role.INPUT and values[-1] == Role.OUTPUT
    assert set(values[1:-1]) == {Role.HIDDEN}


def _group_of(opt, name):
    for group in opt.param_groups:
        if name in group["param_names"]:
            return group
    raise AssertionError(name)


def test_scion_assigns_role_norms_and_radii():
    opt = make_optimizer(_gpt(), "scion", lr=0.01, radius=3.0)
    embed = _group_of(opt, "embed.weight")
    assert (embed["norm"], embed["norm_kwargs"]["transpose"], embed["radius"]) == (
        "colnorm",
        True,
        3.0,
    )
    head = _group_of(opt, "head.weight")
    assert (head["norm"], head["norm_kwargs"]["normalized"], head["radius"]) == (
        "sign",
        True,
        180.0,
    )
    hidden = _group_of(opt, "blocks.0.mlp.fc.weight")
    assert (hidden["norm"], hidden["norm_kwargs"]["scaling"]) == ("spectral", "natural")
    assert _group_of(opt, "norm.weight")["norm"] == "rms"
    assert {g["step"] for g in opt.param_groups} == {"constrained"}
    # same-shape matrices share a group (so the foreach path can batch them)
    q = _group_of(opt, "blocks.0.attn.q.weight")
    assert "blocks.1.attn.k.weight" in q["param_names"]


def test_tied_scion_uses_sign_at_both_ends():
    opt = make_optimizer(_gpt(tied=True), "scion", lr=0.01)
    tied = _group_of(opt, "embed.weight")
    assert tied["norm"] == "sign" and tied["role"] == "tied"


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_covers_every_parameter_once(preset):
    model = _gpt()
    opt = make_optimizer(model, preset)
    covered = [p for g in opt.param_groups for p in g["params"]]
    assert len(covered) == len(list(model.parameters()))
    assert {id(p) for p in covered} == {id(p) for p in model.parameters()}


def test_muon_sends_non_hidden_parameters_to_adamw():
    opt = make_optimizer(_gpt(), "muon", lr=0.02, rest_lr=1e-3, betas=(0.8, 0.9))
    for name in ("embed.weight", "head.weight", "norm.weight"):
        group = _group_of(opt, name)
        assert (group["norm"], group["lr"], group["betas"]) == ("adam", 1e-3, (0.8, 0.9))
    hidden = _group_of(opt, "blocks.0.attn.v.weight")
    assert (hidden["norm"], hidden["lr"], hidden["nesterov"]) == ("spectral", 0.02, True)
    everything = make_optimizer(_gpt(), "muon", lr=0.02, spectral_for="all")
    assert _group_of(everything, "head.weight")["norm"] == "spectral"


def test_param_group_dicts_override_per_group():
    a, b = nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(3))
    opt = make_optimizer([{"params": [a], "lr": 0.5}, {"params": [b]}], "signum", lr=0.1)
    assert sorted(g["lr"] for g in opt.param_groups) == [0.1, 0.5]


def test_scion_without_model_warns():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_optimizer([nn.Parameter(torch.randn(3, 3))], "scion", lr=0.1)
    assert any("without a model" in str(w.message) for w in caught)


def test_describe_prints_and_returns_the_table(capsys):
    table = everyscale.describe(_gpt(), "scion", lr=0.01)
    printed = capsys.readouterr().out
    assert table in printed
    lines = table.splitlines()
    assert lines[0].split() == [
        "name",
        "shape",
        "role",
        "norm",
        "radius",
        "step",
        "lr",
        "effective",
        "lr",
        "state",
    ]
    head = next(line for line in lines if line.startswith("head.weight"))
    # effective lr = lr * radius * (1/d_in) = 0.01 * 3000 / 16; state: the momentum buffer
    assert head.split() == ["head.weight", "32x16", "output", "sign(1/d_in)", "3000",
                            "constrained", "0.01", "1.875", "2.0", "KiB"]  # fmt: skip
    assert lines[2].startswith("embed.weight")  # rows in model order
    assert "colnorm(T)" in lines[2]


def test_cli_describe(capsys):
    from everyscale.optim import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(
        ["describe", "--model", "gpt", "--width", "16", "--depth", "1", "--shape", "heads=2",
         "--optimizer", "muon", "--option", "adjust_lr_fn=match_rms_adamw", "--lr", "0.1"]
    )  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "spectral(muon_rms)" in out and "blocks.0.mlp.fc.weight" in out
    bad = parser.parse_args(["describe", "--model", "gpt", "--option", "momentum=2"])
    with pytest.raises(ValueError, match="momentum"):
        bad.func(bad)
    with pytest.raises(ValueError, match="--width must be a positive integer"):
        neg = parser.parse_args(["describe", "--width", "-4"])
        neg.func(neg)


class ReusedEmbedding(nn.Module):
    """Logits through the embedding matrix itself (no second module): still tied."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.mix = nn.Linear(6, 6)

    def forward(self, tokens):
        return self.mix(self.embed(tokens)) @ self.embed.weight.T


def test_reused_embedding_is_tied_and_single_layer_is_input():
    roles = assign_roles(ReusedEmbedding(), example_input=torch.tensor([[1, 2, 3]]))
    assert roles == {"embed.weight": Role.TIED, "mix.weight": Role.HIDDEN, "mix.bias": Role.VECTOR}
    single = assign_roles(nn.Linear(3, 2), example_input=torch.randn(1, 3))
    assert single == {"weight": Role.INPUT, "bias": Role.VECTOR}


def test_describe_notes_say_how_to_read_the_table(capsys):
    scion = everyscale.describe(_gpt(), "scion")
    assert "2^-12" in scion.splitlines()[2]  # the default lr, written as a power of two
    notes = " ".join(scion.split())
    assert "the step is lr*radius (0.0122 for the hidden radius 50)" in notes
    assert "radius 50: lr 2^-13..2^-10" in notes
    small = " ".join(everyscale.describe(_gpt(), "uscion", lr=2**-6, radius=1.0).split())
    assert "uscion: the step is lr*radius (0.0156 for the hidden radius 1)" in small
    # _gpt(): 2 blocks of 6 hidden matrices; embedding, head and 5 gains go to AdamW
    muon = everyscale.describe(_gpt(), "muon", lr=0.02, rest_lr=1e-3)
    notes = " ".join(muon.split())
    assert "muon: 12 matrices take the Spectral LMO" in notes
    assert "the other 7 tensors (1 input, 5 vector, 1 output) take the adamw preset" in notes
    assert "at lr 0.001 (rest_lr)" in notes
    capsys.readouterr()


def test_muon_warns_when_no_parameter_takes_the_spectral_lmo():
    from everyscale.train.models import build_model

    cnn = build_model("cnn", width=4, depth=2, input_shape=(1, 8, 8))  # kernels and a head
    with pytest.warns(UserWarning, match="every parameter trains with adamw"):
        opt = make_optimizer(cnn, "muon")
    assert {g["norm"] for g in opt.param_groups} == {"adam"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_optimizer(_gpt(), "muon")  # hidden matrices: no warning


def test_module_docstring_gives_every_preset_its_update():
    import everyscale.optim.presets as presets

    doc = presets.__doc__
    for name in PRESETS:
        entry = doc.split(f"\n``{name}``", 1)  # a definition-list entry for each preset
        assert len(entry) == 2, name
        assert "W <-" in entry[1].split("\n``", 1)[0], name  # whose text has the update


def test_a_new_preset_is_one_descriptor():
    """register_preset: optimizer, scale's update family and the batch-size rule all read it."""
    from dataclasses import dataclass

    from everyscale.optim import PresetSpec, get_preset, register_preset
    from everyscale.optim.registry import _REGISTRY
    from everyscale.scale import update_family
    from everyscale.train.schedules import batch_size_rule

    @dataclass(frozen=True)
    class PlainOptions:
        momentum: float = 0.5
        weight_decay: float = 0.0

    def settings(lr, options, param):
        return {"norm": "identity", "step": "sharp", "momentum_style": "heavy_ball",
                "momentum": options.momentum, "weight_decay": options.weight_decay}  # fmt: skip

    spec = PresetSpec("plain_test", 0.05, "linear", PlainOptions, settings, {"all": "identity"})
    register_preset(spec)
    try:
        assert "plain_test" in PRESETS and get_preset("plain_test") is spec
        opt = make_optimizer(_gpt(), "plain_test", momentum=0.25)
        assert {(g["lr"], g["momentum"]) for g in opt.param_groups} == {(0.05, 0.25)}
        assert update_family("plain_test") == "linear" and batch_size_rule("plain_test") == "linear"
        with pytest.raises(ValueError, match="does not take radius; its options are"):
            make_optimizer(_gpt(), "plain_test", radius=2.0)
        with pytest.raises(ValueError, match="already registered"):
            register_preset(spec)
    finally:
        del _REGISTRY["plain_test"]
    assert "plain_test" not in PRESETS
