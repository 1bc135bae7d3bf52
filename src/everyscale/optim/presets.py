"""Presets: today's optimizers as settings of the one template (BRIEF §1, table of presets).

``optimizer(model, "scion", lr=2**-12)`` builds a ``NormOptimizer`` whose param groups carry
each parameter's norm, radius and step. The presets accept the keyword names of their
``torch.optim`` counterparts (``momentum``, ``dampening``, ``nesterov``, ``betas``, ``eps``,
``weight_decay``, ``ns_steps``, ``adjust_lr_fn``), so switching is a one-word change.

=================  ==========================================================================
preset             setting of the template
=================  ==========================================================================
``sgd``            identity sharp operator, heavy-ball momentum, L2 decay (= torch.optim.SGD;
                   ``decoupled_weight_decay=True`` for decoupled decay)
``normalized_sgd`` Euclidean LMO, EMA momentum 0.9, unconstrained: ``W -= lr d / ||d||_F``
``signsgd``        Sign LMO, no momentum: ``W -= lr sign(g)`` (Bernstein et al. 2018)
``signum``         Sign LMO, EMA momentum 0.9: ``W -= lr sign(d)`` (Bernstein et al. 2018)
``lion``           ``W <- (1 - lr wd) W - lr sign(beta1 m + (1 - beta1) g)``, then
                   ``m <- beta2 m + (1 - beta2) g`` (Chen et al. 2023), betas (0.9, 0.99)
``adamw``          diagonal adaptive geometry, decoupled decay (= torch.optim.AdamW)
``muon``           hidden matrices: Spectral LMO by Newton-Schulz, Nesterov EMA 0.95, lr scaled
                   ``max(1, sqrt(A/B))`` (``adjust_lr_fn="original"``) or ``0.2 sqrt(max(A, B))``
                   (``"match_rms_adamw"``), decoupled decay with the unscaled lr
                   (= torch.optim.Muon, Jordan et al. 2024); every other parameter (vectors,
                   kernels, and by default the embedding and head) goes to a second preset,
                   ``rest="adamw"``, with ``rest_lr`` (default ``lr``)
``scion``          every parameter gets its role's norm and radius [S, Rec. 3.1], constrained
``uscion``         the same, unconstrained
``clipped_scion``  the same, clipped [G]
=================  ==========================================================================

Scion's role norms [S, Rec. 3.1]: input = ColNorm on the transposed ``(vocab, d)`` storage for
an ``nn.Embedding``, ``spectral(max1)`` for a linear input layer, ``spectral_conv`` for a conv
input; hidden = Spectral (``spectral_conv`` for kernels); output and tied = Sign scaled
``1/d_in``; vectors = RMS. Radii default to the values of the Scion repository's nanoGPT
configuration (github.com/LIONS-EPFL/scion, README and ``examples/modded-nanogpt``; [S] App. E.3):
``radius=50`` for hidden (and input, vector) layers, ``output_radius = 60 * radius = 3000`` for
the Sign head, EMA momentum 0.9 (their ``momentum=0.1`` is ``1 - beta``), learning rate
``2**-12`` with the constrained step. Those radii were tuned for GPT-2 small; tune ``radius``
and ``output_radius`` on a small proxy for other models (the repository's MLP uses radius 1 and
an output radius ``2**10``, its CNN 8 and ``16 * 8``).

References: [S] Pethick et al., ICML 2025 (arXiv 2502.07529); [G] Pethick et al. 2025 (arXiv
2506.01913); Jordan et al. 2024 (Muon); Liu et al. 2025, *Muon is Scalable for LLM Training*;
Chen et al. 2023 (Lion); Bernstein et al. 2018 (signSGD, Signum); Loshchilov & Hutter 2019.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from everyscale.optim.norms import Adam
from everyscale.optim.optimizer import NormOptimizer
from everyscale.optim.roles import Role, assign_roles

__all__ = ["DEFAULT_LR", "PRESETS", "describe", "describe_optimizer", "optimizer"]

#: default learning rate of each preset (used when ``lr`` is not given)
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
        "ns_method": "newton_schulz",
        "ns_dtype": None,
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
    "ns_method": "newton_schulz",
    "ns_dtype": None,
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
        lr: the learning rate; ``None`` takes ``DEFAULT_LR[preset]``.
        **overrides: the preset's options (torch.optim names), plus ``foreach``,
            ``nonfinite`` (``"raise"``, ``"skip"``, ``"ignore"``), ``example_input`` and
            ``roles`` (``{pattern: role}`` for ``assign_roles``).

    Raises:
        ValueError: unknown preset or option, or an invalid value (negative lr, momentum or
            betas outside [0, 1), radius <= 0, ...).
    """
    _check_preset(preset)
    lr = DEFAULT_LR[preset] if lr is None else lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    options = _settings(preset, overrides)
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
    return NormOptimizer(list(groups.values()), foreach=foreach, nonfinite=nonfinite)


def _effective_lr(group: dict[str, Any], opt: NormOptimizer, shape: torch.Size) -> float:
    """The scalar in front of the update direction: ``lr rho s`` for LMO steps, ``lr`` else."""
    if group["step"] == "sharp":
        return group["lr"]
    return group["lr"] * group["radius"] * opt.norm_of(group).scale(shape)


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
                f"{group['lr']:.4g}",
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


def describe(model: nn.Module, preset: str, **overrides: Any) -> str:
    """Print and return the table of what ``preset`` does with each parameter of ``model``.

    Columns: name, shape, role, norm, radius, step, lr and the effective lr (the scalar that
    multiplies the unit update: ``lr * radius * s`` with ``s`` the norm's shape factor, e.g.
    ``sqrt(d_out/d_in)`` for Spectral, ``1/d_in`` for the Sign head). ``lr`` may be among
    ``overrides``; it defaults to ``DEFAULT_LR[preset]``.
    """
    lr = overrides.pop("lr", None)
    opt = optimizer(model, preset, lr, **overrides)
    table = describe_optimizer(opt, order=[name for name, _ in model.named_parameters()])
    print(f"preset {preset}\n{table}")
    return table
