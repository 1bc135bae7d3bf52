"""Every preset on the models people train: tiny ``transformers`` models built from configs.

GPT-2 (tied head, ``Conv1D``, fused q/k/v), Llama tied and untied, BERT masked LM (decoder
tied to the word embeddings), ViT (class token, position table, patch convolution), ResNet,
Mixtral (3-D experts) and T5 (an encoder-decoder sharing one embedding).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import everyscale
import hf_zoo  # skips this module when transformers is missing
from everyscale.optim import PRESETS, Role, assign_roles
from everyscale.optim import optimizer as make_optimizer
from everyscale.optim.layouts import Layout
from everyscale.optim.norms import Spectral

#: the parameter that takes the output geometry (Sign 1/d_in): the head, or the embedding tied
#: to it
HEADS = {
    "gpt2": {"transformer.wte.weight": Role.TIED},
    "llama_tied": {"model.embed_tokens.weight": Role.TIED},
    "llama_untied": {"lm_head.weight": Role.OUTPUT},
    "bert_mlm": {"bert.embeddings.word_embeddings.weight": Role.TIED},
    "vit": {"classifier.weight": Role.OUTPUT},
    "resnet": {"classifier.1.weight": Role.OUTPUT},
    "mixtral": {"lm_head.weight": Role.OUTPUT},
    "t5": {"shared.weight": Role.TIED},
}
TEXT_MODELS = ("gpt2", "llama_tied", "llama_untied", "bert_mlm", "mixtral", "t5")


# The polar factor of Spectral()'s defaults, which the per-matrix references below use.
REFERENCE_POLAR = {"ns_method": "newton_schulz", "ns_dtype": "float32"}


def _no_role_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "assign_roles" in str(w.message)]


@pytest.mark.parametrize("name", list(hf_zoo.ZOO))
def test_only_the_head_gets_the_output_geometry(name):
    model, _, _ = hf_zoo.build(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        roles = assign_roles(model)
    assert not _no_role_warnings(caught)  # structure and conventions decided: no warning
    ends = {n: r for n, r in roles.items() if r in (Role.OUTPUT, Role.TIED)}
    assert ends == HEADS[name]
    opt = make_optimizer(model, "scion")
    sign = {n for g in opt.param_groups if g["norm"] == "sign" for n in g["param_names"]}
    assert sign == set(HEADS[name])


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_models_need_no_forward_pass(monkeypatch, name):
    """Ties, embeddings and get_output_embeddings() decide without any example input."""
    import everyscale.optim.roles as roles_module

    model, _, _ = hf_zoo.build(name)
    monkeypatch.setattr(roles_module, "_built_example", lambda model: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        roles = assign_roles(model)
    assert not _no_role_warnings(caught)
    assert {n: r for n, r in roles.items() if r in (Role.OUTPUT, Role.TIED)} == HEADS[name]


def test_without_an_input_a_vision_head_is_guessed_hidden_and_named(monkeypatch):
    import everyscale.optim.roles as roles_module

    model, _, _ = hf_zoo.build("vit")
    monkeypatch.setattr(roles_module, "_built_example", lambda model: None)
    roles_module._WARNED.clear()
    with pytest.warns(UserWarning, match="classifier.weight"):
        roles = assign_roles(model)
    assert roles["classifier.weight"] == Role.HIDDEN  # safe: never "output" by position
    assert roles["vit.embeddings.patch_embeddings.projection.weight"] == Role.INPUT


@pytest.mark.filterwarnings("ignore:muon. no parameter is a 2-D hidden matrix")
@pytest.mark.parametrize("name", list(hf_zoo.ZOO))
@pytest.mark.parametrize("preset", ["scion", "muon", "adamw"])
def test_every_parameter_is_in_exactly_one_group(name, preset):
    model, _, _ = hf_zoo.build(name)
    opt = make_optimizer(model, preset)
    covered = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(covered) == len(set(covered))
    assert set(covered) == {id(p) for p in model.parameters() if p.requires_grad}


def test_vit_tokens_and_tables_are_not_conv_kernels():
    model, _, _ = hf_zoo.build("vit")
    opt = make_optimizer(model, "scion")
    norm_of = {n: opt.norm_of(g).describe() for g in opt.param_groups for n in g["param_names"]}
    assert norm_of["vit.embeddings.cls_token"] == "rms"
    assert norm_of["vit.embeddings.position_embeddings"] == "colnorm(T)"
    roles = assign_roles(model)
    assert roles["vit.embeddings.patch_embeddings.projection.weight"] == Role.INPUT
    assert roles["vit.embeddings.cls_token"] == Role.VECTOR
    notes = " ".join(everyscale.describe(model, "scion").split())
    assert "vit.embeddings.cls_token (token: a vector)" in notes
    assert "vit.embeddings.position_embeddings (table: an input table)" in notes


def _hidden_shape_factor(model, name, preset="scion"):
    opt = make_optimizer(model, preset, lr=2.0**-11)
    for group in opt.param_groups:
        if name in group["param_names"]:
            p = group["params"][group["param_names"].index(name)]
            return group["lr"] * group["radius"] * opt.shape_factor(group, p.shape), group


def test_gpt2_c_attn_is_three_square_matrices():
    """c_attn stores q, k, v as (in, out) = 128x384: three 128x128 matrices, factor 1 each."""
    model, _, _ = hf_zoo.build("gpt2")
    effective, group = _hidden_shape_factor(model, "transformer.h.0.attn.c_attn.weight")
    assert effective == pytest.approx(2.0**-11 * 50)  # 0.0244, as everyscale's own q, k, v
    assert group["layout"] == {"transpose": True, "split": 3, "label": "q,k,v"}
    fc, _ = _hidden_shape_factor(model, "transformer.h.0.mlp.c_fc.weight")  # (128, 512) in,out
    assert fc == pytest.approx(2.0**-11 * 50 * 2.0)  # sqrt(d_out/d_in) = sqrt(512/128)


def _set_grads(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def test_mixtral_experts_are_orthogonalized_per_expert():
    """One step on the 3-D expert tensor equals a loop of per-expert (gate, up) polar factors."""
    model, _, _ = hf_zoo.build("mixtral")
    experts = model.model.layers[0].mlp.experts
    before = experts.gate_up_proj.detach().clone()
    # float32 Newton-Schulz, the recipe of the Spectral() reference below
    opt = make_optimizer(model, "uscion", lr=0.1, momentum=0.0, radius=1.0, **REFERENCE_POLAR)
    _set_grads(model)
    grad = experts.gate_up_proj.grad.clone()
    opt.step()
    update = experts.gate_up_proj.detach() - before
    spectral = Spectral()
    n_exp, two_f, d = grad.shape
    f = two_f // 2
    scale = 0.1 * (f / d) ** 0.5  # lr * radius * sqrt(d_out/d_in) of one (f, d) matrix
    for e in range(n_exp):
        for half in (slice(0, f), slice(f, two_f)):
            expected = scale * spectral.base_lmo(grad[e, half])
            torch.testing.assert_close(update[e, half], expected, atol=1e-5, rtol=1e-4)
    joint = scale * spectral.base_lmo(grad.reshape(n_exp, -1))  # what a conv reading gives
    assert not torch.allclose(update.reshape(n_exp, -1), joint, atol=1e-3)


def test_experts_take_one_batched_polar_call(monkeypatch):
    import everyscale.optim.polar as polar

    calls = []
    original = polar.polar_factor

    def counting(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return original(x, *args, **kwargs)

    model, batch, loss_fn = hf_zoo.build("mixtral")
    opt = make_optimizer(model, "muon")
    loss_fn(model, batch).backward()
    monkeypatch.setattr(polar, "polar_factor", counting)
    opt.step()
    # 2 layers x 4 experts x (gate, up) of 96x64, all in one call (and 8 of 64x96)
    assert (16, 64, 96) in calls and (8, 64, 96) in calls
    assert all(len(shape) == 2 or shape[0] > 1 for shape in calls)
    muon = {n: opt.norm_of(g).name for g in opt.param_groups for n in g["param_names"]}
    assert muon["model.layers.0.mlp.experts.down_proj"] == "spectral"  # not AdamW


class _Fused(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, num_heads=2, bias=False)


class _Separate(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))


def test_in_proj_weight_steps_like_three_separate_matrices():
    fused, separate = _Fused(), _Separate()
    with torch.no_grad():
        for i, lin in enumerate((separate.q, separate.k, separate.v)):
            lin.weight.copy_(fused.attn.in_proj_weight[16 * i : 16 * (i + 1)])
    _set_grads(fused)
    for i, lin in enumerate((separate.q, separate.k, separate.v)):
        lin.weight.grad = fused.attn.in_proj_weight.grad[16 * i : 16 * (i + 1)].clone()
    kwargs = {"lr": 0.05, "roles": {"*": "hidden"}, "momentum": 0.0}
    for model in (fused, separate):
        make_optimizer(model, "uscion", **kwargs).step()
    stacked = torch.cat([m.weight for m in (separate.q, separate.k, separate.v)])
    torch.testing.assert_close(fused.attn.in_proj_weight, stacked, atol=1e-6, rtol=1e-5)


def test_lstm_gates_are_read_as_their_gates():
    lstm = nn.LSTM(8, 16, num_layers=1)
    opt = make_optimizer(lstm, "scion", roles={"*": "hidden"})
    layouts = {n: g.get("layout") for g in opt.param_groups for n in g["param_names"]}
    assert layouts["weight_ih_l0"] == layouts["weight_hh_l0"] == {"split": 4, "label": "gates"}
    assert Layout(split=4).matrix_shape((64, 8)) == (4, 16, 8)  # 4 gates of 16x8


class _Mixer(nn.Module):
    """A user's module with a raw 3-D weight the registry does not know."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 8, 4))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.einsum("eoi,bi->bo", self.w, x))


