"""``NormOptimizer``: the optimizer template, one ``torch.optim.Optimizer`` for every preset.

For a parameter ``W`` with gradient ``g`` in a group with norm ``||.||`` (its unit LMO ``lmo``,
see ``norms.py``), radius ``rho``, learning rate ``gamma`` and momentum ``beta``
(Pethick et al. 2025 [S], the per-layer form of Alg. 3; Pethick et al., *Training Neural
Networks at Any Scale*, 2025 [R]):

1. optional L2 decay into the gradient (``weight_decay_style="l2"``, torch.optim.SGD):
   ``g <- g + lambda W``;
2. momentum, one of three styles:

   - ``"ema"`` (default): ``d_k = (1 - beta) g_k + beta d_{k-1}`` (zero start); with
     ``nesterov`` the direction is ``(1 - beta) g_k + beta d_k`` (torch.optim.Muon);
   - ``"heavy_ball"`` (torch.optim.SGD): ``b_k = mu b_{k-1} + (1 - dampening) g_k``
     (``b_1 = g_1``); with ``nesterov`` the direction is ``g_k + mu b_k``;
   - ``"lion"`` (Chen et al. 2023, *Symbolic Discovery of Optimization Algorithms*):
     direction ``beta1 m_{k-1} + (1 - beta1) g_k``, then ``m_k = beta2 m_{k-1} + (1 - beta2) g_k``
     (``betas=(beta1, beta2)``);

3. optional decoupled decay (``weight_decay_style="decoupled"``, AdamW, Muon; Loshchilov &
   Hutter 2019): ``W <- (1 - gamma lambda) W``;
4. the step (``step=``):

   - ``"unconstrained"`` (uSCG, [S]): ``W <- W + gamma rho lmo(d)``;
   - ``"constrained"`` (SCG / Frank-Wolfe, [S]): ``W <- (1 - gamma) W + gamma rho lmo(d)``,
     which keeps ``||W|| <= rho`` once it holds (it *is* decoupled weight decay 1, so extra
     ``weight_decay`` is refused);
   - ``"clipped"`` (Pethick et al. 2025 [G], *Generalized Gradient Norm Clipping*):
     ``W <- W + gamma min(rho, ||d||_*) lmo(d)``, steepest descent for small ``d`` and uSCG for
     large ``d``, with ``||d||_* = -<d, lmo(d)>``;
   - ``"sharp"`` (steepest descent): ``W <- W - gamma d#`` with ``d# = -||d||_* lmo(d)``; for the
     ``identity`` geometry ``d# = d`` (SGD) and for ``adam`` ``d# = m_hat / (sqrt(v_hat) + eps)``
     with Adam's moments (Kingma & Ba 2015), written as torch.optim.AdamW computes it.

Shape factors of the norms (``s`` in ``lmo = s lmo_0``) are folded into the scalar of the
update. A group may carry a ``layout`` (``everyscale.optim.layouts.Layout``, as plain data):
the direction is then read as its logical matrices (a transposed ``(in, out)`` storage, fused
q/k/v, gate stacks, a stack of experts) before the LMO and written back after it, each matrix
with its own LMO and shape factor. Two code paths compute the same thing: a per-tensor loop
(``foreach=False``) and a ``torch._foreach_*`` path (``foreach=True``) in which the same-shape
matrices of a group that use a polar factor are orthogonalized together in one batched call.

The optimizer's state lives in ``self.state`` (``momentum_buffer``, Adam's ``exp_avg``,
``exp_avg_sq``, ``step``); ``state_dict()["everyscale"]`` adds two counters (steps taken,
non-finite steps skipped), the preset that built the optimizer and the polar-factor dtype
chosen for ``dtype="auto"`` (``everyscale.optim.polar_dtype``: once per optimizer, on its first
polar group). The norm of each group is stored as plain data (``norm`` name plus
``norm_kwargs``, the resolved dtype included), so a state_dict survives
``torch.save``/``torch.load(weights_only=True)``, resuming continues bit for bit in the dtype
the run started with, and ``load_state_dict`` refuses a state saved by another preset.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from everyscale.optim.adaptive import AdaptiveGeometry
from everyscale.optim.layouts import Layout
from everyscale.optim.norms import Adam, Identity, Norm, adam_denominator, get_norm
from everyscale.optim.polar_dtype import PolarDtypeChoice, choose_polar_dtype

__all__ = ["MOMENTUM_STYLES", "STEPS", "NonFiniteGradientError", "NormOptimizer"]

STEPS = ("constrained", "unconstrained", "clipped", "sharp")
MOMENTUM_STYLES = ("ema", "heavy_ball", "lion")
WEIGHT_DECAY_STYLES = ("decoupled", "l2")
NONFINITE_POLICIES = ("raise", "skip", "ignore")


class NonFiniteGradientError(FloatingPointError, ValueError):
    """A gradient holds NaN or inf; the parameters were left untouched."""


def _check_fraction(value: Any, what: str) -> float:
    """``value`` must be a number in ``[0, 1)`` (momentum, betas)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


