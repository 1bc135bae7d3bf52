"""Presets: today's optimizers as settings of the one template (BRIEF §1, table of presets).

``optimizer(model, "scion", lr=2**-12)`` builds a ``NormOptimizer`` whose param groups carry
each parameter's norm, radius and step. The presets accept the keyword names of their
``torch.optim`` counterparts (``momentum``, ``dampening``, ``nesterov``, ``betas``, ``eps``,
``weight_decay``, ``ns_steps``, ``adjust_lr_fn``), so switching is a one-word change.

The update of each preset, for a parameter ``W`` with gradient ``g``, learning rate ``lr``,
weight decay ``wd`` and momentum buffer ``d`` (zero at the start unless said otherwise):

``sgd`` (= torch.optim.SGD)
    ``b <- mu b + (1 - dampening) g'`` with ``g' = g + wd W`` (``b_1 = g'_1``);
    ``W <- W - lr b``, Nesterov ``W <- W - lr (g' + mu b)``. ``decoupled_weight_decay=True``
    uses ``g' = g`` and ``W <- (1 - lr wd) W - lr b`` instead.
``normalized_sgd``
    ``d <- beta d + (1 - beta) g`` (beta 0.9); ``W <- (1 - lr wd) W - lr d / ||d||_F``.
``signsgd`` (Bernstein et al. 2018)
    ``W <- (1 - lr wd) W - lr sign(g)``.
``signum`` (Bernstein et al. 2018)
    ``d <- beta d + (1 - beta) g`` (beta 0.9); ``W <- (1 - lr wd) W - lr sign(d)``.
``lion`` (Chen et al. 2023), betas (0.9, 0.99)
    ``W <- (1 - lr wd) W - lr sign(beta1 m + (1 - beta1) g)``, then
    ``m <- beta2 m + (1 - beta2) g``.
``adamw`` (= torch.optim.AdamW; Kingma & Ba 2015, Loshchilov & Hutter 2019)
    ``m <- beta1 m + (1 - beta1) g``, ``v <- beta2 v + (1 - beta2) g^2``;
    ``W <- (1 - lr wd) W - lr m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - beta1^t)``,
    ``v_hat = v / (1 - beta2^t)``: steepest descent in the diagonal geometry ``sqrt(v_hat)``.
``muon`` (= torch.optim.Muon on its matrices; Jordan et al. 2024)
    2-D hidden matrices (``d_out x d_in``): ``d <- beta d + (1 - beta) g`` (beta 0.95),
    Nesterov ``u = (1 - beta) g + beta d``; ``W <- (1 - lr wd) W - lr a NS(u)`` where
    ``NS(u) ~ U V^T`` is the polar factor of ``u = U S V^T`` by 5 quintic steps (by default
    Polar Express, Amsel et al. 2025: the FLOPs of Muon's 5 Newton-Schulz steps, closer to
    ``U V^T``; ``ns_method="newton_schulz", ns_dtype="bfloat16"`` is torch's exact recipe), and
    ``a = max(1, sqrt(d_out/d_in))`` (``adjust_lr_fn=None`` or ``"original"``) or
    ``a = 0.2 sqrt(max(d_out, d_in))`` (``"match_rms_adamw"``, Liu et al. 2025); the decay
    uses the unscaled ``lr``. **Every other parameter** (embedding, head, norm gains,
    biases, conv kernels; ``spectral_for="all"`` keeps embedding and head on the Spectral
    LMO) goes to a second, elementwise preset, ``rest="adamw"`` by default, at ``rest_lr``
    (default: the same ``lr``; set it, e.g. ``rest_lr=1e-3``, when ``lr`` suits Muon but not
    AdamW) with ``rest_weight_decay`` (default ``weight_decay``); ``betas`` and ``eps`` go to
    that preset. No parameter is dropped; ``describe`` shows which geometry each one gets.
``scion`` (constrained, SCG [S])
    every parameter gets its role's norm ``||.||`` and radius ``rho`` (below);
    ``d <- beta d + (1 - beta) g`` (beta 0.9); ``W <- (1 - lr) W + lr rho lmo(d)``, with
    ``lmo(d) = argmin_{||x|| <= 1} <d, x>``; keeps ``||W|| <= rho``.
``uscion`` (unconstrained, uSCG [S])
    the same norms and momentum; ``W <- (1 - lr wd) W + lr rho lmo(d)``.
``clipped_scion`` (clipped, [G])
    the same norms and momentum; ``W <- (1 - lr wd) W + lr min(rho, ||d||_*) lmo(d)`` with
    ``||d||_* = -<d, lmo(d)>``: steepest descent ``W - lr d#`` while ``||d||_* <= rho``,
    ``uscion`` above it.

The polar factor of ``muon`` and the Scion family runs in ``ns_dtype``: ``"auto"`` (default)
takes the dtype the device multiplies matrices fastest in, bfloat16 or float32, chosen once
per optimizer and kept in its ``state_dict`` (``everyscale.optim.polar_dtype``; the environment
variable ``EVERYSCALE_POLAR_DTYPE`` overrides it); ``describe`` says which and why.

Scion's role norms [S, Rec. 3.1]: input = ColNorm on the transposed ``(vocab, d)`` storage for
an ``nn.Embedding``, ``spectral(max1)`` for a linear input layer, ``spectral_conv`` for a conv
input; hidden = Spectral (``spectral_conv`` for kernels); output and tied = Sign scaled
``1/d_in``; vectors = RMS. Radii default to the values of the Scion repository's nanoGPT
configuration (github.com/LIONS-EPFL/scion, README and ``examples/modded-nanogpt``; [S] App. E.3):
``radius=50`` for the blocks' matrices and, our choice, for norm gains and an untied input
embedding (that GPT has neither: parameter-free RMSNorm, embedding tied to the head);
``output_radius = 60 * radius = 3000`` for the Sign head, EMA momentum 0.9 (their
``momentum=0.1`` is ``1 - beta``), learning rate ``2**-12`` with the constrained step. Those
radii were tuned for GPT-2 small; tune ``radius`` and ``output_radius`` on a small proxy for
other models (the repository's MLP uses radius 1, an output radius ``2**10`` and lr
``2**-6``; its CNN 8, ``16 * 8`` and lr ``2**-4``).

Learning rate and radius in the Scion family. An LMO step has a fixed length whatever the size
of the gradient: each step adds ``lr * rho * lmo(d)``, of length ``lr * rho`` in the
parameter's own norm (the hidden layers' RMS -> RMS operator norm; ``lr * rho / d_in`` per
entry of the Sign head), and the constrained step pulls ``W`` toward the sphere of radius
``rho`` at rate ``lr``. The step size is the product ``lr * rho``, so the learning rate that
works scales as ``1 / rho``: with the default radii (50, head 3000) use ``lr`` in
``2**-13..2**-10`` (``lr * rho`` about 0.006 to 0.05). Measured on the everyscale GPT
(byte-level Shakespeare, 200 steps, started on the balls at radius 1; docs/transfer.md): the
best lr is ``2**-11`` at every width from 16 to 256, ``2**-9`` is clearly worse, and
``2**-6..2**-4`` (``lr * rho`` 0.8 to 3) diverges at width 16. Learning rates that suit Adam
or Muon (1e-3 to 2e-2) are 4 to 80 times too large here. With ``radius=1`` multiply the lr by
about 50: the repository's own MLP (radius 1, lr ``2**-6``) and nanoGPT (radius 50, lr
``2**-12``) both step by ``lr * rho`` of about 0.01 to 0.016.

The radii bound how large the weights may *grow* (``scion`` keeps ``||W|| <= rho``); they are
not a starting size. Starting *on* the balls of radius 50 / 3000 puts norm gains at 50 and
logits near 1e4, and a small GPT then does not train at any lr (docs/transfer.md). Keep the
model's own initialization or start on the balls at radius 1
(``everyscale.scale.init_(model, "scion", init_radius=1.0)``), as Scion's reference code does.

References: [S] Pethick et al., ICML 2025 (arXiv 2502.07529); [G] Pethick et al. 2025 (arXiv
2506.01913); Jordan et al. 2024 (Muon); Liu et al. 2025, *Muon is Scalable for LLM Training*;
Chen et al. 2023 (Lion); Bernstein et al. 2018 (signSGD, Signum); Kingma & Ba 2015 (Adam);
Loshchilov & Hutter 2019 (AdamW).
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from everyscale.optim.norms import Adam
from everyscale.optim.optimizer import NormOptimizer, _check_nonnegative
from everyscale.optim.polar import DEFAULT_POLAR_METHOD
from everyscale.optim.roles import Role, assign_roles

__all__ = ["DEFAULT_LR", "PRESETS", "describe", "describe_optimizer", "optimizer"]

#: default learning rate of each preset (used when ``lr`` is not given). The Scion family's
#: ``2**-12`` goes with its default radii (50, head 3000): the step is ``lr * radius`` in each
#: layer's norm, so ``2**-13 .. 2**-10`` works and the lr scales as ``1 / radius`` (module
#: docstring, "Learning rate and radius").
DEFAULT_LR: dict[str, float] = {
    "sgd": 1e-2,
    "normalized_sgd": 1e-2,
    "signsgd": 1e-3,
    "signum": 1e-3,
    "lion": 1e-4,
    "adamw": 1e-3,
    "muon": 2e-2,
    "scion": 2.0**-12,
    "uscion": 2.0**-12,
    "clipped_scion": 2.0**-12,
}
PRESETS: tuple[str, ...] = tuple(DEFAULT_LR)

# Options every preset accepts, besides its own.
_COMMON = {"weight_decay", "foreach", "nonfinite", "example_input", "roles"}

# The options of each preset and their defaults (torch.optim's names where one exists).
_OPTIONS: dict[str, dict[str, Any]] = {
    "sgd": {
        "momentum": 0.0,
        "dampening": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
        "decoupled_weight_decay": False,
    },
    "normalized_sgd": {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    "signsgd": {"momentum": 0.0, "weight_decay": 0.0},
    "signum": {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    "lion": {"betas": (0.9, 0.99), "weight_decay": 0.0},
    "adamw": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
    "muon": {
        "momentum": 0.95,
        "nesterov": True,
        "weight_decay": 0.1,
        "ns_steps": 5,
        "ns_method": DEFAULT_POLAR_METHOD,
        "ns_dtype": "auto",
        "adjust_lr_fn": None,
        "spectral_for": "hidden",
        "rest": "adamw",
        "rest_lr": None,
        "rest_weight_decay": None,
        "betas": None,
        "eps": None,
    },
}
_SCION_OPTIONS: dict[str, Any] = {
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 0.0,
    "radius": 50.0,
    "input_radius": None,
    "output_radius": None,
    "vector_radius": None,
    "ns_steps": 5,
    "ns_method": DEFAULT_POLAR_METHOD,
    "ns_dtype": "auto",
}
for _name in ("scion", "uscion", "clipped_scion"):
    _OPTIONS[_name] = dict(_SCION_OPTIONS)
_SCION_STEP = {"scion": "constrained", "uscion": "unconstrained", "clipped_scion": "clipped"}
#: Scion's output radius relative to the hidden radius (3000 / 50 in the nanoGPT config)
SCION_OUTPUT_RATIO = 60.0

#: presets whose settings depend on the roles (the others treat every parameter alike)
ROLE_PRESETS = ("muon", "scion", "uscion", "clipped_scion")

_MUON_ADJUSTMENTS = {None: "max1", "original": "max1", "match_rms_adamw": "muon_rms"}


def _check_preset(preset: str) -> None:
    if preset not in DEFAULT_LR:
        raise ValueError(f"unknown preset {preset!r}; valid presets are {', '.join(PRESETS)}")


def _settings(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's options with ``overrides`` applied; unknown names are an error."""
    options = dict(_OPTIONS[preset])
    unknown = sorted(set(overrides) - set(options) - _COMMON)
    if unknown:
        valid = ", ".join(sorted(set(options) | _COMMON))
        raise ValueError(
            f"preset {preset!r} does not take {', '.join(unknown)}; its options are {valid}"
        )
    options.update({k: v for k, v in overrides.items() if k in options})
    return options


