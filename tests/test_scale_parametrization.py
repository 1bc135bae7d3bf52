"""Base shapes, multipliers and learning-rate factors on the everyscale GPT."""

from __future__ import annotations

import pytest
import torch

from everyscale.scale import BaseShape, base_shapes, find_blocks, plan
from everyscale.train.models import build_model


def gpt(width: int, depth: int = 2, residual_multiplier: float = 1.0):
    return build_model(
        "gpt",
        width=width,
        depth=depth,
        heads=2,
        context=8,
        vocab=256,
        residual_multiplier=residual_multiplier,
    )


def gpt_roles(model) -> dict[str, str]:
    """Roles written out by hand, so these tests do not depend on the role finder."""
    roles = {}
    for name, p in model.named_parameters():
        if name == "embed.weight":
            roles[name] = "input"
        elif name == "head.weight":
            roles[name] = "output"
        else:
            roles[name] = "vector" if p.ndim == 1 else "hidden"
    return roles


def test_width_multipliers_from_a_proxy_model():
    target, proxy = gpt(128), gpt(32)
    p = plan(target, "scion", proxy, roles=gpt_roles(target))
    q = p.params["blocks.0.attn.q.weight"]
    assert (q.fan_in_mult, q.fan_out_mult) == (4, 4)
    fc = p.params["blocks.1.mlp.fc.weight"]  # (4w, w)
    assert (fc.fan_in_mult, fc.fan_out_mult) == (4, 4)
    embed = p.params["embed.weight"]  # Embedding (vocab, width): fan_in = vocab is fixed
    assert (embed.fan_in_mult, embed.fan_out_mult) == (1, 4)
    head = p.params["head.weight"]  # Linear (vocab, width)
    assert (head.fan_in_mult, head.fan_out_mult) == (4, 1)
    assert p.params["norm.weight"].fan_out_mult == 4
    # Scion's norms carry the width: every factor is 1, and a same-depth proxy changes no branch.
    assert set(p.lr_factors().values()) == {1.0}
    assert p.residual_multiplier == 1.0


def test_base_shape_numbers_agree_with_the_proxy_model_even_when_vocab_equals_width():
    # Width 256 = vocab 256: the role, not the number, decides which dimension is the width.
    target = gpt(256)
    by_model = plan(target, "adamw", gpt(64), roles=gpt_roles(target), width_rule="mup")
    by_numbers = plan(
        target,
        "adamw",
        BaseShape(width=64, depth=2),
        width=256,
        roles=gpt_roles(target),
        width_rule="mup",
    )
    for name, a in by_model.params.items():
        b = by_numbers.params[name]
        assert (a.fan_in_mult, a.fan_out_mult, a.lr_factor) == (
            b.fan_in_mult,
            b.fan_out_mult,
            b.lr_factor,
        ), name
    assert by_model.params["embed.weight"].fan_in_mult == 1


def test_mup_learning_rate_factors_for_adam_and_sgd():
    target = gpt(128)
    adam = plan(target, "adamw", gpt(32), roles=gpt_roles(target), width_rule="mup").lr_factors()
    assert adam["embed.weight"] == 1.0
    assert adam["blocks.0.attn.o.weight"] == pytest.approx(1 / 4)
    assert adam["head.weight"] == pytest.approx(1 / 4)
    assert adam["norm.weight"] == 1.0
    sgd = plan(target, "sgd", gpt(32), roles=gpt_roles(target), width_rule="mup").lr_factors()
    assert sgd["embed.weight"] == pytest.approx(4)
    assert sgd["blocks.0.mlp.proj.weight"] == 1.0
    assert sgd["head.weight"] == pytest.approx(1 / 4)
    # The standard parametrization changes nothing: that is what drifts.
    sp = plan(target, "adamw", gpt(32), roles=gpt_roles(target)).lr_factors()
    assert set(sp.values()) == {1.0}


def test_depth_plan_residual_multiplier_and_branch_factors():
    target = gpt(32, depth=8)
    assert find_blocks(target) == ("blocks", 8)
    p = plan(target, "adamw", gpt(32, depth=2), roles=gpt_roles(target), alpha=0.5)
    assert p.depth == 8 and p.base_depth == 2
    assert p.residual_multiplier == pytest.approx(0.5)  # (8/2)^-1/2
    branch = p.params["blocks.7.mlp.fc.weight"]
    assert branch.in_residual_branch and branch.depth_mult == 4
    assert branch.lr_factor == pytest.approx(0.5)  # m_L^(alpha-1)
    assert p.params["blocks.3.norm1.weight"].lr_factor == pytest.approx(0.5)
    for outside in ("embed.weight", "head.weight", "norm.weight"):
        assert not p.params[outside].in_residual_branch
        assert p.params[outside].lr_factor == 1.0
    complete_p = plan(
        target, "scion", BaseShape(width=32, depth=2), width=32, roles=gpt_roles(target)
    )
    assert complete_p.residual_multiplier == pytest.approx(0.25)
    assert set(complete_p.lr_factors().values()) == {1.0}


def test_apply_scales_each_parameter_and_keeps_group_settings():
    target = gpt(128, depth=4)
    p = plan(
        target, "adamw", gpt(32, depth=2), roles=gpt_roles(target), width_rule="mup", alpha=0.5
    )
    opt = torch.optim.AdamW(target.parameters(), lr=0.01, weight_decay=0.1, betas=(0.8, 0.9))
    p.apply(opt, target)
    lr_of = {id(q): g["lr"] for g in opt.param_groups for q in g["params"]}
    for name, q in target.named_parameters():
        assert lr_of[id(q)] == pytest.approx(0.01 * p.params[name].lr_factor), name
    assert all(g["weight_decay"] == 0.1 and g["betas"] == (0.8, 0.9) for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(target.parameters()))
    # The split optimizer trains.
    loss = target(target.example_input()).square().mean()
    loss.backward()
    opt.step()
    with pytest.raises(ValueError, match="before the first step"):
        p.apply(opt, target)


