"""Polar factor of a matrix, or of a stack of same-shape matrices.

The Spectral LMO (Pethick et al. 2025) needs the polar factor ``polar(G) = U V^T`` of a
gradient ``G = U S V^T`` (reduced SVD). Three ways to compute it are offered:

``"newton_schulz"``
    Jordan's quintic Newton-Schulz iteration (Jordan et al. 2024, *Muon: An optimizer for
    hidden layers in neural networks*, https://kellerjordan.github.io/posts/muon/). Starting
    from ``X_0 = G / (||G||_F + eps)`` (so every singular value is at most 1) it repeats

        A = X X^T,    X <- a X + (b A + c A^2) X,    (a, b, c) = (3.4445, -4.7750, 2.0315),

    which applies the odd polynomial ``p(s) = a s + b s^3 + c s^5`` to every singular value.
    The coefficients maximize the slope at zero rather than converge: after 5 steps the
    singular values land in roughly ``[0.7, 1.2]``, so the result is ``U S' V^T``, not
    exactly ``U V^T``. This is the iteration ``torch.optim.Muon`` runs (in bfloat16).

``"polar_express"``
    Amsel, Persson, Musco, Gower 2025, *The Polar Express: Optimal Matrix Sign Methods and
    Their Application to the Muon Algorithm* (arXiv 2505.16932), Algorithm 1. The same odd
    quintic update, but with a different ``(a_t, b_t, c_t)`` at every step, each the minimax
    optimal polynomial for the singular-value interval left by the previous steps. All but
    the last listed polynomial are damped by a safety factor 1.01 (``a/1.01, b/1.01^3,
    c/1.01^5``) and the start is ``X_0 = G / (1.01 ||G||_F + eps)``, which keeps rounding
    errors from pushing singular values past the region the polynomials were designed for.
    Steps beyond the published list reuse its last polynomial (the limit
    ``(15 s - 10 s^3 + 3 s^5) / 8``). For the same number of matrix products it lands much
    closer to 1 than Jordan's iteration.

``"svd"``
    The exact ``U V^T`` from ``torch.linalg.svd``: the reference the tests compare against.

Both iterations run on the short side: a tall ``m x n`` matrix (``m > n``) uses the ``n x n``
Gram matrix ``A = X^T X`` and multiplies from the right (``X <- a X + X (b A + c A^2)``),
which equals transposing, iterating and transposing back, without the copies. A stack
(leading dimensions, e.g. the ``(E, m, n)`` weights of ``E`` experts) is one batched call.

Two kernels compute the step. ``"newton_schulz"`` keeps torch.optim.Muon's order of
operations (``addmm``/``baddbmm`` with the scalars in ``alpha``/``beta``), so that its bfloat16
result equals Muon's bit for bit. ``"polar_express"`` writes the step as three bare products,
``X <- P X`` with ``P = a I + A (b I + c A)``, the scalars added on the ``p x p`` side: same
FLOPs, and on CPUs it keeps the fast bfloat16 kernels that ``addmm`` with a ``beta`` term can
leave. Which dtype is fastest on the machine at hand is decided by
``everyscale.optim.polar_dtype``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_POLAR_METHOD",
    "JORDAN_COEFFICIENTS",
    "POLAR_EXPRESS_COEFFICIENTS",
    "POLAR_EXPRESS_SAFETY",
    "POLAR_METHODS",
    "newton_schulz_flops",
    "polar_express_schedule",
    "polar_factor",
]

POLAR_METHODS: tuple[str, ...] = ("newton_schulz", "polar_express", "svd")
#: the presets' default (``ns_method``): Polar Express, at the FLOPs of Jordan's iteration
#: (same number of steps) and about half its distance to ``U V^T``; ``"newton_schulz"`` is
#: torch.optim.Muon's exact recipe, kept for parity
DEFAULT_POLAR_METHOD = "polar_express"

# Jordan et al. 2024 (Muon); the same defaults as torch.optim.Muon.
JORDAN_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)

# Amsel et al. 2025 (arXiv 2505.16932), Algorithm 1: the degree-5 Polar Express
# polynomials p_t(s) = a_t s + b_t s^3 + c_t s^5, before the safety factor.
_POLAR_EXPRESS_PUBLISHED: tuple[tuple[float, float, float], ...] = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),  # the fixed point of the design; later steps reuse it
)
POLAR_EXPRESS_SAFETY = 1.01
# Dividing (a, b, c) by (f, f^3, f^5) turns p(s) into p(s / f): a singular value up to f
# times too large (from rounding) is still mapped as if it lay inside the designed interval.
POLAR_EXPRESS_COEFFICIENTS: tuple[tuple[float, float, float], ...] = (
    *(
        (a / POLAR_EXPRESS_SAFETY, b / POLAR_EXPRESS_SAFETY**3, c / POLAR_EXPRESS_SAFETY**5)
        for a, b, c in _POLAR_EXPRESS_PUBLISHED[:-1]
    ),
    _POLAR_EXPRESS_PUBLISHED[-1],
)

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def polar_express_schedule(steps: int) -> list[tuple[float, float, float]]:
    """The ``(a_t, b_t, c_t)`` of the first ``steps`` Polar Express steps (Amsel et al. 2025).

    The published list has 8 polynomials; steps past it repeat the last one.
    """
    _check_steps(steps)
    listed = list(POLAR_EXPRESS_COEFFICIENTS[:steps])
    return listed + [POLAR_EXPRESS_COEFFICIENTS[-1]] * (steps - len(listed))


def newton_schulz_flops(shape: Sequence[int] | torch.Size, steps: int = 5) -> int:
    """Floating-point operations of ``steps`` quintic steps on a matrix or stack of ``shape``.

    For an ``m x n`` matrix with short side ``p = min(m, n)`` and long side ``q = max(m, n)``
    one step costs three matrix products, counted as 2 FLOPs per multiply-add:
    ``A = X X^T`` (``2 p^2 q``), ``b A + c A^2`` (``2 p^3``), ``a X + (...) X`` (``2 p^2 q``),
    so ``steps * (4 p^2 q + 2 p^3)`` per matrix, times the number of stacked matrices.
    The normalization and the elementwise terms (``O(p q)``) are left out. The same count
    holds for Polar Express, which differs only in its coefficients.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(
            f"newton_schulz_flops: shape must have at least 2 dimensions (..., m, n), got "
            f"{shape}; pass the shape of a matrix or a stack of matrices"
        )
    _check_steps(steps)
    m, n = shape[-2:]
    p, q = min(m, n), max(m, n)
    count = 1
    for size in shape[:-2]:
        count *= size
    return count * steps * (4 * p * p * q + 2 * p**3)