def _matrix_norm(p: torch.Tensor, o: dict[str, Any], scaling: str) -> dict[str, Any]:
    """Spectral (matrices) or SpectralConv (kernels) with the polar-factor options."""
    polar = {"method": o["ns_method"], "steps": o["ns_steps"], "dtype": o["ns_dtype"]}
    if p.ndim >= 3:
        return {"norm": "spectral_conv", "norm_kwargs": polar}
    return {"norm": "spectral", "norm_kwargs": {"scaling": scaling, **polar}}


def _group_settings(
    preset: str, lr: float, o: dict[str, Any], role: Role, p: torch.Tensor, is_embedding: bool
) -> dict[str, Any]:
    """The param-group settings one parameter gets under ``preset``."""
    wd = o["weight_decay"]
    if preset == "sgd":
        return {
            "norm": "identity",
            "step": "sharp",
            "momentum_style": "heavy_ball",
            "momentum": o["momentum"],
            "dampening": o["dampening"],
            "nesterov": o["nesterov"],
            "weight_decay": wd,
            "weight_decay_style": "decoupled" if o["decoupled_weight_decay"] else "l2",
        }
    if preset == "normalized_sgd":
        return {"norm": "euclidean", "step": "unconstrained", "momentum": o["momentum"],
                "nesterov": o["nesterov"], "weight_decay": wd}  # fmt: skip
    if preset in ("signsgd", "signum"):
        return {"norm": "sign", "step": "unconstrained", "momentum": o["momentum"],
                "nesterov": o.get("nesterov", False), "weight_decay": wd}  # fmt: skip
    if preset == "lion":
        return {"norm": "sign", "step": "unconstrained", "momentum_style": "lion",
                "betas": o["betas"], "weight_decay": wd}  # fmt: skip
    if preset == "adamw":
        return {"norm": "adam", "step": "sharp", "betas": o["betas"], "eps": o["eps"],
                "weight_decay": wd}  # fmt: skip
    if preset == "muon":
        return _muon_settings(lr, o, role, p)
    return _scion_settings(preset, o, role, p, is_embedding)