def test_table_lists_every_parameter():
    target = gpt(64, depth=4)
    text = plan(target, "scion", gpt(32, depth=2), roles=gpt_roles(target)).table()
    for name, _ in target.named_parameters():
        assert name in text
    assert "residual_multiplier=0.5" in text
    # With the optimizer: each parameter's norm, radius and (scaled) learning rate.
    from everyscale.optim import optimizer

    p = plan(target, "adamw", gpt(32, depth=2), roles=gpt_roles(target), width_rule="mup")
    opt = p.apply(optimizer(target, "adamw", lr=0.01), target)
    rows = {line.split()[0]: line.split() for line in p.table(opt, target).splitlines()[3:]}
    assert rows["blocks.0.attn.q.weight"][-3:] == ["adam", "-", "0.005"]
    assert rows["embed.weight"][-1] == "0.01"
    scion = optimizer(target, "scion", lr=0.01)
    rows = {
        line.split()[0]: line.split()
        for line in plan(target, "scion", gpt(32, depth=2), roles=gpt_roles(target))
        .table(scion, target)
        .splitlines()[3:]
    }
    assert rows["head.weight"][-3:-1] == ["sign(1/d_in)", "3000"]
    assert rows["blocks.1.mlp.fc.weight"][-3:-1] == ["spectral", "50"]


def test_bad_input():
    target = gpt(64)
    roles = gpt_roles(target)
    with pytest.raises(ValueError, match="larger in the proxy"):
        plan(gpt(32), "scion", target, roles=gpt_roles(gpt(32)))
    with pytest.raises(ValueError, match="base width"):
        plan(target, "scion", BaseShape(width=128), width=64, roles=roles)
    with pytest.raises(ValueError, match="larger than the target"):
        plan(gpt(64, depth=2), "scion", BaseShape(width=64, depth=4), width=64, roles=roles)
    with pytest.raises(ValueError, match="unknown role 'head'; use one of input, hidden"):
        plan(target, "scion", gpt(32), roles={**roles, "head.weight": "head"})
    with pytest.raises(ValueError, match="roles: no role found"):
        plan(target, "scion", gpt(32), roles={"embed.weight": "input"})
    with pytest.raises(ValueError, match="preset"):
        plan(target, "adam", gpt(32), roles=roles)
    with pytest.raises(ValueError, match="width_rule"):
        plan(target, "adamw", gpt(32), roles=roles, width_rule="ntk")
    with pytest.raises(ValueError, match="proxy has no parameter"):
        plan(target, "scion", {"embed.weight": (256, 32)}, roles=roles)
    assert base_shapes(gpt(32))["head.weight"] == (256, 32)


def test_init_puts_every_parameter_on_its_ball_and_leaves_adamw_alone():
    from everyscale.optim import optimizer
    from everyscale.scale import init_

    model = gpt(64)
    init_(model, "scion", init_radius=1.0)
    opt = optimizer(model, "scion", lr=0.01)
    for group in opt.param_groups:
        norm = opt.norm_of(group)
        for p in group["params"]:
            assert float(norm.norm(p.detach())) == pytest.approx(1.0, rel=1e-3), group["role"]
    # Exact checks against the definitions: semi-orthogonal hidden matrices (every singular
    # value sqrt(d_out/d_in) in the RMS->RMS scaling), random-sign head entries +-1/d_in.
    fc = model.blocks[0].mlp.fc.weight.detach()  # (4w, w)
    assert torch.linalg.svdvals(fc) == pytest.approx(torch.full((64,), 2.0), rel=1e-3)
    head = model.head.weight.detach()
    assert torch.allclose(head.abs(), torch.full_like(head, 1 / 64))
    # The preset's own radii (50, and 3000 for the head) when no init radius is given.
    init_(model, "scion")
    assert float(model.head.weight.detach().abs().max()) == pytest.approx(3000 / 64)
    # AdamW's geometry has no ball: the model keeps its own initialization.
    fresh = gpt(64)
    before = {n: p.detach().clone() for n, p in fresh.named_parameters()}
    init_(fresh, "adamw")
    assert all(torch.equal(before[n], p) for n, p in fresh.named_parameters())
    with pytest.raises(ValueError, match="init_radius"):
        init_(fresh, "scion", init_radius=0.0)


@pytest.mark.filterwarnings("ignore:assign_roles")  # a Sequential has no example_input()
def test_init_starts_biases_at_zero_and_gains_on_the_ball():
    # Pethick et al. 2025: zeros for biases; a bias on its RMS ball would be the radius
    # everywhere.
    from everyscale.scale import init_

    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)
    )
    init_(model, "scion", init_radius=2.0)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
    assert torch.equal(model[2].weight.detach(), torch.full((16,), 2.0))  # the LayerNorm gain


def test_describe_with_a_base_shows_the_scale_plan(capsys):
    """`describe_plan` prints the plan: SGD's depth factor m_L^(2 alpha - 1) = 4 here."""
    from everyscale.scale import describe_plan

    model = build_model("gpt", width=32, depth=8, heads=2, context=8, vocab=16)
    text = describe_plan(model, "sgd", BaseShape(width=32, depth=2), width=32, lr=0.01)
    assert "lr factor" in text and "residual_multiplier=0.25" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if "weight" in line}
    assert rows["blocks.3.attn.q.weight"][-1] == "0.04"  # in a block: 0.01 * 4
    assert rows["embed.weight"][-1] == "0.01"  # outside the blocks: unchanged
    assert capsys.readouterr().out.count("lr factor") == 1
