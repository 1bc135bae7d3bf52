"""Base shapes, per-parameter multipliers, learning-rate factors and initialization.

A *proxy* is the small model you tune on; the *target* is the model you want to train with
the proxy's hyperparameters. For every parameter of the target this module derives

- its width multipliers ``m_in = fan_in / fan_in_base`` and ``m_out = fan_out / fan_out_base``,
- whether it sits inside a residual branch, and the depth multiplier ``m_L = L / L_base``,
- the learning-rate factor to multiply the tuned learning rate with, and
- the residual-branch multiplier ``m_L^-alpha`` the model should be built with.

Width: the norm-based presets (``scion``, ``uscion``, ``clipped_scion``, and ``muon`` for its
hidden matrices) need no width factor: their role norms already scale updates like
``sqrt(d_out/d_in)`` (Spectral) and ``1/d_in`` (Sign head), the spectral condition under which
the optimal learning rate is width independent [S, Lemma C.6]. For the other presets the
default ``width_rule="none"`` is the standard parametrization (whose optimum drifts with
width); ``width_rule="mup"`` applies the learning-rate column of muP [Y, TP5 Table 3]:

=========  ===============  ==============
role       SGD              Adam / sign
=========  ===============  ==============
input      ``m_out``        1
hidden     1                ``1/m_in``
output     ``1/m_in``       ``1/m_in``
vector     ``m_out``        1
=========  ===============  ==============

Depth: see :func:`everyscale.scale.rules.depth_lr_factor` ([CP], [TP6]).

References:
    [S]  Pethick et al., *Training Deep Learning Models with Norm-Constrained LMOs*, ICML 2025.
    [Y]  Yang et al., *Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
         Hyperparameter Transfer*, 2022 (muP).
    [CP] Dey et al., *CompleteP*, 2025.  [TP6] Yang et al., *Tensor Programs VI*, 2024.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from everyscale.optim.layouts import Layout, layout_of
from everyscale.optim.registry import get_preset
from everyscale.scale.rules import depth_lr_factor, residual_multiplier, update_family

WidthRule = Literal["none", "mup"]

ROLES = ("input", "hidden", "output", "vector", "tied")
# The optimizer steps that use a group's radius (steepest-descent "sharp" steps do not).
RADIUS_STEPS = ("constrained", "unconstrained", "clipped")  # tied: one embedding/head matrix


@dataclass(frozen=True)
class BaseShape:
    """The proxy stated by its numbers: its width (model dimension) and depth (blocks).

    Use it when you do not have the proxy model at hand. A target dimension counts as a width
    dimension when the parameter's role allows it (an input layer's fan-out, an output layer's
    fan-in, both for hidden matrices, the length of a vector) and it is a whole multiple of the
    target's width; it is then multiplied by ``width / base width``.
    """

    width: int
    depth: int | None = None

    def __post_init__(self) -> None:
        if int(self.width) != self.width or self.width < 1:
            raise ValueError(f"base width: must be a whole number >= 1, got {self.width!r}")
        if self.depth is not None and (int(self.depth) != self.depth or self.depth < 1):
            raise ValueError(f"base depth: must be a whole number >= 1, got {self.depth!r}")


@dataclass(frozen=True)
class ParamScaling:
    """How one parameter of the target relates to the proxy, and its learning-rate factor."""

    name: str
    shape: tuple[int, ...]
    role: str
    fan_in_mult: float
    fan_out_mult: float
    in_residual_branch: bool
    depth_mult: float
    width_lr_factor: float
    depth_lr_factor: float

    @property
    def lr_factor(self) -> float:
        """The tuned learning rate is multiplied by this for this parameter."""
        return self.width_lr_factor * self.depth_lr_factor


@dataclass
class ScalePlan:
    """Everything that changes from the proxy to the target, per parameter."""

    preset: str
    width_rule: str
    alpha: float
    depth: int | None
    base_depth: int | None
    residual_multiplier: float
    block_prefix: str | None
    params: dict[str, ParamScaling] = field(default_factory=dict)

    def lr_factors(self) -> dict[str, float]:
        """Parameter name -> learning-rate factor."""
        return {name: p.lr_factor for name, p in self.params.items()}

    def apply(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        """Multiply each parameter's learning rate in ``optimizer`` by its factor, in place.

        Param groups whose parameters need different factors are split into one group per
        factor (each a copy of the group's settings), so a preset's own grouping is kept.
        Call this right after building the optimizer, before the first step and before a
        scheduler records the groups' initial learning rates.
        """
        if any(optimizer.state.values()):
            raise ValueError("optimizer: apply the scale plan before the first step")
        name_of = {id(p): name for name, p in model.named_parameters()}
        factors = self.lr_factors()
        new_groups = []
        for group in optimizer.param_groups:
            by_factor: dict[float, list[nn.Parameter]] = {}
            for p in group["params"]:
                name = name_of.get(id(p))
                if name is None or name not in factors:
                    raise ValueError(
                        "model: the optimizer holds a parameter the plan does not know; "
                        "build the plan and the optimizer from the same model"
                    )
                by_factor.setdefault(factors[name], []).append(p)
            for factor, params in by_factor.items():
                new_group = {k: v for k, v in group.items() if k not in ("params", "param_names")}
                new_group["params"] = params
                if "param_names" in group:  # torch's named param groups, kept in step
                    group_names = dict(zip(map(id, group["params"]), group["param_names"]))
                    new_group["param_names"] = [group_names[id(p)] for p in params]
                new_group["lr"] = group["lr"] * factor
                new_group["lr_factor"] = factor
                new_groups.append(new_group)
        optimizer.param_groups[:] = new_groups
        return optimizer

    def table(
        self, optimizer: torch.optim.Optimizer | None = None, model: nn.Module | None = None
    ) -> str:
        """A per-parameter table: name, shape, role, multipliers and learning-rate factor.

        Given the (planned) ``optimizer`` and its ``model``, it adds each parameter's norm,
        radius and learning rate as the optimizer holds them.
        """
        header = ("parameter", "shape", "role", "m_in", "m_out", "branch", "m_L", "lr factor")
        group_of = {}
        if optimizer is not None:
            if model is None:
                raise ValueError("model: give the model together with the optimizer")
            header += ("norm", "radius", "lr")
            name_of = {id(p): name for name, p in model.named_parameters()}
            for group in optimizer.param_groups:
                for p in group["params"]:
                    group_of[name_of.get(id(p))] = group
        rows = [header]
        for p in self.params.values():
            row = (
                p.name,
                "x".join(map(str, p.shape)),
                p.role,
                f"{p.fan_in_mult:g}",
                f"{p.fan_out_mult:g}",
                "yes" if p.in_residual_branch else "-",
                f"{p.depth_mult:g}",
                f"{p.lr_factor:.4g}",
            )
            if optimizer is not None:
                group = group_of.get(p.name, {})
                norm = group.get("norm", "-")
                if hasattr(optimizer, "norm_of") and group:
                    norm = optimizer.norm_of(group).describe()
                radius = group.get("radius") if group.get("step") in RADIUS_STEPS else None
                row += (
                    str(norm),
                    f"{radius:g}" if radius is not None else "-",
                    f"{group['lr']:.4g}" if group else "-",
                )
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        summary = (
            f"preset={self.preset} width_rule={self.width_rule} alpha={self.alpha:g} "
            f"depth={self.depth} base_depth={self.base_depth} "
            f"residual_multiplier={self.residual_multiplier:.4g}"
        )
        return summary + "\n" + "\n".join(lines)

    def to_json(self) -> dict:
        out = asdict(self)
        for name, p in self.params.items():
            out["params"][name]["lr_factor"] = p.lr_factor
        return out


def base_shapes(proxy: nn.Module) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the proxy model (what :func:`plan` compares the target with)."""
    return {name: tuple(p.shape) for name, p in proxy.named_parameters()}


def find_blocks(model: nn.Module) -> tuple[str, int] | None:
    """The model's stack of repeated blocks: ``(prefix, count)`` of the longest ``nn.ModuleList``
    (or ``nn.Sequential``) whose children all share one class, or ``None`` if it has none."""
    best: tuple[str, int] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if best is None or len(module) > best[1]:
            best = (name, len(module))
    return best


def _fans(layout: Layout | None, shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a parameter: of one logical matrix for a matrix layout (Linear
    ``(out, in)``, HF Conv1D ``(in, out)``, fused q/k/v, experts), Embedding ``(num, dim)``,
    conv ``(out, in, *kernel)``, vectors ``(n,)``."""
    if len(shape) == 1:
        return 1, shape[0]
    if layout is not None and layout.kind == "embedding" and len(shape) == 2:
        return shape[0], shape[1]
    if layout is not None and layout.kind == "matrix":
        _, fan_out, fan_in = layout.matrix_shape(shape)
        return fan_in, fan_out
    return math.prod(shape[1:]), shape[0]


def _role_names(roles: Mapping[str, object]) -> dict[str, str]:
    out = {}
    for name, role in roles.items():
        value = getattr(role, "value", role)
        value = str(value).lower().split(".")[-1]
        if value not in ROLES:
            raise ValueError(
                f"roles: parameter {name!r} has unknown role {role!r}; use one of "
                f"{', '.join(ROLES)}"
            )
        out[name] = value
    return out


def _width_lr_factor(preset: str, role: str, m_in: float, m_out: float, rule: str) -> float:
    """muP's learning-rate column [Y, TP5 Table 3]; 1 where the preset's geometry already
    meets the spectral condition (its descriptor's ``width_independent_roles``: every role
    for the Scion family, the hidden matrices for Muon)."""
    if rule == "none" or role in get_preset(preset).width_independent_roles:
        return 1.0
    role = "input" if role == "tied" else role  # a tied matrix is stored as the embedding
    if update_family(preset) == "linear":
        return {"input": m_out, "hidden": 1.0, "output": 1 / m_in, "vector": m_out}[role]
    return {"input": 1.0, "hidden": 1 / m_in, "output": 1 / m_in, "vector": 1.0}[role]


def plan(
    model: nn.Module,
    preset: str,
    base: nn.Module | Mapping[str, Sequence[int]] | BaseShape,
    *,
    width: int | None = None,
    alpha: float = 1.0,
    width_rule: WidthRule = "none",
    roles: Mapping[str, object] | None = None,
    example_input: torch.Tensor | None = None,
    residual: bool | None = None,
) -> ScalePlan:
    """Derive the :class:`ScalePlan` that moves ``preset``'s tuned hyperparameters to ``model``.

    Args:
        model: the target model.
        preset: the optimizer preset the proxy was tuned with.
        base: the proxy, as a model, as :func:`base_shapes` of one, or as a :class:`BaseShape`.
            Parameters of blocks the proxy lacks (a deeper target) are compared with the
            proxy's first block.
        width: the target's width; needed only when ``base`` is a :class:`BaseShape`.
        alpha: residual-branch exponent, 1 (CompleteP) or 1/2 (depth-muP).
        width_rule: ``"none"`` (the preset's own geometry; standard parametrization for
            AdamW/SGD) or ``"mup"`` (muP learning-rate factors, see the module docstring).
        roles: parameter name -> role; by default :func:`everyscale.optim.roles.assign_roles`.
        example_input: passed to ``assign_roles`` to find the first and last layers.
        residual: whether the repeated blocks are residual branches; by default, when the
            model has a ``residual_multiplier`` attribute (the everyscale GPT).
    """
    update_family(preset)
    if width_rule not in ("none", "mup"):
        raise ValueError(f"width_rule: choose 'none' or 'mup', got {width_rule!r}")
    if roles is None:
        from everyscale.optim.roles import assign_roles

        roles = assign_roles(model, example_input=example_input)
    role_of = _role_names(roles)
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(role_of))
    if missing:
        raise ValueError(
            f"roles: no role found for {missing[:5]}; pass roles= (name -> "
            "input/hidden/output/vector) or name patterns to assign_roles"
        )

    blocks = find_blocks(model)
    if residual is None:
        residual = hasattr(model, "residual_multiplier")
    block_prefix, depth = blocks if blocks else (None, None)
    block_re = re.compile(rf"^{re.escape(block_prefix)}\.(\d+)\.") if block_prefix else None

    if isinstance(base, BaseShape):
        base_depth = base.depth if base.depth is not None else depth
        if width is None:
            raise ValueError("width: give the target's width when the base is a BaseShape")
        if width < base.width:
            raise ValueError(
                f"base width: the proxy's width ({base.width}) is larger than the target's "
                f"({width}); the base shape must be the smaller model"
            )
        base_table = None
    else:
        base_table = base_shapes(base) if isinstance(base, nn.Module) else dict(base)
        base_depth = None
        if block_re is not None:
            indices = {int(m.group(1)) for n in base_table if (m := block_re.match(n))}
            base_depth = len(indices) if indices else None
        if base_depth is None:
            base_depth = depth

    depth_mult = 1.0
    if residual and depth is not None:
        if base_depth is None:
            raise ValueError("base: cannot tell the proxy's depth; state it in BaseShape(depth=)")
        res_mult = residual_multiplier(depth, base_depth, alpha)
        depth_mult = depth / base_depth
    else:
        res_mult = 1.0

    out = ScalePlan(
        preset=preset,
        width_rule=width_rule,
        alpha=alpha,
        depth=depth,
        base_depth=base_depth,
        residual_multiplier=res_mult,
        block_prefix=block_prefix if residual else None,
    )
    for name, p in params.items():
        shape = tuple(p.shape)
        role = role_of[name]
        layout = layout_of(model, name, p)
        fan_in, fan_out = _fans(layout, shape)
        if base_table is None:
            ratio = width / base.width
            m_in = ratio if role in ("hidden", "output") and fan_in % width == 0 else 1.0
            m_out = ratio if role != "output" and fan_out % width == 0 else 1.0
            if len(shape) == 1:
                m_in = 1.0
        else:
            base_name = name
            if block_re is not None and name not in base_table:
                base_name = block_re.sub(f"{block_prefix}.0.", name)
            if base_name not in base_table:
                raise ValueError(
                    f"base: the proxy has no parameter {name!r}; the proxy must be the same "
                    "architecture at a smaller width or depth"
                )
            base_shape = tuple(base_table[base_name])
            if len(base_shape) != len(shape):
                raise ValueError(
                    f"base: parameter {name!r} has shape {shape} in the target but "
                    f"{base_shape} in the proxy"
                )
            if any(b > t for b, t in zip(base_shape, shape)):
                raise ValueError(
                    f"base: parameter {name!r} is larger in the proxy {base_shape} than in the "
                    f"target {shape}; the base must be the smaller model"
                )
            base_in, base_out = _fans(layout, base_shape)
            m_in, m_out = fan_in / base_in, fan_out / base_out
        in_branch = bool(residual and block_re is not None and block_re.match(name))
        out.params[name] = ParamScaling(
            name=name,
            shape=shape,
            role=role,
            fan_in_mult=m_in,
            fan_out_mult=m_out,
            in_residual_branch=in_branch,
            depth_mult=depth_mult if in_branch else 1.0,
            width_lr_factor=_width_lr_factor(preset, role, m_in, m_out, width_rule),
            depth_lr_factor=depth_lr_factor(depth_mult, alpha, preset) if in_branch else 1.0,
        )
    return out


def init_(
    model: nn.Module, preset: str, init_radius: float | None = None, **overrides
) -> nn.Module:
    """Initialize every parameter on the boundary of its role's norm ball, times its radius.

    The preset (through :func:`everyscale.optim.optimizer`) gives each parameter its norm and
    radius; each norm's ``init_`` then draws a point of norm exactly ``radius``: semi-orthogonal
    for Spectral (scaled ``sqrt(d_out/d_in)``), unit columns/rows for ColNorm/RowNorm, random
    signs for Sign (``1/d_in`` for the head), constant gains for RMS vectors ([S]),
    each on the parameter's logical matrices (its layout: q, k and v of a fused projection,
    each expert of a stack, the transpose of an ``(in, out)`` storage).
    Biases (1-d parameters named ``bias``) start at zero, inside their ball: a bias on the
    boundary would shift every pre-activation by the radius.
    Only groups whose step uses the radius (``constrained``, ``unconstrained``, ``clipped``)
    have a ball; steepest-descent groups (``sharp``: SGD, AdamW) keep the model's own
    initialization, which is the standard parametrization.

    ``init_radius`` replaces every group's radius for the initialization only (the optimizer
    keeps its own; ``overrides`` such as ``radius=`` go to the preset). Scion's reference code
    initializes its MLP on the balls at radius 1 but keeps the
    model's own initialization for nanoGPT, where the radii are 50 and 3000 [S, App. E.3]:
    on a GPT with learned norm gains, the boundary at radius 50 puts the gains at 50 and the
    logits near 1e4 (measured: validation loss above 1e3 after 100 steps at any learning rate).
    """
    if init_radius is not None and not (math.isfinite(init_radius) and init_radius > 0):
        raise ValueError(f"init_radius: must be a finite number > 0 or None, got {init_radius!r}")
    from everyscale.optim import optimizer
    from everyscale.optim.layouts import init_ as init_matrices_

    opt = optimizer(model, preset, lr=1e-3, **overrides)
    name_of = {id(p): name for name, p in model.named_parameters()}
    with torch.no_grad():
        for group in opt.param_groups:
            if group.get("step") not in RADIUS_STEPS:
                continue
            norm, layout = opt.norm_of(group), opt.layout_of(group)
            for p in group["params"]:
                if p.ndim == 1 and name_of.get(id(p), "").rpartition(".")[2] == "bias":
                    p.zero_()
                else:
                    radius = group["radius"] if init_radius is None else init_radius
                    init_matrices_(norm, layout, p, radius)
    return model


def describe_plan(
    model: nn.Module,
    preset: str,
    base: nn.Module | Mapping[str, Sequence[int]] | BaseShape,
    *,
    width: int | None = None,
    alpha: float = 1.0,
    **overrides,
) -> str:
    """Print and return :func:`everyscale.optim.describe`'s table as the scale plan sees it.

    Given the proxy as ``base`` (a model, its base shapes, or a :class:`BaseShape` together
    with the target's ``width``), each parameter's width and depth multipliers,
    residual-branch multiplier (``alpha``: 1 CompleteP, 1/2 depth-muP) and learning-rate
    factor appear beside its norm, radius and transferred learning rate (see :func:`plan`);
    ``overrides`` (``lr`` among them) go to the preset.
    """
    from everyscale.optim import optimizer
    from everyscale.optim.presets import describe_notes

    lr = overrides.pop("lr", None)
    opt = optimizer(model, preset, lr, **overrides)
    scale_plan = plan(model, preset, base, width=width, alpha=alpha)
    table = scale_plan.table(scale_plan.apply(opt, model), model)
    text = "\n".join([table, *describe_notes(opt, preset, overrides)])
    print(f"preset {preset}\n{text}")
    return text