def _muon_settings(lr: float, o: dict[str, Any], role: Role, p: torch.Tensor) -> dict[str, Any]:
    if o["adjust_lr_fn"] not in _MUON_ADJUSTMENTS:
        raise ValueError(
            f"muon: adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got "
            f"{o['adjust_lr_fn']!r}"
        )
    if o["spectral_for"] not in ("hidden", "all"):
        raise ValueError(
            f"muon: spectral_for must be 'hidden' (embedding and head go to the rest preset) "
            f"or 'all' (every 2-D matrix), got {o['spectral_for']!r}"
        )
    eligible = p.ndim == 2 and (o["spectral_for"] == "all" or role == Role.HIDDEN)
    if eligible:
        settings = _matrix_norm(p, o, _MUON_ADJUSTMENTS[o["adjust_lr_fn"]])
        return {**settings, "step": "unconstrained", "momentum": o["momentum"],
                "nesterov": o["nesterov"], "weight_decay": o["weight_decay"]}  # fmt: skip
    rest = o["rest"]
    if rest not in DEFAULT_LR or rest in ("muon", "scion", "uscion", "clipped_scion"):
        raise ValueError(
            f"muon: rest must be an elementwise preset for the non-matrix parameters (adamw, "
            f"lion, signum, signsgd, sgd, normalized_sgd), got {rest!r}"
        )
    rest_overrides = {"weight_decay": o["weight_decay"] if o["rest_weight_decay"] is None
                      else o["rest_weight_decay"]}  # fmt: skip
    for key in ("betas", "eps"):
        if o[key] is not None:
            rest_overrides[key] = o[key]
    rest_options = _settings(rest, {k: v for k, v in rest_overrides.items() if k in _OPTIONS[rest]})
    settings = _group_settings(rest, lr, rest_options, role, p, False)
    settings["lr"] = lr if o["rest_lr"] is None else o["rest_lr"]
    return settings