def _check_nonnegative(value: Any, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _preset_of(groups: list[dict[str, Any]]) -> str | None:
    """The preset named by the groups' ``preset`` entries (None when there is none)."""
    names = {group.get("preset") for group in groups} - {None}
    return ", ".join(sorted(names)) if names else None


def _check_same_preset(saved: str | None, current: str | None) -> None:
    """Refuse the state of one preset loaded into another (it would take its settings)."""
    if saved is not None and current is not None and saved != current:
        raise ValueError(
            f"load_state_dict: this state_dict was saved by the {saved!r} preset, but this "
            f"optimizer is the {current!r} preset; loading it would replace {current}'s "
            f"settings and state with {saved}'s. Resume with everyscale.optimizer(model, "
            f"{saved!r}), or leave the optimizer state out to start {current} afresh"
        )


class NormOptimizer(torch.optim.Optimizer):
    """Steepest descent under a per-group norm, through the norm's LMO (see module docstring).

    Args:
        params: tensors, ``(name, tensor)`` pairs (names make error messages precise) or
            param-group dicts; every group key below can be set per group.
        lr: step size ``gamma`` (>= 0).
        norm: a ``Norm`` or a registry name (``norms.NORMS``); ``norm_kwargs`` its options.
        radius: ``rho`` > 0, the radius of the norm ball (scales the LMO).
        step: ``"unconstrained"``, ``"constrained"``, ``"clipped"`` or ``"sharp"``.
        momentum: ``beta`` in ``[0, 1)`` (0: no momentum).
        momentum_style: ``"ema"``, ``"heavy_ball"`` or ``"lion"``.
        nesterov: Nesterov variant of the momentum style.
        dampening: heavy-ball dampening (torch.optim.SGD's).
        betas: ``(beta1, beta2)`` for ``lion`` momentum and the ``adam`` geometry.
        eps: Adam's epsilon.
        weight_decay: ``lambda`` >= 0; ``weight_decay_style`` ``"decoupled"`` or ``"l2"``.
        foreach: ``True`` for the ``torch._foreach_*`` path, ``False`` for the per-tensor loop,
            ``None`` to pick as torch does (foreach on accelerators, loop on the CPU), except
            that groups whose norm takes a polar factor always batch it.
        layout: how each parameter is read as matrices (a ``Layout`` or its ``config()``);
            ``None`` takes the tensor as it is stored.
        nonfinite: what to do with a NaN/inf gradient: ``"raise"`` (default; an error naming
            the parameter and the step, parameters untouched), ``"skip"`` (skip the whole step
            and count it in ``skipped_steps``) or ``"ignore"`` (no check).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        *,
        norm: str | Norm = "euclidean",
        norm_kwargs: dict[str, Any] | None = None,
        radius: float = 1.0,
        step: str = "unconstrained",
        momentum: float = 0.0,
        momentum_style: str = "ema",
        nesterov: bool = False,
        dampening: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        weight_decay_style: str = "decoupled",
        foreach: bool | None = None,
        layout: Layout | dict[str, Any] | None = None,
        nonfinite: str = "raise",
    ) -> None:
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, got {nonfinite!r}"
            )
        self.nonfinite = nonfinite
        self._norm_cache: dict[str, Norm] = {}
        defaults = {
            "lr": lr,
            "norm": norm,
            "norm_kwargs": dict(norm_kwargs or {}),
            "radius": radius,
            "step": step,
            "momentum": momentum,
            "momentum_style": momentum_style,
            "nesterov": nesterov,
            "dampening": dampening,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "weight_decay_style": weight_decay_style,
            "foreach": foreach,
            "layout": layout,
        }
        self._counters = {"steps": 0, "skipped_steps": 0, "preconditioner_fallbacks": 0}
        self._polar_choice: PolarDtypeChoice | None = None  # resolved by the first "auto" group
        self._warned_fallback = False
        #: ``lmo_hook(optimizer, group, norm, params, directions, foreach) -> list[Tensor]``,
        #: when set, computes a group's base LMOs in place of ``group_base_lmos``
        #: (``everyscale.dist`` installs one: an owner rank computes each polar factor, through
        #: ``group_base_lmos``, and the results are shared).
        self.lmo_hook: Callable[..., list[Tensor]] | None = None
        super().__init__(params, defaults)

    # ---------------------------------------------------------------- groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, filling defaults and validating every setting and parameter."""
        param_group = dict(param_group)
        if "norm_kwargs" in param_group:
            param_group["norm_kwargs"] = dict(param_group["norm_kwargs"] or {})
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._normalize_group(group, len(self.param_groups) - 1)
        except Exception:
            self.param_groups.pop()
            raise

    def _normalize_group(self, group: dict[str, Any], index: int) -> None:
        where = f"param group {index}"
        names = group.get("param_names")
        if names:  # name the parameters so that the message points at the model
            where += f" ({names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''})"
        norm = group["norm"]
        if isinstance(norm, Norm):
            if group["norm_kwargs"]:
                raise ValueError(f"{where}: give norm options either in the Norm or in norm_kwargs")
            config = norm.config()
            group["norm"] = config.pop("name")
            group["norm_kwargs"] = config
        else:
            group["norm_kwargs"] = dict(group["norm_kwargs"])
        norm = self._norm_of(group)  # validates the name and options
        if group["norm_kwargs"].get("dtype") == "auto" and group["params"]:
            group["norm_kwargs"]["dtype"] = self._job_polar_dtype(group["params"][0].device)
            norm = self._norm_of(group)

        lr = group["lr"]
        if isinstance(lr, Tensor):
            raise ValueError(f"{where}: lr must be a Python float, got a Tensor")
        group["lr"] = _check_nonnegative(lr, f"{where}: lr")
        radius = group["radius"]
        if (
            isinstance(radius, bool)
            or not isinstance(radius, (int, float))
            or not math.isfinite(radius)
            or radius <= 0
        ):
            raise ValueError(f"{where}: radius must be a finite number > 0, got {radius!r}")
        group["radius"] = float(radius)
        group["momentum"] = _check_fraction(group["momentum"], f"{where}: momentum")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = tuple(
            _check_fraction(b, f"{where}: betas[{i}]") for i, b in enumerate(betas)
        )
        group["eps"] = _check_nonnegative(group["eps"], f"{where}: eps")
        group["weight_decay"] = _check_nonnegative(group["weight_decay"], f"{where}: weight_decay")
        dampening = group["dampening"]
        if _check_nonnegative(dampening, f"{where}: dampening") > 1:
            raise ValueError(f"{where}: dampening must be in [0, 1], got {dampening!r}")
        group["dampening"] = float(dampening)
        for key, valid in (
            ("step", STEPS),
            ("momentum_style", MOMENTUM_STYLES),
            ("weight_decay_style", WEIGHT_DECAY_STYLES),
        ):
            if group[key] not in valid:
                raise ValueError(
                    f"{where}: {key} must be one of {', '.join(valid)}, got {group[key]!r}"
                )
        group["nesterov"] = bool(group["nesterov"])
        if group["foreach"] not in (None, True, False):
            raise ValueError(f"{where}: foreach must be None, True or False")

        heavy_nesterov = group["momentum_style"] == "heavy_ball" and group["nesterov"]
        if heavy_nesterov and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"{where}: Nesterov heavy-ball momentum needs momentum > 0 and dampening = 0 "
                f"(as torch.optim.SGD), got momentum={group['momentum']}, "
                f"dampening={group['dampening']}"
            )
        if group["step"] == "constrained" and group["weight_decay"] > 0:
            raise ValueError(
                f"{where}: step='constrained' already decays W by (1 - lr) every step; set "
                f"weight_decay=0, or use step='unconstrained' with "
                f"weight_decay={group['weight_decay']}"
            )
        if isinstance(norm, AdaptiveGeometry):
            self._check_adaptive_group(group, norm, where)
        if isinstance(norm, Adam) and group["step"] != "sharp":
            raise ValueError(
                f"{where}: the adam geometry has no fixed ball; use step='sharp' (got "
                f"step={group['step']!r})"
            )

        layout = _group_layout(group, where)
        for i, p in enumerate(group["params"]):
            name = self._param_name(group, index, i)
            if torch.is_complex(p):
                raise ValueError(f"{name}: complex parameters are not supported; use real tensors")
            if not p.is_floating_point():
                raise ValueError(f"{name}: parameters must be floating point, got {p.dtype}")
            if _reshapes(layout, p.shape):
                layout.check(p.shape, name)
                norm.check(layout.matrix_shape(p.shape)[1:], name)
            else:
                norm.check(p.shape, name)

    @staticmethod
    def _check_adaptive_group(group: dict[str, Any], norm: AdaptiveGeometry, where: str) -> None:
        """A learned geometry takes its own step: W <- (1 - lr wd) W - lr u (decoupled)."""
        if group["step"] != "sharp":
            raise ValueError(
                f"{where}: the {norm.name} geometry computes its own step; use step='sharp' "
                f"(got step={group['step']!r})"
            )
        if group["weight_decay"] and group["weight_decay_style"] != "decoupled":
            raise ValueError(
                f"{where}: the {norm.name} geometry uses decoupled weight decay; set "
                f"weight_decay_style='decoupled'"
            )
        if group["momentum_style"] != "ema":
            raise ValueError(
                f"{where}: the {norm.name} geometry keeps an EMA first moment; set "
                f"momentum_style='ema' (got {group['momentum_style']!r})"
            )

    def _norm_of(self, group: dict[str, Any]) -> Norm:
        """The group's ``Norm``, rebuilt from its plain-data description (cached)."""
        key = repr((group["norm"], sorted(group["norm_kwargs"].items())))
        norm = self._norm_cache.get(key)
        if norm is None:
            norm = get_norm(group["norm"], **group["norm_kwargs"])
            self._norm_cache[key] = norm
        return norm

    def norm_of(self, group: dict[str, Any]) -> Norm:
        """The ``Norm`` object of a param group (``optimizer.param_groups[i]``)."""
        return self._norm_of(group)

    def layout_of(self, group: dict[str, Any]) -> Layout | None:
        """The ``Layout`` of a param group, or ``None`` (tensors as stored)."""
        return _group_layout(group, "param group")

    def shape_factor(self, group: dict[str, Any], shape: torch.Size | tuple[int, ...]) -> float:
        """The norm's shape factor ``s`` for a parameter of ``shape`` in ``group``, taken on
        its logical matrices when the group has a layout."""
        return _shape_factor(self._norm_of(group), self.layout_of(group), shape)

    @staticmethod
    def _param_name(group: dict[str, Any], group_index: int, i: int) -> str:
        names = group.get("param_names")
        if names:
            return f"parameter {names[i]!r}"
        shape = tuple(group["params"][i].shape)
        return f"parameter {i} of param group {group_index} (shape {shape})"

    # ---------------------------------------------------------------- counters
    @property
    def steps_taken(self) -> int:
        """How many times ``step()`` was called (including skipped steps)."""
        return self._counters["steps"]

    @property
    def preconditioner_fallbacks(self) -> int:
        """Matrices whose preconditioner failed to decompose (Shampoo, SOAP) and that took
        the fallback step instead (see ``shampoo.py``, ``soap.py``)."""
        return self._counters.get("preconditioner_fallbacks", 0)

    @property
    def skipped_steps(self) -> int:
        """How many steps were skipped for a non-finite gradient (``nonfinite="skip"``)."""
        return self._counters["skipped_steps"]

    # ---------------------------------------------------------------- job record
    @property
    def preset(self) -> str | None:
        """The preset that built this optimizer (``everyscale.optimizer``), or None."""
        return _preset_of(self.param_groups)

    @property
    def polar_dtype(self) -> PolarDtypeChoice | None:
        """The dtype chosen for ``ns_dtype="auto"`` polar factors and why (None if none)."""
        return self._polar_choice

    def _job_polar_dtype(self, device: torch.device) -> str:
        """The job's polar-factor dtype: chosen once (``choose_polar_dtype``), then reused."""
        if self._polar_choice is None:
            self._polar_choice = choose_polar_dtype(device)
        return self._polar_choice.dtype

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["everyscale"] = dict(self._counters)
        state["everyscale"]["preset"] = self.preset
        if self._polar_choice is not None:
            state["everyscale"]["polar_dtype"] = self._polar_choice.to_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state; refused (ValueError) if another preset saved it.

        The settings of the saved groups come back with it (as in ``torch.optim``), the
        polar-factor dtype included, so a resumed run keeps the dtype it started with.
        """
        state_dict = dict(state_dict)
        record = dict(state_dict.pop("everyscale", None) or {})
        _check_same_preset(record.get("preset") or _preset_of(state_dict["param_groups"]),
                           self.preset)  # fmt: skip
        super().load_state_dict(state_dict)
        self._keep_saved_dtypes(state_dict)
        self._norm_cache.clear()
        for key in self._counters:
            if key in record:
                self._counters[key] = int(record[key])
        if record.get("polar_dtype") is not None:
            self._polar_choice = PolarDtypeChoice.from_dict(record["polar_dtype"])

    def _keep_saved_dtypes(self, state_dict: dict[str, Any]) -> None:
        """Undo torch's cast of every state tensor to its parameter's dtype.

        ``torch.optim.Optimizer.load_state_dict`` converts each floating-point state tensor
        to the parameter's dtype. The learned geometries keep float32 factors for bfloat16
        weights and boolean flags; those are reloaded as they were saved, so that resuming
        continues bit for bit.
        """
        saved = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for saved_id, p in zip(saved, params):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                if key != "step" and isinstance(value, Tensor) and value.dtype != p.dtype:
                    self.state[p][key] = value.to(device=p.device, copy=True)

    # ---------------------------------------------------------------- the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of the template for every group. Returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._counters["steps"] += 1

        work = []
        for gi, group in enumerate(self.param_groups):
            params, grads, names = [], [], []
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError(
                        f"{self._param_name(group, gi, i)}: sparse gradients are not supported "
                        f"(e.g. use nn.Embedding(sparse=False))"
                    )
                params.append(p)
                grads.append(p.grad)
                names.append(self._param_name(group, gi, i))
            if params:
                work.append((group, params, grads, names))

        if self.nonfinite != "ignore" and not self._all_finite(work):
            return loss

        for group, params, grads, _ in work:
            norm = self._norm_of(group)
            foreach = group["foreach"]
            if foreach is None:
                # As torch: foreach on accelerators. On the CPU too for polar-factor groups,
                # where one batched product per shape beats a loop of small ones.
                foreach = getattr(norm, "batchable", False) or all(
                    p.device.type != "cpu" for p in params
                )
            if isinstance(norm, AdaptiveGeometry):
                self._adaptive(group, norm, params, grads, foreach)
            elif isinstance(norm, Adam):
                (self._adam_foreach if foreach else self._adam_single)(group, params, grads)
            else:
                self._template(group, norm, params, grads, foreach)
        return loss

    def _all_finite(self, work: list[tuple[dict, list[Tensor], list[Tensor], list[str]]]) -> bool:
        """False if the step must be skipped; raises under ``nonfinite="raise"``."""
        grads = [g for _, _, gs, _ in work for g in gs]
        if not grads:
            return True
        # One fused pass; a non-finite entry makes its tensor's norm non-finite.
        norms = torch.stack([n.float() for n in torch._foreach_norm(grads)])
        if bool(torch.isfinite(norms).all()):
            return True
        names = [n for _, _, _, ns in work for n in ns]
        for name, g in zip(names, grads):
            if not bool(torch.isfinite(g).all()):  # exact check (the norm can overflow)
                if self.nonfinite == "skip":
                    self._counters["skipped_steps"] += 1
                    return False
                raise NonFiniteGradientError(
                    f"{name} has a non-finite gradient (NaN or inf) at step "
                    f"{self._counters['steps']}; parameters were left unchanged. Lower the "
                    f"learning rate or clip gradients, or pass nonfinite='skip' to skip such steps"
                )
        return True

    # .................................................................. template
    def _momentum(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], foreach: bool
    ) -> list[Tensor]:
        """The momentum direction of each parameter (may alias ``grads`` or the buffers)."""
        style, nesterov = group["momentum_style"], group["nesterov"]
        if style == "lion":
            beta1, beta2 = group["betas"]
            bufs = [self._buffer(p) for p in params]
            if foreach:
                directions = [g.lerp(m, beta1) for g, m in zip(grads, bufs)]
                torch._foreach_lerp_(bufs, grads, 1 - beta2)
            else:
                directions = []
                for g, m in zip(grads, bufs):
                    directions.append(g.lerp(m, beta1))
                    m.lerp_(g, 1 - beta2)
            return directions

        beta = group["momentum"]
        if beta == 0:
            return grads
        if style == "ema":
            bufs = [self._buffer(p) for p in params]
            if foreach:
                torch._foreach_lerp_(bufs, grads, 1 - beta)
            else:
                for m, g in zip(bufs, grads):
                    m.lerp_(g, 1 - beta)
            if not nesterov:
                return bufs
            return [g.lerp(m, beta) for g, m in zip(grads, bufs)]

        # heavy ball, exactly as torch.optim.SGD: the first buffer is a copy of the gradient
        dampening = group["dampening"]
        old, old_grads = [], []
        for p, g in zip(params, grads):
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.detach().clone()
            else:
                old.append(state["momentum_buffer"])
                old_grads.append(g)
        if old:
            if foreach:
                torch._foreach_mul_(old, beta)
                torch._foreach_add_(old, old_grads, alpha=1 - dampening)
            else:
                for b, g in zip(old, old_grads):
                    b.mul_(beta).add_(g, alpha=1 - dampening)
        bufs = [self.state[p]["momentum_buffer"] for p in params]
        if not nesterov:
            return bufs
        if foreach:
            return list(torch._foreach_add(grads, bufs, alpha=beta))
        return [g.add(b, alpha=beta) for g, b in zip(grads, bufs)]

    def _buffer(self, p: Tensor) -> Tensor:
        """The zero-started momentum buffer of ``p``."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["momentum_buffer"]

    def _base_lmos(self, norm: Norm, directions: list[Tensor], foreach: bool) -> list[Tensor]:
        """``lmo_0`` of each direction; same-shape polar LMOs batched on the foreach path."""
        if not (foreach and getattr(norm, "batchable", False)) or len(directions) == 1:
            return [norm.base_lmo(d) for d in directions]
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, d in enumerate(directions):
            by_shape[tuple(d.shape)].append(i)
        out: list[Tensor | None] = [None] * len(directions)
        for indices in by_shape.values():
            if len(indices) == 1:
                out[indices[0]] = norm.base_lmo(directions[indices[0]])
                continue
            stacked = norm.base_lmo(torch.stack([directions[i] for i in indices]), batched=True)
            for i, lmo in zip(indices, stacked.unbind(0)):
                out[i] = lmo
        return out  # type: ignore[return-value]

    def group_base_lmos(
        self, group: dict[str, Any], norm: Norm, directions: list[Tensor], foreach: bool
    ) -> list[Tensor]:
        """``lmo_0`` of each direction of ``group`` (what an owner rank computes)."""
        layout = self.layout_of(group)
        if layout is not None:
            return _layout_base_lmos(norm, layout, directions, foreach)
        return self._base_lmos(norm, directions, foreach)

    def _lmos(
        self,
        group: dict[str, Any],
        norm: Norm,
        params: list[Tensor],
        directions: list[Tensor],
        foreach: bool,
    ) -> list[Tensor]:
        """``lmo_0`` of each direction, through ``lmo_hook`` when one is installed."""
        if self.lmo_hook is None:
            return self.group_base_lmos(group, norm, directions, foreach)
        return self.lmo_hook(self, group, norm, params, directions, foreach)

    def _sharp_from_units(
        self,
        group: dict[str, Any],
        norm: Norm,
        params: list[Tensor],
        directions: list[Tensor],
        foreach: bool,
    ) -> list[Tensor]:
        """``d# = -||d||_* lmo(d)`` with ``||d||_* = -<d, lmo(d)>`` (as ``Norm.sharp``)."""
        units = self._lmos(group, norm, params, directions, foreach)
        updates = []
        for d, u, p in zip(directions, units, params):
            u = u.mul_(norm.scale(p.shape))
            updates.append(u.mul_((d * u).sum()))
        return updates

    def _template(
        self,
        group: dict[str, Any],
        norm: Norm,
        params: list[Tensor],
        grads: list[Tensor],
        foreach: bool,
    ) -> None:
        lr, radius, wd, kind = group["lr"], group["radius"], group["weight_decay"], group["step"]

        if wd and group["weight_decay_style"] == "l2":
            if foreach:
                grads = list(torch._foreach_add(grads, params, alpha=wd))
            else:
                grads = [g.add(p, alpha=wd) for g, p in zip(grads, params)]

        directions = self._momentum(group, params, grads, foreach)

        if wd and group["weight_decay_style"] == "decoupled":
            if foreach:
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                for p in params:
                    p.mul_(1 - lr * wd)

        layout = _group_layout(group, "param group")
        if kind == "sharp":
            if isinstance(norm, Identity):
                updates = directions
            elif layout is not None:
                updates = [_layout_sharp(norm, layout, d) for d in directions]
            elif self.lmo_hook is not None:
                updates = self._sharp_from_units(group, norm, params, directions, foreach)
            else:
                updates = [norm.sharp(d) for d in directions]
            self._apply(params, updates, [-lr] * len(params), foreach)
            return

        units = self._lmos(group, norm, params, directions, foreach)
        scales = [_shape_factor(norm, layout, p.shape) for p in params]
        if kind == "clipped":
            if layout is not None:
                _clip_per_matrix(layout, directions, units, scales, radius, lr)
            else:
                # ||d||_* = -<d, lmo(d)> = -s <d, lmo_0(d)>; step gamma min(rho, ||d||_*) s
                # lmo_0(d). Kept as 0-dim tensors: no host synchronization per parameter.
                # Out of place: under FSDP2 the sum is a DTensor partial sum over the shards.
                for d, u, s in zip(directions, units, scales):
                    dual = torch.sum(d * u).neg().mul(s)
                    u.mul_(dual.clamp(max=radius).mul(lr * s))
            self._apply(params, units, [1.0] * len(params), foreach)
            return
        if kind == "constrained":
            if foreach:
                torch._foreach_mul_(params, 1 - lr)
            else:
                for p in params:
                    p.mul_(1 - lr)
        self._apply(params, units, [lr * radius * s for s in scales], foreach)

    @staticmethod
    def _apply(
        params: list[Tensor], updates: list[Tensor], alphas: list[float], foreach: bool
    ) -> None:
        """``p <- p + alpha u`` for each parameter."""
        if foreach and len(set(alphas)) == 1:
            torch._foreach_add_(params, updates, alpha=alphas[0])
            return
        for p, u, a in zip(params, updates, alphas):
            p.add_(u, alpha=a)

    # .................................................................. learned geometries
    def _adaptive(
        self,
        group: dict[str, Any],
        norm: AdaptiveGeometry,
        params: list[Tensor],
        grads: list[Tensor],
        foreach: bool,
    ) -> None:
        """Shampoo, SOAP, NorMuon: the geometry's kernel; fallbacks counted, warned once."""
        states = [self.state[p] for p in params]
        layout = self.layout_of(group)
        fallbacks = norm.update_(params, grads, states, group, layout, batched=foreach)
        if not any(fallbacks):
            return
        self._counters["preconditioner_fallbacks"] += sum(fallbacks)
        if not self._warned_fallback:
            self._warned_fallback = True
            gi = self.param_groups.index(group)
            index = next(i for i, n in enumerate(fallbacks) if n)
            position = next(j for j, q in enumerate(group["params"]) if q is params[index])
            where = self._param_name(group, gi, position)
            warnings.warn(
                f"{where}: the {norm.name} preconditioner could not be decomposed (non-finite "
                f"factors or eigh did not converge) at step {self._counters['steps']}; that "
                f"matrix takes the fallback step until its next refresh. Counted in "
                f"optimizer.preconditioner_fallbacks; this warning is shown once",
                RuntimeWarning,
                stacklevel=3,
            )

    # .................................................................. adam geometry
    def _adam_state(self, p: Tensor) -> dict[str, Tensor]:
        state = self.state[p]
        if "step" not in state:
            # As torch.optim.Adam: a float32 step counter tensor, zero moments.
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _adam_single(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> None:
        """AdamW (Loshchilov & Hutter 2019) in torch.optim.AdamW's single-tensor op order."""
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p, g in zip(params, grads):
            state = self._adam_state(p)
            state["step"] += 1
            if wd:
                if group["weight_decay_style"] == "decoupled":
                    p.mul_(1 - lr * wd)
                else:
                    g = g.add(p, alpha=wd)
            state["exp_avg"].lerp_(g, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            step = state["step"].item()
            step_size = lr / (1 - beta1**step)
            denom = adam_denominator(state["exp_avg_sq"], step, beta2, eps)
            p.addcdiv_(state["exp_avg"], denom, value=-step_size)

    def _adam_foreach(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> None:
        """AdamW in torch.optim.AdamW(foreach=True)'s op order (non-capturable branch)."""
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        states = [self._adam_state(p) for p in params]
        steps = [s["step"] for s in states]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_add_(steps, 1.0)
        if wd:
            if group["weight_decay_style"] == "decoupled":
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                grads = list(torch._foreach_add(grads, params, alpha=wd))
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        step_values = [s.item() for s in steps]
        step_sizes = [(lr / (1 - beta1**t)) * -1 for t in step_values]
        bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in step_values]
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, bias_correction2_sqrt)
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)


