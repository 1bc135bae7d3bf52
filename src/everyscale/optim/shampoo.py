"""Shampoo: a Kronecker-factored geometry learned online, grafted onto Adam's step length.

For a matrix ``W`` (``m x n``) with gradient ``G_t`` at step ``t`` (Gupta, Koren, Singer 2018,
*Shampoo: Preconditioned Stochastic Tensor Optimization*, Algorithm 1; with the filtered
gradient, factor averaging, bias corrections and grafting of Distributed Shampoo, Shi et al.
2023, *A Distributed Data-Parallel PyTorch Implementation of the Distributed Shampoo
Optimizer*, Section 2):

1. factors: ``L <- beta2 L + (1 - beta2) G G^T``, ``R <- beta2 R + (1 - beta2) G^T G``
   (``beta2=None``: Gupta's sums ``L <- L + G G^T``); bias-corrected
   ``L_hat = L / (1 - beta2^t)`` (the sums are used as they are);
2. every ``precondition_every`` steps (``t = 1, 1 + k, 1 + 2k, ...``) the inverse roots
   ``P_L = (L_hat + eps I)^{-1/4}``, ``P_R = (R_hat + eps I)^{-1/4}`` from a symmetric
   eigendecomposition ``L_hat = Q diag(lambda) Q^T`` in float32 (float64 for float64
   weights): ``P_L = Q diag(max(lambda, 0) + eps)^{-1/4} Q^T``; in between, the last roots;
3. filtered gradient ``M <- beta1 M + (1 - beta1) G`` (``momentum=beta1``, zero start),
   ``M_hat = M / (1 - beta1^t)`` (``beta1 = 0``: ``M_hat = G``);
4. direction ``D = P_L M_hat P_R``, grafted (``grafting=``):

   - ``"adam"``: ``A = M_hat / (sqrt(V / (1 - b^t)) + e)`` with Adam's second moment
     ``V <- b V + (1 - b) G^2`` (``graft_beta2=b``, ``graft_eps=e``), and
     ``D <- D ||A||_F / ||D||_F``: Shampoo's direction with Adam's step length;
   - ``"sgd"``: the same with ``A = M_hat``;
   - ``"none"``: ``D`` as it is (Gupta et al.);

5. ``W <- (1 - lr wd) W - lr D`` (decoupled weight decay).

Spectral identity ([R]; Gupta et al. 2018): with ``beta2 = 0`` (no accumulation), exact roots
and ``G = U S V^T`` of full rank, ``P_L G P_R = U (S^2 + eps)^{-1/4} S (S^2 + eps)^{-1/4} V^T``,
which tends to ``U V^T`` as ``eps / s_min^2 -> 0``: the polar factor, the direction of the
Spectral LMO (Muon). Shampoo's accumulation turns that fixed geometry into a learned one.

Failures: a factor that holds NaN/inf, or an ``eigh`` that does not converge, leaves that
matrix without a preconditioner. Its step then falls back to the grafted direction ``A``
(``M_hat`` without grafting) until the next successful refresh; a non-finite factor is
reset to zero so that it can recover. The optimizer counts these fallbacks and warns once;
the weights never receive a NaN from the preconditioner.

State per ``m x n`` matrix (float32 factors and roots, moments in the weight's dtype):
``L, R, P_L, P_R`` (``2 (m^2 + n^2)`` numbers), ``M`` (``mn``, only if ``beta1 > 0``) and
``V`` (``mn``, only for Adam grafting); a 3-D stack of ``E`` experts holds ``E`` of each.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor

from everyscale.optim.adaptive import AdaptiveGeometry, safe_eigh, work_dtype

__all__ = ["GRAFTINGS", "Shampoo", "inverse_root", "shampoo_kernel"]

Grafting = Literal["adam", "sgd", "none"]
GRAFTINGS: tuple[str, ...] = get_args(Grafting)


def inverse_root(a: Tensor, eps: float, root: int = 4) -> tuple[Tensor, Tensor]:
    """``(A + eps I)^{-1/root}`` of a stack of symmetric PSD matrices, and which succeeded.

    Negative eigenvalues (rounding) are clamped to 0 before ``eps`` is added.
    """
    values, vectors, ok = safe_eigh(a)
    scales = (values.clamp_min(0) + eps).pow(-1.0 / root)
    result = (vectors * scales[:, None, :]) @ vectors.mT
    ok &= torch.isfinite(result).flatten(1).all(dim=1)
    return result, ok


def _accumulate(factor: Tensor, outer: Tensor, beta2: float | None) -> None:
    """``F <- beta2 F + (1 - beta2) outer`` (``beta2=None``: ``F <- F + outer``)."""
    if beta2 is None:
        factor.add_(outer)
    else:
        factor.mul_(beta2).add_(outer, alpha=1 - beta2)


def _refresh_roots(state: dict[str, Tensor], step: int, beta2: float | None, eps: float) -> Tensor:
    """Recompute ``P_L``, ``P_R`` where possible; returns the ``(b,)`` mask of failures."""
    correction = 1.0 if beta2 is None else 1 - beta2**step
    left, ok_left = inverse_root(state["factor_left"] / correction, eps)
    right, ok_right = inverse_root(state["factor_right"] / correction, eps)
    ok = ok_left & ok_right
    keep = ok[:, None, None]
    state["root_left"].copy_(torch.where(keep, left, state["root_left"]))
    state["root_right"].copy_(torch.where(keep, right, state["root_right"]))
    state["roots_ok"].copy_(ok)
    for key in ("factor_left", "factor_right"):  # a non-finite factor starts over
        factor = state[key]
        finite = torch.isfinite(factor).flatten(1).all(dim=1)[:, None, None]
        factor.copy_(torch.where(finite, factor, torch.zeros_like(factor)))
    return ~ok


def shampoo_kernel(
    grad: Tensor,
    state: dict[str, Tensor],
    step: int,
    *,
    beta1: float,
    beta2: float | None,
    epsilon: float,
    precondition_every: int,
    grafting: Grafting,
    graft_beta2: float,
    graft_eps: float,
) -> tuple[Tensor, Tensor | None]:
    """Shampoo's direction ``D`` for a ``(b, m, n)`` stack of gradients (module docstring).

    Updates ``state`` in place; returns ``D`` and, on refresh steps, the failure mask.
    """
    work = state["factor_left"].dtype
    g = grad.to(work)
    _accumulate(state["factor_left"], g @ g.mT, beta2)
    _accumulate(state["factor_right"], g.mT @ g, beta2)
    failed = None
    if (step - 1) % precondition_every == 0:
        failed = _refresh_roots(state, step, beta2, epsilon)

    if beta1 > 0:
        state["momentum_buffer"].lerp_(grad, 1 - beta1)
        m_hat = state["momentum_buffer"] / (1 - beta1**step)
    else:
        m_hat = grad
    direction = state["root_left"] @ m_hat.to(work) @ state["root_right"]

    fallback = m_hat.to(work)
    if grafting == "adam":
        v = state["exp_avg_sq"]
        v.mul_(graft_beta2).addcmul_(grad, grad, value=1 - graft_beta2)
        denom = (v.to(work) / (1 - graft_beta2**step)).sqrt_().add_(graft_eps)
        fallback = fallback / denom
    if grafting != "none":
        length = torch.linalg.vector_norm(fallback, dim=(-2, -1), keepdim=True)
        own = torch.linalg.vector_norm(direction, dim=(-2, -1), keepdim=True)
        direction.mul_(length / own.clamp_min(torch.finfo(work).tiny))
    if not bool(state["roots_ok"].all()):  # a matrix without roots takes the fallback
        direction = torch.where(state["roots_ok"][:, None, None], direction, fallback)
    return direction.to(grad.dtype), failed


class Shampoo(AdaptiveGeometry):
    """Shampoo's learned Kronecker-factored geometry (module docstring), grafted.

    Options (stored with the param group as plain data): ``beta2`` (factor averaging, ``None``
    for sums), ``epsilon`` (damping), ``precondition_every``, ``grafting`` (``"adam"``,
    ``"sgd"``, ``"none"``), ``graft_beta2``, ``graft_eps``. The group's ``momentum`` is
    ``beta1`` of the filtered gradient.
    """

    name = "shampoo"
    group_keys: ClassVar[tuple[str, ...]] = ("momentum",)

    def __init__(
        self,
        beta2: float | None = 0.999,
        epsilon: float = 1e-12,
        precondition_every: int = 10,
        grafting: Grafting = "adam",
        graft_beta2: float = 0.999,
        graft_eps: float = 1e-8,
    ) -> None:
        if beta2 is not None and not _is_fraction(beta2):
            raise ValueError(f"shampoo: beta2 must be in [0, 1) or None (sums), got {beta2!r}")
        if not _is_fraction(graft_beta2):
            raise ValueError(f"shampoo: graft_beta2 must be in [0, 1), got {graft_beta2!r}")
        for option, value in (("epsilon", epsilon), ("graft_eps", graft_eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"shampoo: {option} must be a number > 0, got {value!r}")
        if (
            isinstance(precondition_every, bool)
            or not isinstance(precondition_every, int)
            or (precondition_every < 1)
        ):
            raise ValueError(
                f"shampoo: precondition_every must be a positive integer (steps between "
                f"root recomputations, e.g. 10), got {precondition_every!r}"
            )
        if grafting not in GRAFTINGS:
            raise ValueError(
                f"shampoo: grafting must be one of {', '.join(GRAFTINGS)}, got {grafting!r}"
            )
        super().__init__(
            beta2=None if beta2 is None else float(beta2),
            epsilon=float(epsilon),
            precondition_every=precondition_every,
            grafting=grafting,
            graft_beta2=float(graft_beta2),
            graft_eps=float(graft_eps),
        )

    def describe(self) -> str:
        return (
            f"shampoo(every {self.kwargs['precondition_every']}, graft {self.kwargs['grafting']})"
        )

    def init_state(
        self, shape: tuple[int, int, int], p: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        b, m, n = shape
        work = work_dtype(p.dtype)
        zeros = {"dtype": work, "device": p.device}
        state["factor_left"] = torch.zeros(b, m, m, **zeros)
        state["factor_right"] = torch.zeros(b, n, n, **zeros)
        state["root_left"] = torch.eye(m, **zeros).repeat(b, 1, 1)
        state["root_right"] = torch.eye(n, **zeros).repeat(b, 1, 1)
        state["roots_ok"] = torch.zeros(b, dtype=torch.bool, device=p.device)
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros(b, m, n, dtype=p.dtype, device=p.device)
        if self.kwargs["grafting"] == "adam":
            state["exp_avg_sq"] = torch.zeros(b, m, n, dtype=p.dtype, device=p.device)

    def kernel(
        self, grad: Tensor, state: dict[str, Tensor], step: int, group: dict[str, Any]
    ) -> tuple[Tensor, Tensor | None]:
        return shampoo_kernel(grad, state, step, beta1=group["momentum"], **self.kwargs)

    def state_bytes(
        self, shape: tuple[int, int, int], dtype: torch.dtype, group: dict[str, Any]
    ) -> int:
        b, m, n = shape
        work = torch.empty((), dtype=work_dtype(dtype)).element_size()
        own = torch.empty((), dtype=dtype).element_size()
        moments = (group["momentum"] > 0) + (self.kwargs["grafting"] == "adam")
        return b * (2 * (m * m + n * n) * work + moments * m * n * own + 1)


def _is_fraction(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < 1