def _scion_settings(
    preset: str, o: dict[str, Any], role: Role, p: torch.Tensor, is_embedding: bool
) -> dict[str, Any]:
    radius = o["radius"]
    radii = {
        Role.INPUT: radius if o["input_radius"] is None else o["input_radius"],
        Role.HIDDEN: radius,
        Role.OUTPUT: SCION_OUTPUT_RATIO * radius
        if o["output_radius"] is None
        else o["output_radius"],
        Role.VECTOR: radius if o["vector_radius"] is None else o["vector_radius"],
    }
    radii[Role.TIED] = radii[Role.OUTPUT]
    if role == Role.VECTOR or p.ndim <= 1:
        norm: dict[str, Any] = {"norm": "rms", "norm_kwargs": {}}
    elif role in (Role.OUTPUT, Role.TIED) and p.ndim == 2:
        norm = {"norm": "sign", "norm_kwargs": {"normalized": True}}
    elif role == Role.INPUT and is_embedding:
        norm = {"norm": "colnorm", "norm_kwargs": {"transpose": True}}
    elif role == Role.INPUT:
        norm = _matrix_norm(p, o, "max1")
    else:
        norm = _matrix_norm(p, o, "natural")
    return {**norm, "radius": radii[role], "step": _SCION_STEP[preset],
            "momentum": o["momentum"], "nesterov": o["nesterov"],
            "weight_decay": o["weight_decay"]}  # fmt: skip


