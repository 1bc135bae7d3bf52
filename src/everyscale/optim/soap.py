"""SOAP: Adam run in the eigenbasis of Shampoo's factors.

For a matrix ``W`` (``m x n``) with gradient ``G`` (Vyas, Morwani, Zhao, Shapira,
Brandfonbrener, Janson, Kakade 2024, *SOAP: Improving and Stabilizing Shampoo using Adam*,
arXiv 2409.11321, Algorithms 3 and 4). State: Shampoo's factors ``L`` (``m x m``) and ``R``
(``n x n``), their approximate eigenbases ``Q_L``, ``Q_R``, Adam's first moment ``M`` (in the
original space) and second moment ``V`` (in the rotated space).

First call: ``L = (1 - b) G G^T``, ``R = (1 - b) G^T G`` (``b = shampoo_beta``, default
``beta2``), ``Q_L``, ``Q_R`` their eigenvectors by ``eigh``, ordered by decreasing eigenvalue;
no step is taken, so that the projection never uses the gradient it projects (as the
authors' reference implementation does). Then, at the ``k``-th step (``k = 1, 2, ...``):

1. ``G' = Q_L^T G Q_R``;  ``M <- beta1 M + (1 - beta1) G``;  ``M' = Q_L^T M Q_R``;
2. ``V <- beta2 V + (1 - beta2) G' * G'`` (elementwise: one step of Adam on ``G'``);
3. ``N' = M' / (sqrt(V) + eps)``,  ``N = Q_L N' Q_R^T``;
4. ``W <- (1 - lr wd) W - lr sqrt(1 - beta2^k) / (1 - beta1^k) N`` (Adam's bias corrections
   folded into the step size, as the reference implementation does, so ``eps`` is not
   bias-corrected);
5. ``L <- b L + (1 - b) G G^T``,  ``R <- b R + (1 - b) G^T G``;
6. every ``precondition_every`` steps (``k % precondition_every == 0``), one power-iteration
   step and a QR decomposition (Algorithm 4): with ``S = L Q_L``, the columns of ``Q_L`` are
   ordered by their eigenvalue estimates ``diag(Q_L^T L Q_L)`` (decreasing), the rows of
   ``V`` are permuted with them (each second-moment entry stays with its eigenvector: this
   is how ``V`` follows the basis when it changes), and ``Q_L <- QR(S)``; the same for
   ``R``, ``Q_R`` and the columns of ``V``. ``M`` lives in the original space and needs no
   rotation.

A dimension above ``max_precondition_dim`` keeps the identity basis on its side (no factor
is stored for it). State per ``m x n`` matrix: ``L, R, Q_L, Q_R`` in float32
(``2 (m^2 + n^2)`` numbers) and ``M, V`` (``2 mn``) in the weight's dtype; ``E`` of each for a
3-D stack of experts. An ``eigh`` or ``QR`` that fails or returns NaN/inf keeps the previous
basis (identity at the start) for that matrix, counted as a fallback.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from everyscale.optim.adaptive import AdaptiveGeometry, safe_eigh, work_dtype

__all__ = ["Soap", "soap_kernel"]

_SIDES = (("left", 1), ("right", 2))  # factor name, dimension of V it permutes


def _rotate(x: Tensor, state: dict[str, Tensor]) -> Tensor:
    """``Q_L^T x Q_R`` (an identity side is skipped)."""
    if "basis_left" in state:
        x = state["basis_left"].mT @ x
    if "basis_right" in state:
        x = x @ state["basis_right"]
    return x


def _rotate_back(x: Tensor, state: dict[str, Tensor]) -> Tensor:
    """``Q_L x Q_R^T``."""
    if "basis_left" in state:
        x = state["basis_left"] @ x
    if "basis_right" in state:
        x = x @ state["basis_right"].mT
    return x


def _update_factors(state: dict[str, Tensor], g: Tensor, beta: float) -> None:
    if "factor_left" in state:
        state["factor_left"].lerp_(g @ g.mT, 1 - beta)
    if "factor_right" in state:
        state["factor_right"].lerp_(g.mT @ g, 1 - beta)


def _initial_bases(state: dict[str, Tensor]) -> Tensor:
    """``Q <- eigh(F)`` eigenvectors, decreasing eigenvalue; returns the failure mask."""
    exp_avg = state["exp_avg"]
    failed = torch.zeros(exp_avg.shape[0], dtype=torch.bool, device=exp_avg.device)
    for side, _ in _SIDES:
        if f"factor_{side}" not in state:
            continue
        _, vectors, ok = safe_eigh(state[f"factor_{side}"])
        basis = state[f"basis_{side}"]
        basis.copy_(torch.where(ok[:, None, None], vectors.flip(-1), basis))
        failed |= ~ok
    return failed


def _refresh_bases(state: dict[str, Tensor]) -> Tensor:
    """One power-iteration step and QR per side, ``V`` permuted along (module docstring)."""
    v = state["exp_avg_sq"]
    failed = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
    for side, dim in _SIDES:
        if f"factor_{side}" not in state:
            continue
        factor, basis = state[f"factor_{side}"], state[f"basis_{side}"]
        product = factor @ basis
        estimates = (basis * product).sum(dim=-2)  # diag(Q^T F Q)
        order = torch.argsort(estimates, dim=-1, descending=True)
        product = product.gather(2, order[:, None, :].expand_as(product))
        new_basis = torch.linalg.qr(product).Q
        ok = torch.isfinite(new_basis).flatten(1).all(dim=1)
        index = order[:, :, None] if dim == 1 else order[:, None, :]
        permuted = v.gather(dim, index.expand_as(v))
        v.copy_(torch.where(ok[:, None, None], permuted, v))
        basis.copy_(torch.where(ok[:, None, None], new_basis, basis))
        failed |= ~ok
    return failed


def soap_kernel(
    grad: Tensor,
    state: dict[str, Tensor],
    step: int,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    shampoo_beta: float | None,
    precondition_every: int,
) -> tuple[Tensor | None, Tensor | None]:
    """SOAP's update for a ``(b, m, n)`` stack (module docstring); ``None`` on the first call."""
    beta = beta2 if shampoo_beta is None else shampoo_beta
    work = work_dtype(grad.dtype)
    g = grad.to(work)
    if step == 1:
        _update_factors(state, g, beta)
        failed = _initial_bases(state)
        return None, failed
    k = step - 1
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    g_rot = _rotate(g, state)
    exp_avg.lerp_(grad, 1 - beta1)
    m_rot = _rotate(exp_avg.to(work), state)
    g_rot = g_rot.to(exp_avg_sq.dtype)
    exp_avg_sq.mul_(beta2).addcmul_(g_rot, g_rot, value=1 - beta2)
    n_rot = m_rot / exp_avg_sq.to(work).sqrt().add_(eps)
    update = _rotate_back(n_rot, state).mul_((1 - beta2**k) ** 0.5 / (1 - beta1**k))
    _update_factors(state, g, beta)
    failed = _refresh_bases(state) if k % precondition_every == 0 else None
    return update.to(grad.dtype), failed