def test_an_unreadable_tensor_names_the_parameter_and_how_to_register_it():
    from everyscale.optim import layouts

    model = _Mixer()
    with pytest.raises(ValueError, match=r"'w' \(shape \(3, 8, 4\), in a _Mixer\)") as err:
        make_optimizer(model, "scion", example_input=torch.randn(2, 4))
    assert "register_layout(_Mixer, 'w', Layout(stacked=True))" in str(err.value)
    make_optimizer(model, "adamw")  # elementwise presets need no layout
    try:
        everyscale.optim.register_layout(_Mixer, "w", Layout(stacked=True, label="experts"))
        opt = make_optimizer(model, "scion", example_input=torch.randn(2, 4))
        group = next(g for g in opt.param_groups if "w" in g["param_names"])
        assert (group["norm"], group["layout"]["stacked"]) == ("spectral", True)
    finally:
        del layouts._REGISTRY[_Mixer]


@pytest.mark.parametrize(
    "layout",
    [
        Layout(transpose=True),
        Layout(split=3),
        Layout(transpose=True, split=3),
        Layout(stacked=True, split=2, interleaved=True),
        Layout(stacked=True, transpose=True, split=2),
        Layout(heads=4),
        Layout(heads=2, heads_dim="in", split=2),
    ],
)
def test_layouts_round_trip(layout):
    shape = (3, 24, 8) if layout.stacked else (24, 8)
    if layout.transpose:
        shape = (*shape[:-2], shape[-1], shape[-2])
    t = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)
    matrices = layout.to_matrices(t)
    assert tuple(matrices.shape) == layout.matrix_shape(shape)
    assert torch.equal(layout.from_matrices(matrices, shape), t)