def _entries(
    params_or_model: Any, example_input: Any, role_overrides: Any, uses_roles: bool = True
) -> list[tuple]:
    """``(name, param, role, is_embedding, group_overrides)`` for every trainable parameter."""
    if isinstance(params_or_model, nn.Module):
        model = params_or_model
        with warnings.catch_warnings():
            if not uses_roles:  # roles only label the table: no warning about their order
                warnings.simplefilter("ignore", UserWarning)
            roles = assign_roles(model, example_input=example_input, overrides=role_overrides)
        embeddings = {
            f"{mn}.{pn}" if mn else pn
            for mn, m in model.named_modules()
            if isinstance(m, nn.Embedding)
            for pn, _ in m.named_parameters(recurse=False)
        }
        named = dict(model.named_parameters())
        return [(n, named[n], role, n in embeddings, {}) for n, role in roles.items()]

    if role_overrides:
        raise ValueError("roles= needs a model (nn.Module), not a list of parameters")
    if isinstance(params_or_model, torch.Tensor):
        params_or_model = [params_or_model]
    items = list(params_or_model)
    if not items:
        raise ValueError("optimizer: got an empty parameter list")
    groups = items if isinstance(items[0], dict) else [{"params": items}]
    entries = []
    counter = 0
    for group in groups:
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(
                "optimizer: mix of param-group dicts and tensors; use one or the other"
            )
        extra = {k: v for k, v in group.items() if k != "params"}
        members = group["params"]
        members = [members] if isinstance(members, torch.Tensor) else list(members)
        for item in members:
            if isinstance(item, tuple):
                name, p = item
            else:
                name, p = f"param{counter}", item
            counter += 1
            if not isinstance(p, torch.Tensor):
                raise ValueError(f"optimizer: {name} is a {type(p).__name__}, not a tensor")
            if not p.requires_grad:
                continue
            role = Role.VECTOR if p.ndim <= 1 else Role.HIDDEN
            entries.append((name, p, role, False, extra))
    return entries