class Soap(AdaptiveGeometry):
    """SOAP's geometry: Adam in the eigenbasis of Shampoo's factors (module docstring).

    Options: ``shampoo_beta`` (factor averaging; ``None`` uses ``beta2``),
    ``precondition_every`` (steps between basis refreshes), ``max_precondition_dim``. The
    group's ``betas`` and ``eps`` are Adam's.
    """

    name = "soap"
    group_keys: ClassVar[tuple[str, ...]] = ("betas", "eps")

    def __init__(
        self,
        shampoo_beta: float | None = None,
        precondition_every: int = 10,
        max_precondition_dim: int = 10_000,
    ) -> None:
        if shampoo_beta is not None and (
            isinstance(shampoo_beta, bool)
            or not isinstance(shampoo_beta, (int, float))
            or not 0 <= shampoo_beta < 1
        ):
            raise ValueError(
                f"soap: shampoo_beta must be in [0, 1) or None (use beta2), got {shampoo_beta!r}"
            )
        for option, value in (
            ("precondition_every", precondition_every),
            ("max_precondition_dim", max_precondition_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"soap: {option} must be a positive integer, got {value!r}")
        super().__init__(
            shampoo_beta=None if shampoo_beta is None else float(shampoo_beta),
            precondition_every=precondition_every,
            max_precondition_dim=max_precondition_dim,
        )

    def describe(self) -> str:
        return f"soap(every {self.kwargs['precondition_every']})"

    def _sides(self, m: int, n: int) -> list[tuple[str, int]]:
        limit = self.kwargs["max_precondition_dim"]
        return [(side, size) for side, size in (("left", m), ("right", n)) if size <= limit]

    def init_state(
        self, shape: tuple[int, int, int], p: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        b, m, n = shape
        work = {"dtype": work_dtype(p.dtype), "device": p.device}
        for side, size in self._sides(m, n):
            state[f"factor_{side}"] = torch.zeros(b, size, size, **work)
            state[f"basis_{side}"] = torch.eye(size, **work).repeat(b, 1, 1)
        state["exp_avg"] = torch.zeros(b, m, n, dtype=p.dtype, device=p.device)
        state["exp_avg_sq"] = torch.zeros(b, m, n, dtype=p.dtype, device=p.device)

    def kernel(
        self, grad: Tensor, state: dict[str, Tensor], step: int, group: dict[str, Any]
    ) -> tuple[Tensor | None, Tensor | None]:
        beta1, beta2 = group["betas"]
        return soap_kernel(
            grad,
            state,
            step,
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            shampoo_beta=self.kwargs["shampoo_beta"],
            precondition_every=self.kwargs["precondition_every"],
        )

    def state_bytes(
        self, shape: tuple[int, int, int], dtype: torch.dtype, group: dict[str, Any]
    ) -> int:
        b, m, n = shape
        work = torch.empty((), dtype=work_dtype(dtype)).element_size()
        own = torch.empty((), dtype=dtype).element_size()
        square = sum(size * size for _, size in self._sides(m, n))
        return b * (2 * square * work + 2 * m * n * own)