# ---------------------------------------------------------------------- layouts
# A group's layout reads each parameter as a stack of logical matrices (layouts.py) before the
# LMO and writes the result back; these helpers are the whole of it.
def _group_layout(group: dict[str, Any], where: str) -> Layout | None:
    """The group's ``Layout`` (stored as plain data so that a state_dict stays loadable)."""
    config = group.get("layout")
    if config is None:
        return None
    try:
        layout = Layout.from_config(config)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if isinstance(config, Layout):
        group["layout"] = layout.config()
    return layout


def _reshapes(layout: Layout | None, shape: torch.Size | tuple[int, ...]) -> bool:
    return layout is not None and layout.reshapes(shape)


def _shape_factor(norm: Norm, layout: Layout | None, shape: torch.Size | tuple[int, ...]) -> float:
    """``s`` of one logical matrix (all matrices of a layout have the same shape)."""
    if _reshapes(layout, shape):
        return norm.scale(layout.matrix_shape(shape)[1:])
    return norm.scale(shape)


def _layout_base_lmos(
    norm: Norm, layout: Layout, directions: list[Tensor], foreach: bool
) -> list[Tensor]:
    """``lmo_0`` of every logical matrix, written back in each parameter's storage.

    The matrices of one parameter (its experts, its q/k/v) go through one batched call; on the
    foreach path the same-shape matrices of all parameters of the group are stacked together.
    """
    stacks = [
        layout.to_matrices(d) if layout.reshapes(d.shape) else d.unsqueeze(0) for d in directions
    ]
    if foreach and getattr(norm, "batchable", False):
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, m in enumerate(stacks):
            by_shape[tuple(m.shape[1:])].append(i)
        results: list[Tensor | None] = [None] * len(stacks)
        for indices in by_shape.values():
            joint = norm.base_lmo(torch.cat([stacks[i] for i in indices]), batched=True)
            for i, part in zip(indices, joint.split([stacks[i].shape[0] for i in indices])):
                results[i] = part
    else:
        results = [norm.base_lmo(m, batched=True) for m in stacks]
    return [
        layout.from_matrices(u, d.shape) if layout.reshapes(d.shape) else u.squeeze(0)
        for u, d in zip(results, directions)
    ]


def _clip_per_matrix(
    layout: Layout,
    directions: list[Tensor],
    units: list[Tensor],
    scales: list[float],
    radius: float,
    lr: float,
) -> None:
    """The clipped step's ``min(rho, ||d||_*)`` for each logical matrix, in place on ``units``."""
    for i, (d, u, s) in enumerate(zip(directions, units, scales)):
        if not layout.reshapes(d.shape):
            dual = torch.sum(d * u).neg_().mul_(s)
            u.mul_(dual.clamp_(max=radius).mul_(lr * s))
            continue
        d_m, u_m = layout.to_matrices(d), layout.to_matrices(u)
        dual = (d_m * u_m).sum(dim=(-2, -1), keepdim=True).neg_().mul_(s)
        units[i] = layout.from_matrices(u_m * dual.clamp_(max=radius).mul_(lr * s), d.shape)


def _layout_sharp(norm: Norm, layout: Layout, d: Tensor) -> Tensor:
    """The sharp operator on each logical matrix."""
    if not layout.reshapes(d.shape):
        return norm.sharp(d)
    return layout.from_matrices(norm.sharp(layout.to_matrices(d), batched=True), d.shape)