def optimizer(
    params_or_model: nn.Module | Iterable[Any],
    preset: str,
    lr: float | None = None,
    **overrides: Any,
) -> NormOptimizer:
    """A ``NormOptimizer`` configured as ``preset`` (see the module docstring and ``PRESETS``).

    Args:
        params_or_model: an ``nn.Module`` (parameters get roles from ``assign_roles``), or
            tensors, ``(name, tensor)`` pairs or param-group dicts (then 1-D tensors are
            ``vector`` and the rest ``hidden``; a dict's other keys override the preset for
            that group, e.g. ``{"params": ..., "lr": 0.1}``).
        preset: one of ``PRESETS``.
        lr: the learning rate; ``None`` takes ``DEFAULT_LR[preset]``. For ``scion``,
            ``uscion`` and ``clipped_scion`` the step is ``lr * radius``: with the default
            radius 50 use ``2**-13 .. 2**-10``, not an Adam-sized lr (module docstring).
        **overrides: the preset's options (torch.optim names), plus ``foreach``,
            ``nonfinite`` (``"raise"``, ``"skip"``, ``"ignore"``), ``example_input`` and
            ``roles`` (``{pattern: role}`` for ``assign_roles``).

    Raises:
        ValueError: unknown preset or option, or an invalid value (negative lr, momentum or
            betas outside [0, 1), radius <= 0, ...).
    """
    _check_preset(preset)
    lr = _check_nonnegative(DEFAULT_LR[preset] if lr is None else lr, "lr")
    options = _settings(preset, overrides)
    if preset == "scion" and options["weight_decay"]:
        raise ValueError(
            f"scion: weight_decay={options['weight_decay']!r} is not needed: the constrained "
            "step already decays W by (1 - lr) every step (decoupled decay 1 relative to lr); "
            "use weight_decay=0, or the uscion or clipped_scion preset for a weight_decay of "
            "your own"
        )
    foreach = overrides.get("foreach")
    nonfinite = overrides.get("nonfinite", "raise")

    entries = _entries(
        params_or_model,
        overrides.get("example_input"),
        overrides.get("roles"),
        uses_roles=preset in ROLE_PRESETS,
    )
    if not entries:
        raise ValueError("optimizer: no trainable parameters (all have requires_grad=False)")
    if preset in _SCION_STEP and not isinstance(params_or_model, nn.Module):
        warnings.warn(
            f"{preset}: without a model every matrix is treated as a hidden layer; pass the "
            "model to get the input (ColNorm / spectral(max1)) and output (Sign) rules",
            stacklevel=2,
        )

    groups: dict[str, dict[str, Any]] = {}
    for name, p, role, is_embedding, extra in entries:
        settings = {"lr": lr, **_group_settings(preset, lr, options, role, p, is_embedding)}
        settings.update(extra)
        settings["role"] = role.value
        settings["preset"] = preset
        key = repr(sorted(settings.items(), key=lambda kv: kv[0]))
        group = groups.setdefault(key, {**settings, "params": []})
        group["params"].append((name, p))
    if preset == "muon" and not any(g["norm"] == "spectral" for g in groups.values()):
        warnings.warn(
            f"muon: no parameter is a 2-D hidden matrix (conv kernels, vectors, embedding and "
            f"head go to the rest preset), so every parameter trains with {options['rest']}; "
            "pass spectral_for='all' to put the embedding and head on the Spectral LMO",
            stacklevel=2,
        )
    return NormOptimizer(list(groups.values()), foreach=foreach, nonfinite=nonfinite)


def _effective_lr(group: dict[str, Any], opt: NormOptimizer, shape: torch.Size) -> float:
    """The scalar in front of the update direction: ``lr rho s`` for LMO steps, ``lr`` else."""
    if group["step"] == "sharp":
        return group["lr"]
    return group["lr"] * group["radius"] * opt.norm_of(group).scale(shape)


def _lr_label(lr: float) -> str:
    """``2^-12`` for a power of two (how the Scion family's rates are written), else ``.4g``."""
    exponent = math.log2(lr) if lr > 0 else 0.5
    return f"2^{exponent:.0f}" if exponent == int(exponent) else f"{lr:.4g}"