def test_interleaved_and_per_head_pieces_are_the_right_entries():
    t = torch.arange(12.0).reshape(1, 4, 3)  # rows: gate0, up0, gate1, up1
    gate, up = Layout(stacked=True, split=2, interleaved=True).to_matrices(t)
    assert torch.equal(gate, t[0, 0::2]) and torch.equal(up, t[0, 1::2])
    w = torch.arange(24.0).reshape(4, 6)
    heads = Layout(heads=2, heads_dim="in").to_matrices(w)
    assert torch.equal(heads[1], w[:, 3:])


def test_init_puts_each_fused_matrix_on_its_sphere():
    model, _, _ = hf_zoo.build("gpt2")
    from everyscale.scale import init_

    init_(model, "scion", init_radius=1.0)
    c_attn = model.transformer.h[0].attn.c_attn.weight.detach()  # (in, out) = (128, 384)
    for i in range(3):
        singular = torch.linalg.svdvals(c_attn[:, 128 * i : 128 * (i + 1)].T)
        torch.testing.assert_close(singular, torch.ones(128), atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore:muon. no parameter is a 2-D hidden matrix")
@pytest.mark.parametrize("name", list(hf_zoo.ZOO))
@pytest.mark.parametrize("preset", list(PRESETS))
def test_ten_steps_at_the_default_lr_lower_the_loss(name, preset):
    model, batch, loss_fn = hf_zoo.build(name)
    opt = make_optimizer(model, preset)
    with torch.no_grad():
        before = float(loss_fn(model, batch))
    for _ in range(10):
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
    with torch.no_grad():
        after = float(loss_fn(model, batch))
    assert after < before, f"{name} {preset}: {before:.4f} -> {after:.4f}"


class TimmStyleAttention(nn.Module):
    """As timm's ViT attention: q, k, v fused in one nn.Linear(d, 3d)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class TimmStyleViT(nn.Module):
    """Raw cls_token / pos_embed parameters, a patch convolution, fused qkv, a linear head."""

    def __init__(self, dim: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TimmStyleAttention(dim, heads=4)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        x = x + self.attn(self.norm1(x))
        return self.head(self.norm(x)[:, 0])


def test_a_timm_style_vit_after_one_register_layout_line():
    from everyscale.optim import layouts

    torch.manual_seed(0)
    model = TimmStyleViT()
    images = torch.randn(2, 3, 16, 16)
    try:
        everyscale.optim.register_layout(TimmStyleAttention, "qkv.weight", Layout(split=3))
        opt = make_optimizer(model, "scion", example_input=images)
        rows = {n: g for g in opt.param_groups for n in g["param_names"]}
        assert rows["attn.qkv.weight"]["layout"] == {"split": 3}
        assert (rows["cls_token"]["role"], rows["cls_token"]["norm"]) == ("vector", "rms")
        assert (rows["pos_embed"]["role"], rows["pos_embed"]["norm"]) == ("input", "colnorm")
        assert (rows["patch_embed.weight"]["role"], rows["head.weight"]["role"]) == (
            "input",
            "output",
        )
        assert rows["attn.qkv.weight"]["role"] == "hidden"
    finally:
        del layouts._REGISTRY[TimmStyleAttention]


def test_per_head_layout_orthogonalizes_each_head():
    from everyscale.optim import layouts

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(8, 8, bias=False)

    model = Heads()
    try:
        everyscale.optim.register_layout(Heads, "q.weight", Layout(heads=2))
        before = model.q.weight.detach().clone()
        opt = make_optimizer(
            model, "uscion", lr=0.1, radius=1.0, momentum=0.0, roles={"*": "hidden"},
            **REFERENCE_POLAR,
        )  # fmt: skip
        _set_grads(model)
        grad = model.q.weight.grad.clone()
        opt.step()
    finally:
        del layouts._REGISTRY[Heads]
    update = model.q.weight.detach() - before
    for rows in (slice(0, 4), slice(4, 8)):  # each head (4 x 8): factor sqrt(4/8)
        expected = 0.1 * 0.5**0.5 * Spectral().base_lmo(grad[rows])
        torch.testing.assert_close(update[rows], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_a_compiled_model_gets_the_same_roles_and_trains():
    model, batch, loss_fn = hf_zoo.build("llama_untied")
    eager = assign_roles(model)
    compiled = torch.compile(model)
    roles = assign_roles(compiled)
    assert roles == {f"_orig_mod.{n}": r for n, r in eager.items()}
    opt = make_optimizer(compiled, "scion")
    with torch.no_grad():
        before = float(loss_fn(compiled, batch))
    for _ in range(3):
        opt.zero_grad()
        loss_fn(compiled, batch).backward()
        opt.step()
    with torch.no_grad():
        assert float(loss_fn(compiled, batch)) < before