def polar_factor(
    x: Tensor,
    method: str = "newton_schulz",
    steps: int = 5,
    dtype: torch.dtype | str | None = None,
    *,
    eps: float = 1e-7,
    coefficients: tuple[float, float, float] | None = None,
) -> Tensor:
    """Approximate (or exact) polar factor ``U V^T`` of ``x`` of shape ``(..., m, n)``.

    Leading dimensions are a batch: each ``m x n`` matrix gets its own polar factor, all
    computed together.

    Args:
        x: a real matrix or a stack of matrices, at least 2-D, all entries finite.
        method: ``"newton_schulz"`` (Jordan et al. 2024), ``"polar_express"`` (Amsel et al.
            2025) or ``"svd"`` (exact). See the module docstring for the mathematics.
        steps: number of quintic steps for the iterative methods (ignored by ``"svd"``).
        dtype: precision of the computation. ``None`` means float32 (float64 when ``x`` is
            float64); ``torch.bfloat16`` (or ``"bfloat16"``) reproduces ``torch.optim.Muon``,
            which runs Newton-Schulz in bfloat16 (50-90x slower than float32 on CPUs without
            bfloat16 units).
        eps: added to the Frobenius norm in the normalization ``X_0 = x / (||x||_F + eps)``
            (``torch.optim.Muon``'s ``eps``).
        coefficients: ``(a, b, c)`` for ``"newton_schulz"``; default Jordan's
            ``(3.4445, -4.7750, 2.0315)`` (``torch.optim.Muon``'s ``ns_coefficients``).

    Returns:
        A tensor of ``x``'s shape and dtype. An all-zero matrix maps to zero for the
        iterative methods.

    Raises:
        ValueError: ``x`` has fewer than 2 dimensions, is complex or integer, contains NaN or
            inf; ``method`` or ``dtype`` is unknown; ``steps < 1``.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"polar_factor: x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(
            f"polar_factor: x must have at least 2 dimensions (..., m, n), got shape "
            f"{tuple(x.shape)}; the polar factor is defined for matrices (reshape vectors or "
            f"use a vector norm instead)"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"polar_factor: x must be a real floating-point tensor, got dtype {x.dtype}; "
            f"convert it with x.float()"
        )
    if method not in POLAR_METHODS:
        raise ValueError(
            f"polar_factor: unknown method {method!r}; valid methods are "
            f"{', '.join(repr(m) for m in POLAR_METHODS)}"
        )
    work_dtype = _resolve_dtype(x, dtype)
    if x.numel() == 0:
        return x.clone()

    if method == "svd":
        return _svd_polar(x, work_dtype)

    _check_steps(steps)
    if method == "newton_schulz":
        abc = JORDAN_COEFFICIENTS if coefficients is None else _check_coefficients(coefficients)
        return _quintic_iteration(x, [abc] * steps, work_dtype, norm_scale=1.0, eps=eps)
    if coefficients is not None:
        raise ValueError(
            "polar_factor: coefficients apply only to method='newton_schulz'; Polar Express "
            "uses its published per-step schedule (leave coefficients=None)"
        )
    return _folded_iteration(
        x,
        polar_express_schedule(steps),
        work_dtype,
        norm_scale=POLAR_EXPRESS_SAFETY,
        eps=eps,
    )


def _start(x: Tensor, work_dtype: torch.dtype, norm_scale: float, eps: float) -> Tensor:
    """``X_0 = x / (norm_scale ||x||_F + eps)`` per matrix, a fresh ``(count, m, n)`` stack.

    The norm is taken in the working dtype, as torch.optim.Muon does (its bfloat16 result
    depends on the norm being computed from the rounded matrix).
    """
    stack = x.reshape(-1, *x.shape[-2:]).to(work_dtype)  # a view for float32 input
    norms = torch.linalg.vector_norm(stack, dim=(-2, -1), keepdim=True)
    if not bool(torch.isfinite(norms).all()):
        raise ValueError(
            "polar_factor: x contains NaN or inf (its Frobenius norm is not finite); "
            "check the gradient or momentum that was passed in"
        )
    denominators = norms * norm_scale + eps if norm_scale != 1.0 else norms + eps
    # A contiguous result whatever the input's strides (a tall matrix arrives as a transposed
    # view): bfloat16 products on transposed operands can leave the fast CPU kernels.
    start = torch.empty(stack.shape, dtype=work_dtype, device=x.device)
    return torch.div(stack, denominators, out=start)


def _quintic_iteration(
    x: Tensor,
    schedule: list[tuple[float, float, float]],
    work_dtype: torch.dtype,
    *,
    norm_scale: float,
    eps: float,
) -> Tensor:
    """torch.optim.Muon's recipe: ``B = b A + c A^2``, then ``X <- a X + B X`` (addmm fusions).

    The exact order of operations of ``torch.optim.Muon``, so that its rounding is reproduced
    in every dtype (bfloat16 results equal Muon's bit for bit; the optimizer's float32 parity
    tests agree to 1e-6 over 20 steps). One matrix goes through ``mm``/``addmm`` (what Muon
    calls), a stack through ``bmm``/``baddbmm``; all write into reused ``out=`` buffers.
    """
    m, n = x.shape[-2:]
    tall = m > n
    x_now = _start(x, work_dtype, norm_scale, eps)
    if x_now.shape[0] == 1:
        matmul, matmul_add = torch.mm, torch.addmm
        x_now = x_now[0]
    else:
        matmul, matmul_add = torch.bmm, torch.baddbmm
    short = min(m, n)
    x_next = torch.empty_like(x_now)
    gram = x_now.new_empty((*x_now.shape[:-2], short, short))
    poly = torch.empty_like(gram)
    for a, b, c in schedule:
        if tall:  # short side is n: A = X^T X and X <- a X + X (b A + c A^2)
            matmul(x_now.mT, x_now, out=gram)
            matmul_add(gram, gram, gram, beta=b, alpha=c, out=poly)
            matmul_add(x_now, x_now, poly, beta=a, out=x_next)
        else:  # short side is m: A = X X^T and X <- a X + (b A + c A^2) X
            matmul(x_now, x_now.mT, out=gram)
            matmul_add(gram, gram, gram, beta=b, alpha=c, out=poly)
            matmul_add(x_now, poly, x_now, beta=a, out=x_next)
        x_now, x_next = x_next, x_now
    return x_now.reshape(x.shape).to(x.dtype)


def _folded_iteration(
    x: Tensor,
    schedule: list[tuple[float, float, float]],
    work_dtype: torch.dtype,
    *,
    norm_scale: float,
    eps: float,
) -> Tensor:
    """The same update as three plain products a step: ``X <- P X``, ``P = a I + A (b I + c A)``.

    The scalars ride on ``O(p^2)`` elementwise work of the ``p x p`` Gram side (``c A`` with
    ``b`` added to its diagonal, then ``a`` added to the diagonal of the product), so every
    product is a bare ``bmm``: on CPUs torch's bfloat16 ``addmm``/``baddbmm`` with a
    ``beta`` term can leave the fast (oneDNN) kernels, while ``bmm`` keeps them. The FLOPs
    are those of ``newton_schulz_flops``; the rounding differs from Muon's recipe.
    """
    m, n = x.shape[-2:]
    tall = m > n
    x_now = _start(x, work_dtype, norm_scale, eps)
    x_next = torch.empty_like(x_now)
    short = min(m, n)
    gram = x_now.new_empty((x_now.shape[0], short, short))
    poly, inner = torch.empty_like(gram), torch.empty_like(gram)
    for a, b, c in schedule:
        if tall:  # A = X^T X, X <- X P (P is symmetric: a polynomial in A)
            torch.bmm(x_now.mT, x_now, out=gram)
        else:  # A = X X^T, X <- P X
            torch.bmm(x_now, x_now.mT, out=gram)
        torch.mul(gram, c, out=inner)
        inner.diagonal(dim1=-2, dim2=-1).add_(b)
        torch.bmm(gram, inner, out=poly)
        poly.diagonal(dim1=-2, dim2=-1).add_(a)
        if tall:
            torch.bmm(x_now, poly, out=x_next)
        else:
            torch.bmm(poly, x_now, out=x_next)
        x_now, x_next = x_next, x_now
    return x_now.reshape(x.shape).to(x.dtype)


def _svd_polar(x: Tensor, work_dtype: torch.dtype) -> Tensor:
    """Exact polar factor ``U V^T`` from the reduced SVD ``x = U S V^T``."""
    if work_dtype in (torch.float16, torch.bfloat16):
        work_dtype = torch.float32  # torch.linalg.svd has no half-precision kernels
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            "polar_factor: x contains NaN or inf; check the gradient or momentum that was passed in"
        )
    u, _, vh = torch.linalg.svd(x.to(work_dtype), full_matrices=False)
    return (u @ vh).to(x.dtype)


def _resolve_dtype(x: Tensor, dtype: torch.dtype | str | None) -> torch.dtype:
    """The computation dtype: float32 by default, float64 kept, or the one asked for."""
    if dtype is None:
        return torch.float64 if x.dtype == torch.float64 else torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            resolved = None
    else:
        resolved = dtype
    if resolved not in _FLOAT_DTYPES:
        valid = ", ".join(str(d).removeprefix("torch.") for d in _FLOAT_DTYPES)
        raise ValueError(
            f"polar_factor: dtype must be None or a floating dtype ({valid}), got {dtype!r}"
        )
    return resolved


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"polar_factor: steps must be a positive integer (5 is the usual choice), got {steps!r}"
        )


def _check_coefficients(coefficients: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in coefficients)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"polar_factor: coefficients must be three finite numbers (a, b, c), got "
            f"{coefficients!r}"
        )
    return values  # type: ignore[return-value]