def describe_optimizer(opt: NormOptimizer, order: list[str] | None = None) -> str:
    """The table of a ``NormOptimizer``: one row per parameter (in ``order`` if given)."""
    header = ("name", "shape", "role", "norm", "radius", "step", "lr", "effective lr")
    rows = []
    for group in opt.param_groups:
        norm = opt.norm_of(group)
        names = group.get("param_names") or [f"param{i}" for i in range(len(group["params"]))]
        for name, p in zip(names, group["params"]):
            radius = (
                "-"
                if group["step"] == "sharp" or isinstance(norm, Adam)
                else f"{group['radius']:g}"
            )
            rows.append((
                name,
                "x".join(str(s) for s in p.shape) or "scalar",
                str(group.get("role", "-")),
                norm.describe(),
                radius,
                group["step"],
                _lr_label(group["lr"]),
                f"{_effective_lr(group, opt, p.shape):.4g}",
            ))  # fmt: skip
    if order is not None:
        position = {name: i for i, name in enumerate(order)}
        rows.sort(key=lambda row: position.get(row[0], len(position)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    total = sum(p.numel() for g in opt.param_groups for p in g["params"])
    lines.append(
        f"{len(rows)} parameter tensors, {total:,} entries, {len(opt.param_groups)} groups"
    )
    return "\n".join(lines)


def _describe_notes(opt: NormOptimizer, preset: str, overrides: dict[str, Any]) -> list[str]:
    """The lines under ``describe``'s table: how to read the effective lr, where params go."""
    notes = []
    if any(g["step"] != "sharp" for g in opt.param_groups):
        notes.append(
            "effective lr = lr*radius*s (just lr for sharp steps), s the norm's shape factor "
            "(e.g. sqrt(d_out/d_in) for spectral, 1/d_in for sign(1/d_in)): each step moves a "
            "parameter by lr*radius in its own norm"
        )
    if preset in _SCION_STEP:
        rank = {"hidden": 0, "input": 1, "vector": 2}  # the radius= groups, hidden first
        group = min(opt.param_groups, key=lambda g: rank.get(g["role"], 3))
        notes.append(
            f"{preset}: the step is lr*radius ({group['lr'] * group['radius']:.3g} for the "
            f"{group['role']} radius {group['radius']:g}); lr*radius of about 0.006 to 0.05 "
            "trains (radius 50: lr 2^-13..2^-10), so the lr scales as 1/radius"
        )
    if preset == "muon":
        on_lmo, roles, rest_lrs = 0, defaultdict(int), set()
        for group in opt.param_groups:
            if opt.norm_of(group).name == "spectral":
                on_lmo += len(group["params"])
            else:
                roles[group["role"]] += len(group["params"])
                rest_lrs.add(_lr_label(group["lr"]))
        line = f"muon: {on_lmo} matrices take the Spectral LMO"
        if roles:
            counts = ", ".join(f"{n} {role}" for role, n in roles.items())
            line += (
                f"; the other {sum(roles.values())} tensors ({counts}) take the "
                f"{overrides.get('rest', 'adamw')} preset at lr {', '.join(sorted(rest_lrs))} "
                "(rest_lr)"
            )
        notes.append(line)
    notes += _polar_notes(opt)
    return [textwrap.fill(note, width=92, subsequent_indent="  ") for note in notes]


def _polar_notes(opt: NormOptimizer) -> list[str]:
    """How the polar factors are computed: method, steps, dtype and why that dtype."""
    methods = sorted({
        (kwargs["method"], kwargs["steps"], str(kwargs["dtype"] or "float32"))
        for g in opt.param_groups
        if "method" in (kwargs := g["norm_kwargs"]) and "steps" in kwargs
    })  # fmt: skip
    choice = opt.polar_dtype
    notes = []
    for method, steps, dtype in methods:
        why = choice.reason if choice is not None and choice.dtype == dtype else "asked for"
        notes.append(f"polar factor: {method}, {steps} steps, in {dtype} ({why})")
    return notes


def describe(
    model: nn.Module,
    preset: str,
    *,
    base: Any = None,
    width: int | None = None,
    alpha: float = 1.0,
    **overrides: Any,
) -> str:
    """Print and return the table of what ``preset`` does with each parameter of ``model``.

    Columns: name, shape, role, norm, radius, step, lr and the effective lr (the scalar that
    multiplies the unit update: ``lr * radius * s`` with ``s`` the norm's shape factor, e.g.
    ``sqrt(d_out/d_in)`` for Spectral, ``1/d_in`` for the Sign head). ``lr`` may be among
    ``overrides``; it defaults to ``DEFAULT_LR[preset]``. Notes under the table say how to
    read the effective lr, the lr range of the Scion family and, for ``muon``, which preset
    takes the parameters that are not 2-D hidden matrices.

    Given the proxy as ``base`` (a model, its base shapes, or an
    :class:`everyscale.scale.BaseShape` together with the target's ``width``), the table is
    the scale plan's instead: each parameter's width and depth multipliers, residual-branch
    multiplier (``alpha``: 1 CompleteP, 1/2 depth-muP) and learning-rate factor, beside its
    norm, radius and transferred learning rate (see :func:`everyscale.scale.plan`).
    """
    lr = overrides.pop("lr", None)
    opt = optimizer(model, preset, lr, **overrides)
    if base is None:
        table = describe_optimizer(opt, order=[name for name, _ in model.named_parameters()])
    else:
        from everyscale.scale import plan  # scale builds on optim: import it only when asked

        scale_plan = plan(model, preset, base, width=width, alpha=alpha)
        table = scale_plan.table(scale_plan.apply(opt, model), model)
    text = "\n".join([table, *_describe_notes(opt, preset, overrides)])
    print(f"preset {preset}\n{text}")
    return text
