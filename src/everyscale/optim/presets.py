"""Presets: today's optimizers as settings of the one template (Pethick et al. 2025).

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
``shampoo`` (Gupta et al. 2018; grafting as Shi et al. 2023), hidden matrices
    ``L, R`` EMAs of ``G G^T``, ``G^T G``; every ``precondition_every`` steps
    ``P_L = (L_hat + eps I)^{-1/4}``, ``P_R`` alike (``eigh``); ``D = P_L M_hat P_R`` rescaled to
    the norm of Adam's step; ``W <- (1 - lr wd) W - lr D`` (``shampoo.py``).
``soap`` (Vyas et al. 2024), hidden matrices
    Adam on ``G' = Q_L^T G Q_R`` in the eigenbasis of Shampoo's factors (refreshed every
    ``precondition_every`` steps by one power iteration and QR);
    ``W <- (1 - lr wd) W - lr Q_L (M' / (sqrt(V) + eps)) Q_R^T`` with Adam's bias corrections
    (``soap.py``).
``normuon`` (Li et al. 2025), hidden matrices
    ``O = NS_5(M)``; ``v <- beta2 v + (1 - beta2) mean_j O_ij^2`` per row;
    ``W <- (1 - lr wd) W - lr 0.2 sqrt(mn) O_hat / ||O_hat||_F`` with ``O_hat = O / (sqrt(v) +
    eps)`` (``normuon.py``). In these three presets every other tensor takes AdamW at
    ``rest_lr``.

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

Each of these norms sees a parameter's *logical* matrices, as its layout reads it
(``layouts.py``): GPT-2's ``Conv1D`` weights transposed, ``c_attn`` and ``in_proj_weight`` as
q, k and v, LSTM gates one by one, each expert of a 3-D experts tensor (one batched polar call);
tokens and position tables are vectors and input tables, not kernels. ``muon``'s "2-D hidden
matrices" are the hidden parameters whose layout is a matrix (experts included).

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
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from everyscale.optim.adaptive import AdaptiveGeometry, stack_shape
from everyscale.optim.layouts import layout_of, unreadable_message
from everyscale.optim.norms import Adam
from everyscale.optim.optimizer import NormOptimizer, _check_nonnegative
from everyscale.optim.polar import DEFAULT_POLAR_METHOD
from everyscale.optim.registry import (
    DEFAULT_LR,
    PRESETS,
    ParamInfo,
    PresetSpec,
    get_preset,
    preset_options,
    register_preset,
)
from everyscale.optim.roles import Role, assign_roles

__all__ = ["DEFAULT_LR", "PRESETS", "describe", "describe_optimizer", "optimizer", "state_bytes"]

#: Scion's output radius relative to the hidden radius (3000 / 50 in the nanoGPT config)
SCION_OUTPUT_RATIO = 60.0

_MUON_ADJUSTMENTS = {None: "max1", "original": "max1", "match_rms_adamw": "muon_rms"}


# ------------------------------------------------------------------ options (torch.optim names)
@dataclass(frozen=True)
class SGDOptions:
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False


@dataclass(frozen=True)
class NormalizedSGDOptions:
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass(frozen=True)
class SignSGDOptions:
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class SignumOptions:
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass(frozen=True)
class LionOptions:
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0


@dataclass(frozen=True)
class AdamWOptions:
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-2


@dataclass(frozen=True)
class MuonOptions:
    momentum: float = 0.95
    nesterov: bool = True
    weight_decay: float = 0.1
    ns_steps: int = 5
    ns_method: str = DEFAULT_POLAR_METHOD
    ns_dtype: str | None = "auto"
    adjust_lr_fn: str | None = None
    spectral_for: str = "hidden"  # "hidden" or "all" (every 2-D matrix)
    rest: str = "adamw"  # the elementwise preset of the other parameters
    rest_lr: float | None = None
    rest_weight_decay: float | None = None
    betas: tuple[float, float] | None = None  # for the rest preset
    eps: float | None = None  # for the rest preset


@dataclass(frozen=True)
class ScionOptions:
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    radius: float = 50.0
    input_radius: float | None = None
    output_radius: float | None = None
    vector_radius: float | None = None
    ns_steps: int = 5
    ns_method: str = DEFAULT_POLAR_METHOD
    ns_dtype: str | None = "auto"


# ------------------------------------------------------------------ settings, one per family
def _sgd(lr: float, o: SGDOptions, info: ParamInfo) -> dict[str, Any]:
    return {"norm": "identity", "step": "sharp", "momentum_style": "heavy_ball",
            "momentum": o.momentum, "dampening": o.dampening, "nesterov": o.nesterov,
            "weight_decay": o.weight_decay,
            "weight_decay_style": "decoupled" if o.decoupled_weight_decay else "l2"}  # fmt: skip


def _normalized_sgd(lr: float, o: NormalizedSGDOptions, info: ParamInfo) -> dict[str, Any]:
    return {"norm": "euclidean", "step": "unconstrained", "momentum": o.momentum,
            "nesterov": o.nesterov, "weight_decay": o.weight_decay}  # fmt: skip


def _sign(lr: float, o: SignSGDOptions | SignumOptions, info: ParamInfo) -> dict[str, Any]:
    return {"norm": "sign", "step": "unconstrained", "momentum": o.momentum,
            "nesterov": getattr(o, "nesterov", False), "weight_decay": o.weight_decay}  # fmt: skip


def _lion(lr: float, o: LionOptions, info: ParamInfo) -> dict[str, Any]:
    return {"norm": "sign", "step": "unconstrained", "momentum_style": "lion",
            "betas": o.betas, "weight_decay": o.weight_decay}  # fmt: skip


def _adamw(lr: float, o: AdamWOptions, info: ParamInfo) -> dict[str, Any]:
    return {"norm": "adam", "step": "sharp", "betas": o.betas, "eps": o.eps,
            "weight_decay": o.weight_decay}  # fmt: skip


def _matrix_norm(kind: str, o: MuonOptions | ScionOptions, scaling: str) -> dict[str, Any]:
    """Spectral (matrices) or SpectralConv (kernels) with the polar-factor options."""
    polar = {"method": o.ns_method, "steps": o.ns_steps, "dtype": o.ns_dtype}
    if kind == "conv":
        return {"norm": "spectral_conv", "norm_kwargs": polar}
    return {"norm": "spectral", "norm_kwargs": {"scaling": scaling, **polar}}


def _check_muon(o: MuonOptions) -> None:
    if o.adjust_lr_fn not in _MUON_ADJUSTMENTS:
        raise ValueError(
            f"muon: adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got "
            f"{o.adjust_lr_fn!r}"
        )
    if o.spectral_for not in ("hidden", "all"):
        raise ValueError(
            f"muon: spectral_for must be 'hidden' (embedding and head go to the rest preset) "
            f"or 'all' (every 2-D matrix), got {o.spectral_for!r}"
        )
    rest = get_preset(o.rest) if o.rest in PRESETS else None
    if rest is None or rest.uses_roles or rest.reads_matrices:
        elementwise = [n for n in PRESETS if not (s := get_preset(n)).uses_roles
                       and not s.reads_matrices]  # fmt: skip
        raise ValueError(
            f"muon: rest must be an elementwise preset for the non-matrix parameters "
            f"({', '.join(elementwise)}), got {o.rest!r}"
        )


def _muon(lr: float, o: MuonOptions, info: ParamInfo) -> dict[str, Any]:
    eligible = info.kind == "matrix" and (o.spectral_for == "all" or info.role == Role.HIDDEN)
    if eligible:
        settings = _matrix_norm("matrix", o, _MUON_ADJUSTMENTS[o.adjust_lr_fn])
        return {**settings, "step": "unconstrained", "momentum": o.momentum,
                "nesterov": o.nesterov, "weight_decay": o.weight_decay}  # fmt: skip
    rest = get_preset(o.rest)
    rest_overrides: dict[str, Any] = {
        "weight_decay": o.weight_decay if o.rest_weight_decay is None else o.rest_weight_decay
    }
    for key in ("betas", "eps"):
        if getattr(o, key) is not None:
            rest_overrides[key] = getattr(o, key)
    own = set(rest.option_names())
    rest_options = preset_options(o.rest, {k: v for k, v in rest_overrides.items() if k in own})
    settings = rest.settings(lr, rest_options, info)
    settings["lr"] = lr if o.rest_lr is None else o.rest_lr
    return settings


def _scion_radii(o: ScionOptions) -> dict[Role, float]:
    radius = o.radius
    output = SCION_OUTPUT_RATIO * radius if o.output_radius is None else o.output_radius
    return {
        Role.INPUT: radius if o.input_radius is None else o.input_radius,
        Role.HIDDEN: radius,
        Role.OUTPUT: output,
        Role.TIED: output,
        Role.VECTOR: radius if o.vector_radius is None else o.vector_radius,
    }


def _scion_norm(o: ScionOptions, info: ParamInfo) -> dict[str, Any]:
    """The role norm of [S, Rec. 3.1] for one parameter."""
    role, kind = info.role, info.kind
    if role == Role.VECTOR or kind == "vector" or info.param.ndim <= 1:
        return {"norm": "rms", "norm_kwargs": {}}
    if role in (Role.OUTPUT, Role.TIED) and kind != "conv":
        return {"norm": "sign", "norm_kwargs": {"normalized": True}}
    if role == Role.INPUT and kind == "embedding":
        return {"norm": "colnorm", "norm_kwargs": {"transpose": True}}
    return _matrix_norm(kind, o, "max1" if role == Role.INPUT else "natural")


def _scion_family(step: str) -> Any:
    def settings(lr: float, o: ScionOptions, info: ParamInfo) -> dict[str, Any]:
        return {**_scion_norm(o, info), "radius": _scion_radii(o)[info.role], "step": step,
                "momentum": o.momentum, "nesterov": o.nesterov,
                "weight_decay": o.weight_decay}  # fmt: skip

    return settings


def _check_scion(o: ScionOptions) -> None:
    if o.weight_decay:
        raise ValueError(
            f"scion: weight_decay={o.weight_decay!r} is not needed: the constrained "
            "step already decays W by (1 - lr) every step (decoupled decay 1 relative to lr); "
            "use weight_decay=0, or the uscion or clipped_scion preset for a weight_decay of "
            "your own"
        )


# ------------------------------------------------------------------ the built-in descriptors
_ALL = frozenset({"input", "hidden", "output", "vector", "tied"})
_SCION_ROLES = {
    "input": "colnorm(T) embedding, spectral(max1) linear, spectral_conv kernel",
    "hidden": "spectral (spectral_conv for kernels)",
    "output": "sign(1/d_in), radius 60x",
    "tied": "sign(1/d_in), radius 60x",
    "vector": "rms",
}
_SCION_WITHOUT_MODEL = (
    "without a model every matrix is treated as a hidden layer; pass the model to get the "
    "input (ColNorm / spectral(max1)) and output (Sign) rules"
)
_BUILTINS = (
    PresetSpec("sgd", 1e-2, "linear", SGDOptions, _sgd, {"all": "identity (sharp)"},
               summary="torch.optim.SGD"),
    PresetSpec("normalized_sgd", 1e-2, "normalized", NormalizedSGDOptions, _normalized_sgd,
               {"all": "euclidean"}, summary="momentum, then d / ||d||_F"),
    PresetSpec("signsgd", 1e-3, "normalized", SignSGDOptions, _sign, {"all": "sign"},
               summary="Bernstein et al. 2018"),
    PresetSpec("signum", 1e-3, "normalized", SignumOptions, _sign, {"all": "sign"},
               summary="Bernstein et al. 2018"),
    PresetSpec("lion", 1e-4, "normalized", LionOptions, _lion, {"all": "sign (lion momentum)"},
               summary="Chen et al. 2023"),
    PresetSpec("adamw", 1e-3, "normalized", AdamWOptions, _adamw, {"all": "adam (sharp)"},
               summary="torch.optim.AdamW"),
    PresetSpec("muon", 2e-2, "normalized", MuonOptions, _muon,
               {"hidden": "spectral(max1)", "input": "rest preset", "output": "rest preset",
                "tied": "rest preset", "vector": "rest preset"},
               uses_roles=True, reads_matrices=True,
               width_independent_roles=frozenset({"hidden"}), check=_check_muon,
               summary="torch.optim.Muon on the hidden matrices, rest= on the others"),
    PresetSpec("scion", 2.0**-12, "normalized", ScionOptions, _scion_family("constrained"),
               _SCION_ROLES, uses_roles=True, reads_matrices=True,
               width_independent_roles=_ALL, check=_check_scion,
               without_model=_SCION_WITHOUT_MODEL,
               summary="SCG, Pethick et al. 2025"),
    PresetSpec("uscion", 2.0**-12, "normalized", ScionOptions, _scion_family("unconstrained"),
               _SCION_ROLES, uses_roles=True, reads_matrices=True,
               width_independent_roles=_ALL, without_model=_SCION_WITHOUT_MODEL,
               summary="uSCG, Pethick et al. 2025"),
    PresetSpec("clipped_scion", 2.0**-12, "normalized", ScionOptions, _scion_family("clipped"),
               _SCION_ROLES, uses_roles=True, reads_matrices=True,
               width_independent_roles=_ALL, without_model=_SCION_WITHOUT_MODEL,
               summary="clipped, Pethick et al. 2025"),
)  # fmt: skip
for _spec in _BUILTINS:
    register_preset(_spec, replace=True)


# ------------------------------------------------ geometries learned online (issue 14)
# shampoo.py, soap.py, normuon.py hold the algorithms; here only what each preset gives a
# parameter: hidden matrices (2-D, expert stacks, kernels) learn the geometry, every other
# tensor (embedding, head, norm gains, biases) takes AdamW at rest_lr.
@dataclass(frozen=True)
class ShampooOptions:
    momentum: float = 0.9  # beta1 of the filtered gradient
    beta2: float | None = 0.999  # factor EMA; None: Gupta et al.'s sums
    epsilon: float = 1e-12
    precondition_every: int = 10
    grafting: str = "adam"  # "adam", "sgd" or "none"
    graft_beta2: float = 0.999
    graft_eps: float = 1e-8
    weight_decay: float = 0.0
    rest_lr: float | None = None
    rest_weight_decay: float | None = None


@dataclass(frozen=True)
class SoapOptions:
    betas: tuple[float, float] = (0.95, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.01
    shampoo_beta: float | None = None  # factor EMA; None: betas[1]
    precondition_every: int = 10
    max_precondition_dim: int = 10_000
    rest_lr: float | None = None
    rest_weight_decay: float | None = None


@dataclass(frozen=True)
class NorMuonOptions:
    momentum: float = 0.95
    nesterov: bool = False
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    ns_steps: int = 5
    ns_method: str = "newton_schulz"
    ns_dtype: str | None = None
    rest_lr: float | None = None
    rest_weight_decay: float | None = None


def _learned_geometry(o: ShampooOptions | SoapOptions | NorMuonOptions) -> dict[str, Any]:
    """The param-group settings of a hidden matrix under a learned-geometry preset."""
    if isinstance(o, ShampooOptions):
        keys = ("beta2", "epsilon", "precondition_every", "grafting", "graft_beta2", "graft_eps")
        return {"norm": "shampoo", "norm_kwargs": {k: getattr(o, k) for k in keys},
                "momentum": o.momentum}  # fmt: skip
    if isinstance(o, SoapOptions):
        keys = ("shampoo_beta", "precondition_every", "max_precondition_dim")
        return {"norm": "soap", "norm_kwargs": {k: getattr(o, k) for k in keys},
                "betas": o.betas, "eps": o.eps}  # fmt: skip
    polar = {"method": o.ns_method, "steps": o.ns_steps, "dtype": o.ns_dtype}
    return {"norm": "normuon", "norm_kwargs": {"beta2": o.beta2, "eps": o.eps, **polar},
            "momentum": o.momentum, "nesterov": o.nesterov}  # fmt: skip


def _learned(lr: float, o: Any, info: ParamInfo) -> dict[str, Any]:
    if info.role == Role.HIDDEN and info.kind in ("matrix", "conv"):
        return {**_learned_geometry(o), "step": "sharp", "weight_decay": o.weight_decay}
    wd = o.weight_decay if o.rest_weight_decay is None else o.rest_weight_decay
    rest: dict[str, Any] = {"weight_decay": wd}
    if isinstance(o, SoapOptions):  # the reference SOAP runs Adam with its betas on vectors
        rest.update(betas=o.betas, eps=o.eps)
    elif isinstance(o, ShampooOptions):  # Distributed Shampoo: the Adam graft alone
        rest.update(betas=(o.momentum, o.graft_beta2), eps=o.graft_eps)
    settings = _adamw(lr, preset_options("adamw", rest), info)
    settings["lr"] = lr if o.rest_lr is None else o.rest_lr
    return settings


def _check_learned(o: Any) -> None:
    """Build the geometry once so that a bad option is named before any step."""
    from everyscale.optim.norms import get_norm

    geometry = _learned_geometry(o)
    get_norm(geometry["norm"], **geometry["norm_kwargs"])


_LEARNED_ROLES = {"hidden": "", "input": "adam (rest_lr)", "output": "adam (rest_lr)",
                  "tied": "adam (rest_lr)", "vector": "adam (rest_lr)"}  # fmt: skip
_LEARNED = (
    PresetSpec("shampoo", 1e-3, "normalized", ShampooOptions, _learned,
               {**_LEARNED_ROLES, "hidden": "shampoo (grafted)"}, uses_roles=True,
               reads_matrices=True, check=_check_learned,
               summary="Gupta et al. 2018, grafted as Shi et al. 2023"),
    PresetSpec("soap", 3e-3, "normalized", SoapOptions, _learned,
               {**_LEARNED_ROLES, "hidden": "soap"}, uses_roles=True, reads_matrices=True,
               check=_check_learned, summary="Vyas et al. 2024"),
    PresetSpec("normuon", 1e-3, "normalized", NorMuonOptions, _learned,
               {**_LEARNED_ROLES, "hidden": "normuon"}, uses_roles=True, reads_matrices=True,
               check=_check_learned, summary="Li et al. 2025"),
)  # fmt: skip
for _spec in _LEARNED:
    register_preset(_spec, replace=True)


def _kind(p: torch.Tensor) -> str:
    """What a tensor given without its module is: a vector, a matrix or a kernel."""
    if p.ndim <= 1:
        return "vector"
    return "conv" if p.ndim >= 3 else "matrix"


def _model_entries(
    model: nn.Module, example_input: Any, role_overrides: Any, spec: PresetSpec
) -> list[tuple[ParamInfo, dict[str, Any]]]:
    """Roles from ``assign_roles``, kinds and layouts from the layout registry."""
    with warnings.catch_warnings():
        if not spec.uses_roles:  # roles only label the table: no warning about their order
            warnings.simplefilter("ignore", UserWarning)
        roles = assign_roles(model, example_input=example_input, overrides=role_overrides)
    named = dict(model.named_parameters())
    entries = []
    for name, role in roles.items():
        p = named[name]
        layout = layout_of(model, name, p)
        if layout is None and spec.reads_matrices:
            raise ValueError(f"{spec.name}: {unreadable_message(model, name, p)}")
        extra: dict[str, Any] = {}
        if layout is not None and spec.reads_matrices and layout.reshapes(p.shape):
            layout.check(p.shape, f"parameter {name!r}")
            extra["layout"] = layout.config()
        kind = _kind(p) if layout is None else layout.kind
        entries.append((ParamInfo(name, p, role, kind), extra))
    return entries


def _entries(
    params_or_model: Any, example_input: Any, role_overrides: Any, spec: PresetSpec
) -> list[tuple[ParamInfo, dict[str, Any]]]:
    """``(ParamInfo, group_overrides)`` for every trainable parameter."""
    if isinstance(params_or_model, nn.Module):
        return _model_entries(params_or_model, example_input, role_overrides, spec)

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
            entries.append((ParamInfo(name, p, role, _kind(p)), extra))
    return entries


def _check_python_only_options(example_input: Any, roles: Any) -> None:
    """``example_input`` holds tensors; ``roles`` maps patterns to roles."""
    if example_input is not None:
        values = example_input.values() if isinstance(example_input, dict) else example_input
        values = [values] if isinstance(values, torch.Tensor) else values
        if not isinstance(values, (list, tuple, type({}.values()))) or not any(
            isinstance(v, torch.Tensor) for v in values
        ):
            raise ValueError(
                "example_input must be a tensor (or a tuple or dict of the model's arguments "
                f"holding tensors), got {example_input!r}"
            )
    if roles is not None and not isinstance(roles, dict):
        raise ValueError(
            'roles must map parameter-name patterns to roles, e.g. {"head.*": "output"}, '
            f"got {roles!r}"
        )


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
    spec = get_preset(preset)
    lr = _check_nonnegative(spec.default_lr if lr is None else lr, "lr")
    options = preset_options(preset, overrides)
    foreach = overrides.get("foreach")
    nonfinite = overrides.get("nonfinite", "raise")
    _check_python_only_options(overrides.get("example_input"), overrides.get("roles"))

    entries = _entries(
        params_or_model,
        overrides.get("example_input"),
        overrides.get("roles"),
        spec,
    )
    if not entries:
        raise ValueError("optimizer: no trainable parameters (all have requires_grad=False)")
    if spec.without_model and not isinstance(params_or_model, nn.Module):
        warnings.warn(f"{preset}: {spec.without_model}", stacklevel=2)

    groups: dict[str, dict[str, Any]] = {}
    for info, extra in entries:
        settings = {"lr": lr, **spec.settings(lr, options, info)}
        if settings.get("norm") in ("adam", "identity"):  # elementwise: no matrices to read
            extra = {k: v for k, v in extra.items() if k != "layout"}
        settings.update(extra)
        settings["role"] = info.role.value
        settings["preset"] = preset
        key = repr(sorted(settings.items(), key=lambda kv: kv[0]))
        group = groups.setdefault(key, {**settings, "params": []})
        group["params"].append((info.name, info.param))
    if preset == "muon" and not any(g["norm"] == "spectral" for g in groups.values()):
        warnings.warn(
            f"muon: no parameter is a 2-D hidden matrix (conv kernels, vectors, embedding and "
            f"head go to the rest preset), so every parameter trains with {options.rest}; "
            "set the option spectral_for=all (--option spectral_for=all on the command line) "
            "to put the embedding and head on the Spectral LMO",
            stacklevel=2,
        )
    return NormOptimizer(list(groups.values()), foreach=foreach, nonfinite=nonfinite)


def _effective_lr(group: dict[str, Any], opt: NormOptimizer, shape: torch.Size) -> float:
    """The scalar in front of the update direction: ``lr rho s`` for LMO steps, ``lr`` else."""
    if group["step"] == "sharp":
        return group["lr"]
    return group["lr"] * group["radius"] * opt.shape_factor(group, shape)


def _lr_label(lr: float) -> str:
    """``2^-12`` for a power of two (how the Scion family's rates are written), else ``.4g``."""
    exponent = math.log2(lr) if lr > 0 else 0.5
    return f"2^{exponent:.0f}" if exponent == int(exponent) else f"{lr:.4g}"


def describe_optimizer(opt: NormOptimizer, order: list[str] | None = None) -> str:
    """The table of a ``NormOptimizer``: one row per parameter (in ``order`` if given).

    A ``matrices`` column appears when some parameter is read as several logical matrices or
    as a transposed storage (its layout): e.g. ``3x128x128 q,k,v T`` for GPT-2's ``c_attn``.
    """
    header = ("name", "shape", "role", "norm", "radius", "step", "lr", "effective lr", "state")
    state_total = 0
    with_layouts = any(opt.layout_of(g) is not None for g in opt.param_groups)
    if with_layouts:
        header += ("matrices",)
    rows = []
    for group in opt.param_groups:
        norm = opt.norm_of(group)
        layout = opt.layout_of(group)
        names = group.get("param_names") or [f"param{i}" for i in range(len(group["params"]))]
        for name, p in zip(names, group["params"]):
            radius = (
                "-"
                if group["step"] == "sharp" or isinstance(norm, Adam)
                else f"{group['radius']:g}"
            )
            row = (
                name,
                "x".join(str(s) for s in p.shape) or "scalar",
                str(group.get("role", "-")),
                norm.describe(),
                radius,
                group["step"],
                _lr_label(group["lr"]),
                f"{_effective_lr(group, opt, p.shape):.4g}",
                _bytes_label(state_bytes(opt, group, p)),
            )
            state_total += state_bytes(opt, group, p)
            if with_layouts:
                row += (layout.describe(p.shape) if layout is not None else "-",)
            rows.append(row)
    if order is not None:
        position = {name: i for i, name in enumerate(order)}
        rows.sort(key=lambda row: position.get(row[0], len(position)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    total = sum(p.numel() for g in opt.param_groups for p in g["params"])
    lines.append(
        f"{len(rows)} parameter tensors, {total:,} entries, {len(opt.param_groups)} groups; "
        f"optimizer state {_bytes_label(state_total)} ({state_total / max(total, 1):.1f} bytes "
        "per parameter entry)"
    )
    return "\n".join(lines)


def state_bytes(opt: NormOptimizer, group: dict[str, Any], p: torch.Tensor) -> int:
    """Bytes of optimizer state ``p`` holds in ``group`` (once it has taken a step).

    Learned geometries say it themselves, per logical matrix of the group's layout
    (Shampoo's and SOAP's factors ``L, R`` and their roots or bases: ``2 (m^2 + n^2)`` float32
    numbers per matrix, ``E`` times that for a stack of ``E`` experts); Adam holds two moments,
    momentum one buffer.
    """
    norm = opt.norm_of(group)
    if isinstance(norm, AdaptiveGeometry):
        return norm.state_bytes(stack_shape(opt.layout_of(group), p.shape), p.dtype, group)
    entry = p.numel() * p.element_size()
    if isinstance(norm, Adam):
        return 2 * entry
    return entry if group["momentum"] > 0 or group["momentum_style"] == "lion" else 0


def _bytes_label(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def describe_notes(opt: NormOptimizer, preset: str, overrides: dict[str, Any]) -> list[str]:
    """The lines under ``describe``'s table: how to read the effective lr, where params go."""
    notes = []
    if any(g["step"] != "sharp" for g in opt.param_groups):
        notes.append(
            "effective lr = lr*radius*s (just lr for sharp steps), s the norm's shape factor "
            "(e.g. sqrt(d_out/d_in) for spectral, 1/d_in for sign(1/d_in)): each step moves a "
            "parameter by lr*radius in its own norm"
        )
    if preset in ("scion", "uscion", "clipped_scion"):
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
    if preset in _LEARNED_STATE:
        notes.append(_learned_note(opt, preset))
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


_LEARNED_STATE = {
    "shampoo": "factors L, R and their inverse 4th roots (2(m^2+n^2) float32 per matrix), the "
    "filtered gradient and Adam graft's second moment (mn each)",
    "soap": "factors L, R and their eigenbases (2(m^2+n^2) float32 per matrix), Adam's two "
    "moments (2mn)",
    "normuon": "momentum (mn) and one second moment per output row (m)",
}


def _learned_note(opt: NormOptimizer, preset: str) -> str:
    """Which tensors learn the geometry, what their state holds, and its total size."""
    learned, learned_bytes, rest = 0, 0, 0
    for group in opt.param_groups:
        if isinstance(opt.norm_of(group), AdaptiveGeometry):
            learned += len(group["params"])
            learned_bytes += sum(state_bytes(opt, group, p) for p in group["params"])
        else:
            rest += len(group["params"])
    return (
        f"{preset}: {learned} hidden matrices learn the geometry, state "
        f"{_bytes_label(learned_bytes)}: {_LEARNED_STATE[preset]} (a stack of E experts holds "
        f"E of each); the other {rest} tensors take AdamW at rest_lr"
    )


def _non_layer_note(model: nn.Module) -> list[str]:
    """A note naming the tensors read as tokens or tables rather than layer weights."""
    found = []
    for name, p in model.named_parameters():
        layout = layout_of(model, name, p)
        if layout is not None and layout.label in ("token", "table", "bias") and p.ndim > 1:
            what = "a vector" if layout.kind == "vector" else "an input table"
            found.append(f"{name} ({layout.label}: {what})")
    if not found:
        return []
    note = "not layer weights, by name and shape: " + ", ".join(found)
    return [textwrap.fill(note, width=92, subsequent_indent="  ")]


def describe(model: nn.Module, preset: str, **overrides: Any) -> str:
    """Print and return the table of what ``preset`` does with each parameter of ``model``.

    Columns: name, shape, role, norm, radius, step, lr and the effective lr (the scalar that
    multiplies the unit update: ``lr * radius * s`` with ``s`` the norm's shape factor, e.g.
    ``sqrt(d_out/d_in)`` for Spectral, ``1/d_in`` for the Sign head). ``lr`` may be among
    ``overrides``; it defaults to the preset's default learning rate. Notes under the table
    say how to read the effective lr, the lr range of the Scion family and, for ``muon``,
    which preset takes the parameters that are not 2-D hidden matrices.

    The scale plan's version of the table (width and depth multipliers, learning-rate factors
    from a proxy) is :func:`everyscale.scale.describe_plan`.
    """
    lr = overrides.pop("lr", None)
    opt = optimizer(model, preset, lr, **overrides)
    table = describe_optimizer(opt, order=[name for name, _ in model.named_parameters()])
    notes = [*describe_notes(opt, preset, overrides), *_non_layer_note(model)]
    text = "\n".join([table, *notes])
    print(f"preset {preset}\n{text}")
    return text
