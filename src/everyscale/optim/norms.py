"""The geometries of the optimizer template: one class per norm.

Every geometry is a norm ``||.||`` on one parameter tensor and answers four questions, all as
pure tensor functions (no state):

``lmo(d)``
    the linear minimization oracle of the *unit* ball, ``argmin_{||x|| <= 1} <d, x>``. It
    carries the minus sign, so ``<d, lmo(d)> = -||d||_*`` and ``||lmo(d)|| = 1`` (for
    ``d != 0``); it is invariant to positive scaling of ``d``. The template multiplies it by
    the group's radius ``rho`` (Pethick et al. 2025 [S]).
``dual_norm(d)``
    ``||d||_* = max_{||x|| <= 1} <d, x>``.
``norm(w)``
    ``||w||`` itself (the constrained step keeps ``norm(W) <= radius``).
``init_(w, radius=1.0)``
    overwrite ``w`` in place with a point on the sphere ``||w|| = radius``
    (Pethick et al. 2025 [S]).

Each norm is a *scaled* version of a classical one: ``||w|| = ||w||_0 / s`` where ``s`` is a
positive factor that depends only on the parameter's shape (and on constructor options), so
``lmo(d) = s * lmo_0(d)`` and ``||d||_* = s * ||d||_0*``. ``scale(shape)`` returns ``s`` and
``base_lmo(d)`` returns ``lmo_0(d)``; the optimizer folds ``s`` into the step's scalar so that
no extra pass over the tensor is needed. The scale factors of [S, Tables 2-4 and Rec. 3.1]:

==============  ============================  ===============================================
geometry        norm ``||w||``                 LMO direction (times -1)
==============  ============================  ===============================================
euclidean       ``||w||_F``                    ``d / ||d||_F``
sign            ``max|w_ij| / s``              ``s sign(d)``; ``s = 1/d_in`` for the head
spectral        ``||w||_op / s``               ``s U V^T``; ``s = sqrt(d_out/d_in)``
spectral_conv   ``||reshape(w)||_op / s``      on ``(out, in*k*k)``, ``s = sqrt(out/in)/k^2``
colnorm         ``max_j ||w_:j||_2 / s``       column: ``s d_:j / ||d_:j||``, ``s = sqrt(d_out)``
rownorm         ``max_i ||w_i:||_2 / s``       row: ``s d_i: / ||d_i:||``, ``s = 1/sqrt(d_in)``
rms             ``||w||_2 / sqrt(n)``          ``sqrt(n) d / ||d||_2``
identity        ``||w||_F`` (sharp = identity) SGD: the sharp operator ``d# = d``
adam            ``sqrt(sum D w^2)``            ``D^-1 d / ||D^-1 d||_D``, ``D = sqrt(v_hat) + eps``
==============  ============================  ===============================================

Leading batch dimension: the matrix norms (spectral, colnorm, rownorm) act on the last two
dimensions, so a stack ``(B, d_out, d_in)`` is always treated as ``B`` matrices. The norms that
reduce over the whole tensor (euclidean, sign, rms, identity, adam, spectral_conv) treat
dimension 0 as a batch when called with ``batched=True``.

The sharp operator (steepest descent direction; Pethick et al. 2025 [S]) is
``d# = argmax_x <d, x> - ||x||^2 / 2 = -||d||_* lmo(d)``; ``sharp(d)`` computes it, and
``Identity`` overrides it with the exact ``d# = d`` (plain SGD).

Of these, only ``Adam`` needs state (the second moment); the optimizer owns it and passes the
diagonal ``D`` in as ``denom=`` (see ``adam_denominator``). The geometries learned online
(``shampoo``, ``soap``, ``normuon``: ``adaptive.py`` and one module each) are whole
optimizer-state machines rather than balls; ``get_norm`` builds them too.

References: [S] Pethick, Xie, Antonakopoulos, Zhu, Silveti-Falls, Cevher, *Training Deep
Learning Models with Norm-Constrained LMOs*, ICML 2025 (arXiv 2502.07529), Tables 2-4, 6,
Rec. 3.1; [R] Pethick et al. 2025, *Training Neural Networks at Any Scale*; Bernstein & Newhouse
2024, *Old Optimizer, New Norm* (the sharp operator); Kingma & Ba 2015 and Loshchilov & Hutter
2019 (Adam, AdamW).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = [
    "NORMS",
    "RMS",
    "Adam",
    "ColNorm",
    "Euclidean",
    "Identity",
    "Norm",
    "RowNorm",
    "Sign",
    "Spectral",
    "SpectralConv",
    "adam_denominator",
    "adaptive_geometries",
    "get_norm",
]


def _dims(t: Tensor, batched: bool) -> tuple[int, ...]:
    """The dimensions that make up one element: all, or all but the leading batch dim."""
    start = 1 if batched else 0
    return tuple(range(start, t.ndim))


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with ``0 / 0 = 0``: the LMO of a zero gradient is the zero step."""
    tiny = torch.finfo(den.dtype).tiny
    return num / den.clamp_min(tiny)


def _element_shape(shape: torch.Size | tuple[int, ...], batched: bool) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    return shape[1:] if batched else shape


class Norm:
    """A geometry: a norm on one parameter tensor, given by its LMO (see the module docstring).

    Subclasses implement ``base_lmo``, ``_base_dual`` and ``_base_norm`` for the unscaled norm
    and may override ``scale``. ``name`` is the registry name used by ``get_norm``; ``kwargs``
    holds the constructor options so that a norm can be stored as plain data
    (``config()``) in an optimizer's ``state_dict`` and rebuilt with ``get_norm``.
    """

    name: ClassVar[str] = "norm"
    #: the smallest number of dimensions one parameter must have (2 for matrix norms)
    min_ndim: ClassVar[int] = 0

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    # ----------------------------------------------------------------- description
    def config(self) -> dict[str, Any]:
        """Plain-data description: ``get_norm(**cfg)``-style ``{"name": ..., **kwargs}``."""
        return {"name": self.name, **self.kwargs}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{type(self).__name__}({options})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Norm) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(repr(self))

    def describe(self) -> str:
        """A short label for tables, e.g. ``spectral`` or ``sign(1/d_in)``."""
        return self.name

    def check(self, shape: torch.Size | tuple[int, ...], name: str = "parameter") -> None:
        """Raise ``ValueError`` naming ``name`` if this norm cannot measure a ``shape`` tensor."""
        if len(shape) < self.min_ndim:
            raise ValueError(
                f"{name}: norm {self.name!r} needs a tensor with at least {self.min_ndim} "
                f"dimensions, but the parameter has shape {tuple(shape)}; use 'rms' (or "
                f"'euclidean', 'sign') for vectors and scalars"
            )

    # ----------------------------------------------------------------- the geometry
    def scale(self, shape: torch.Size | tuple[int, ...]) -> float:
        """The factor ``s`` of ``||w|| = ||w||_0 / s`` for one parameter of ``shape``."""
        return 1.0

    def base_lmo(self, d: Tensor, batched: bool = False) -> Tensor:
        """``lmo_0(d)``, the unit-ball LMO of the unscaled norm (a new tensor)."""
        raise NotImplementedError

    def _base_dual(self, d: Tensor, batched: bool) -> Tensor:
        raise NotImplementedError

    def _base_norm(self, w: Tensor, batched: bool) -> Tensor:
        raise NotImplementedError

    def lmo(self, d: Tensor, batched: bool = False) -> Tensor:
        """``argmin_{||x|| <= 1} <d, x>``: ``<d, lmo(d)> = -||d||_*``, ``||lmo(d)|| = 1``."""
        self.check(_element_shape(d.shape, batched), "lmo input")
        direction = self.base_lmo(d, batched)
        s = self.scale(_element_shape(d.shape, batched))
        return direction if s == 1.0 else direction.mul_(s)

    def dual_norm(self, d: Tensor, batched: bool = False) -> Tensor:
        """``||d||_* = max_{||x|| <= 1} <d, x>``; one value per batch element if batched."""
        self.check(_element_shape(d.shape, batched), "dual_norm input")
        return self._base_dual(d, batched) * self.scale(_element_shape(d.shape, batched))

    def norm(self, w: Tensor, batched: bool = False) -> Tensor:
        """``||w||``; one value per batch element if batched."""
        self.check(_element_shape(w.shape, batched), "norm input")
        return self._base_norm(w, batched) / self.scale(_element_shape(w.shape, batched))

    def sharp(self, d: Tensor, batched: bool = False) -> Tensor:
        """Steepest-descent direction ``d# = argmax_x <d,x> - ||x||^2/2 = -||d||_* lmo(d)``.

        Bernstein & Newhouse 2024; Pethick et al. 2025 [S]. The dual norm is taken as
        ``-<d, lmo(d)>``, which is exact for an exact LMO and consistent with an approximate
        one (Newton-Schulz).
        """
        direction = self.lmo(d, batched)
        dims = _dims(d, batched)
        dual = -(d * direction).sum(dim=dims, keepdim=True)
        return direction.mul_(-dual)

    def init_(self, w: Tensor, radius: float = 1.0, batched: bool = False) -> Tensor:
        """Overwrite ``w`` in place with a random point of norm exactly ``radius``."""
        raise NotImplementedError


class Euclidean(Norm):
    """The Frobenius norm ``||w||_F`` (self-dual); LMO ``-d / ||d||_F`` ([S], Table 2).

    With momentum this is normalized SGD.
    """

    name = "euclidean"

    def __init__(self) -> None:
        super().__init__()

    def base_lmo(self, d: Tensor, batched: bool = False) -> Tensor:
        dims = _dims(d, batched)
        return _safe_div(-d, torch.linalg.vector_norm(d, dim=dims, keepdim=True))

    def _base_dual(self, d: Tensor, batched: bool) -> Tensor:
        return torch.linalg.vector_norm(d, dim=_dims(d, batched))

    def _base_norm(self, w: Tensor, batched: bool) -> Tensor:
        return torch.linalg.vector_norm(w, dim=_dims(w, batched))

    def init_(self, w: Tensor, radius: float = 1.0, batched: bool = False) -> Tensor:
        with torch.no_grad():
            w.normal_()
            dims = _dims(w, batched)
            w.div_(torch.linalg.vector_norm(w, dim=dims, keepdim=True)).mul_(
                radius * self.scale(_element_shape(w.shape, batched))
            )
        return w


class Identity(Euclidean):
    """Plain SGD: the Euclidean geometry whose sharp operator is the identity, ``d# = d``.

    ``sharp`` returns ``d`` itself (no normalization round trip), so the ``sharp`` step of
    the template reproduces ``torch.optim.SGD`` exactly.
    """

    name = "identity"

    def sharp(self, d: Tensor, batched: bool = False) -> Tensor:
        return d


class RMS(Euclidean):
    """The RMS norm of a vector, ``||w||_RMS = ||w||_2 / sqrt(n)`` ([S], Table 2; biases, gains).

    LMO direction ``-d / ||d||_RMS = -sqrt(n) d / ||d||_2``; ``s = sqrt(n)`` with ``n`` the
    number of entries of one parameter.
    """

    name = "rms"

    def scale(self, shape: torch.Size | tuple[int, ...]) -> float:
        return math.sqrt(max(1, math.prod(shape)))

    def init_(self, w: Tensor, radius: float = 1.0, batched: bool = False) -> Tensor:
        """Constant ``radius`` (RMS exactly ``radius``), the natural start of a norm gain.

        Biases are conventionally started at zero instead (Pethick et al. 2025 [S]), which is inside
        the ball rather than on it; zero them yourself if you want that.
        """
        with torch.no_grad():
            w.fill_(radius)
        return w


class Sign(Norm):
    """The max-entry norm ``max |w_ij|`` (the l1 -> l_inf operator norm), scaled.

    LMO ``-s sign(d)``, dual norm ``s sum |d_ij|`` ([S], Table 2). ``normalized=True`` uses
    ``s = 1/d_in`` (``d_in = shape[-1]``), the output-layer (and tied-embedding) choice of
    [S, Rec. 3.1]; ``normalized=False`` gives plain signSGD / Lion / Signum.
    """

    name = "sign"

    def __init__(self, normalized: bool = False) -> None:
        super().__init__(normalized=bool(normalized))
        self.normalized = bool(normalized)
        # 1/d_in needs an input dimension: the normalized sign norm is for matrices.
        self.min_ndim = 2 if self.normalized else 0  # type: ignore[misc]

    def describe(self) -> str:
        return "sign(1/d_in)" if self.normalized else "sign"

    def scale(self, shape: torch.Size | tuple[int, ...]) -> float:
        return 1.0 / shape[-1] if self.normalized and len(shape) else 1.0

    def base_lmo(self, d: Tensor, batched: bool = False) -> Tensor:
        return torch.sign(d).neg_()

    def _base_dual(self, d: Tensor, batched: bool) -> Tensor:
        return d.abs().sum(dim=_dims(d, batched))

    def _base_norm(self, w: Tensor, batched: bool) -> Tensor:
        return w.abs().amax(dim=_dims(w, batched))

    def init_(self, w: Tensor, radius: float = 1.0, batched: bool = False) -> Tensor:
        with torch.no_grad():
            signs = torch.randint(0, 2, w.shape, device=w.device).to(w.dtype).mul_(2).sub_(1)
            w.copy_(signs).mul_(radius * self.scale(_element_shape(w.shape, batched)))
        return w


_SPECTRAL_SCALINGS = ("natural", "max1", "muon_rms", "none")


def _spectral_scale(scaling: str, d_out: int, d_in: int) -> float:
    if scaling == "natural":  # [S] Table 3: RMS -> RMS operator norm
        return math.sqrt(d_out / d_in)
    if scaling == "max1":  # [S] Rec. 3.1 image input; Jordan's Muon "original" adjustment
        return max(1.0, math.sqrt(d_out / d_in))
    if scaling == "muon_rms":  # Liu et al. 2025 (Moonshot), torch's "match_rms_adamw"
        return 0.2 * math.sqrt(max(d_out, d_in))
    return 1.0


class _PolarMixin:
    """Options shared by the spectral norms: how the polar factor is computed."""

    #: same-shape parameters can share one batched polar-factor call
    batchable: ClassVar[bool] = True

    def _polar_options(
        self, method: str, steps: int, dtype: torch.dtype | str | None
    ) -> dict[str, Any]:
        from everyscale.optim.polar import POLAR_METHODS

        if method not in POLAR_METHODS:
            raise ValueError(
                f"spectral norm: unknown polar method {method!r}; valid methods are "
                f"{', '.join(POLAR_METHODS)}"
            )
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f"spectral norm: steps (ns_steps) must be a positive integer, got {steps!r}"
            )
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).removeprefix("torch.")
        known = dtype in (None, "auto") or isinstance(getattr(torch, str(dtype), None), torch.dtype)
        if not known:
            raise ValueError(
                f"spectral norm: dtype (ns_dtype) must be 'auto', None (float32) or a dtype name "
                f"such as 'float32' or 'bfloat16', got {dtype!r}"
            )
        # Stored as plain strings so that a state_dict loads with torch.load(weights_only=True).
        self.method, self.steps, self.dtype = method, steps, dtype
        return {"method": method, "steps": steps, "dtype": dtype}

    def _polar(self, x: Tensor) -> Tensor:
        from everyscale.optim.polar import polar_factor

        if x.shape[-2] > x.shape[-1]:
            # Tall: orthogonalize the (wide) transpose, a view, as torch.optim.Muon does, so
            # that the sequence of matrix products and its rounding are the same as Muon's.
            return self._polar(x.mT).mT
        dtype = self.dtype
        if dtype == "auto":  # outside an optimizer, which resolves it once per job
            from everyscale.optim.polar_dtype import choose_polar_dtype

            dtype = choose_polar_dtype(x.device, distributed=False).dtype
        return polar_factor(x, method=self.method, steps=self.steps, dtype=dtype)


class Spectral(_PolarMixin, Norm):
    """The RMS -> RMS operator norm ``sqrt(d_in/d_out) ||W||_op`` of a matrix ([S], Table 3).

    LMO ``-s U V^T`` for ``d = U S V^T`` (the polar factor), dual norm ``s ||d||_nuclear``.
    ``scaling`` picks ``s``: ``"natural"`` ``sqrt(d_out/d_in)`` (hidden layers),
    ``"max1"`` ``max(1, sqrt(d_out/d_in))`` (image input layers [S, Rec. 3.1]; also Jordan's
    Muon learning-rate adjustment), ``"muon_rms"`` ``0.2 sqrt(max(d_out, d_in))`` (Liu et al.
    2025, *Muon is Scalable for LLM Training*, torch's ``match_rms_adamw``), ``"none"`` 1.

    The polar factor comes from ``everyscale.optim.polar.polar_factor`` with ``method``
    (``"newton_schulz"``, ``"polar_express"``, ``"svd"``), ``steps`` and ``dtype`` (``None``:
    float32; ``"auto"``: the fastest on the device, see ``everyscale.optim.polar_dtype``); the
    iterative methods return ``U S' V^T`` with ``S'`` near 1, so the LMO identities hold
    exactly only for ``method="svd"``. ``dual_norm`` and ``norm`` are exact (SVD) regardless.
    """

    name = "spectral"
    min_ndim = 2

    def __init__(
        self,
        scaling: str = "natural",
        method: str = "newton_schulz",
        steps: int = 5,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        if scaling not in _SPECTRAL_SCALINGS:
            raise ValueError(
                f"spectral norm: unknown scaling {scaling!r}; "
                f"valid: {', '.join(_SPECTRAL_SCALINGS)}"
            )
        options = self._polar_options(method, steps, dtype)
        super().__init__(scaling=scaling, **options)
        self.scaling = scaling

    def describe(self) -> str:
        label = "spectral" if self.scaling == "natural" else f"spectral({self.scaling})"
        if self.method != "polar_express":  # the presets' default goes unsaid
            label += f"[{self.method}]"
        return label

    def scale(self, shape: torch.Size | tuple[int, ...]) -> float:
        return _spectral_scale(self.scaling, shape[-2], shape[-1])

    def base_lmo(self, d: Tensor, batched: bool = False) -> Tensor:
        return self._polar(d).neg_()

    def _base_dual(self, d: Tensor, batched: bool) -> Tensor:
        return torch.linalg.matrix_norm(d, ord="nuc")

    def _base_norm(self, w: Tensor, batched: bool) -> Tensor:
        return torch.linalg.matrix_norm(w, ord=2)

    def init_(self, w: Tensor, radius: float = 1.0, batched: bool = False) -> Tensor:
        """Semi-orthogonal (all singular values equal), times ``s * radius`` ([S])."""
        with torch.no_grad():
            stack = w.reshape(-1, *w.shape[-2:])
            for matrix in stack:
                torch.nn.init.orthogonal_(matrix)
            w.copy_(stack.reshape(w.shape)).mul_(radius * self.scale(w.shape))
        return w


class SpectralConv(_PolarMixin, Norm):
    """Spectral norm of a convolution kernel ``(out, in, *kernel)`` on its ``(out, in*k*k)`` view.

    ``s = sqrt(out/in) / prod(kernel)`` ([S], Table 4 / Rec. 3.1: ``sqrt(out/in)/k^2`` for a
    ``k x k`` kernel, ``/k`` for a 1-D one). LMO ``-s polar(reshape(d))``. Batched input is
    ``(B, out, in, *kernel)``.
    """

    name = "spectral_conv"
    min_ndim = 3

    def __init__(
        self,
        method: str = "newton_schulz",
        steps: int = 5,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(**self._polar_options(method, steps, dtype))

    def scale(self, shape: torch.Size | tuple[int, ...]) -> float:
        out_ch, in_ch = shape[0], shape[1]
        return math.sqrt(out_ch / in_ch) / math.prod(shape[2:])

    @staticmethod
    def _as_matrices(t: Tensor, batched: bool) -> Tensor:
        lead = 2 if batched else 1
        return t.reshape(*t.shape[:lead], -1)

    def base_lmo(self, d: Tensor, batched: bool = False) -> Tensor:
        return self._polar(self._as_matrices(d, batched)).neg_().reshape(d.shape)

    def _base_dual(self, d: Tensor, batched: bool) -> Tensor:
        return torch.linalg.matrix_norm(self._as_matrices(d, batched), ord="nuc")

    def _base_norm(self, w: Tensor, batched: bool) -> Tensor:
        return torch.linalg.matrix_norm(self._as_matrices(w, batched), ord=2)

    def init_(self, w: Tensor, radius: float = 1.0, batched: bool = False) -> Tensor:
        """Semi-orthogonal ``(out, in*k*k)`` view times ``s * radius``: exactly on the sphere.

        (The Scion repository instead orthogonalizes each kernel tap, which lands inside the
        ball of this norm.)
        """
        with torch.no_grad():
            stack = w.reshape(-1, w.shape[1 if batched else 0], *w.shape[(2 if batched else 1) :])
            for kernel in stack:
                torch.nn.init.orthogonal_(kernel.reshape(kernel.shape[0], -1))
            w.copy_(stack.reshape(w.shape)).mul_(
                radius * self.scale(_element_shape(w.shape, batched))
            )
        return w


class _LineNorm(Norm):
    """Shared code of ColNorm and RowNorm: the max over lines (columns or rows) of l2 norms."""

    min_ndim = 2
    #: the dimension the l2 norm runs over: -2 for columns, -1 for rows
    reduce_dim: ClassVar[int] = -2

    def __init__(self, transpose: bool = False, normalized: bool = False) -> None:
        super().__init__(transpose=bool(transpose), normalized=bool(normalized))
        self.transpose, self.normalized = bool(transpose), bool(normalized)

    def describe(self) -> str:
        flags = [f for f, on in (("T", self.transpose), ("1/d_in", self.normalized)) if on]
        return f"{self.name}({','.join(flags)})" if flags else self.name

    def _oriented_shape(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
        d_out, d_in = int(shape[-2]), int(shape[-1])
        return (d_in, d_out) if self.transpose else (d_out, d_in)

    def _dim(self) -> int:
        # Transposing the matrix swaps which stored dimension a "column" runs along.
        return (-1 if self.reduce_dim == -2 else -2) if self.transpose else self.reduce_dim

    def base_lmo(self, d: Tensor, batched: bool = False) -> Tensor:
        lengths = torch.linalg.vector_norm(d, dim=self._dim(), keepdim=True)
        return _safe_div(-d, lengths)

    def _base_dual(self, d: Tensor, batched: bool) -> Tensor:
        return torch.linalg.vector_norm(d, dim=self._dim()).sum(dim=-1)

    def _base_norm(self, w: Tensor, batched: bool) -> Tensor:
        return torch.linalg.vector_norm(w, dim=self._dim()).amax(dim=-1)

    def init_(self, w: Tensor, radius: float = 1.0, batched: bool = False) -> Tensor:
        """Random lines, each normalized to length ``s * radius`` ([S])."""
        with torch.no_grad():
            w.normal_()
            w.div_(torch.linalg.vector_norm(w, dim=self._dim(), keepdim=True))
            w.mul_(radius * self.scale(w.shape))
        return w


class ColNorm(_LineNorm):
    """The l1 -> RMS operator norm: ``max_j ||w_:j||_2 / sqrt(d_out)`` ([S], Table 2).

    LMO: each column ``-sqrt(d_out) d_:j / ||d_:j||_2``. ``transpose=True`` measures the
    transpose, for an ``nn.Embedding`` that stores ``(vocab, d)`` while acting as a
    ``d x vocab`` matrix on one-hot inputs: each token's embedding vector is one column
    [S, Rec. 3.1]. ``normalized=True`` divides ``s`` by ``d_in`` (the Scion repository's
    option for non-input layers).
    """

    name = "colnorm"
    reduce_dim = -2

    def scale(self, shape: torch.Size | tuple[int, ...]) -> float:
        d_out, d_in = self._oriented_shape(shape)
        return math.sqrt(d_out) / (d_in if self.normalized else 1)


class RowNorm(_LineNorm):
    """The RMS -> l_inf operator norm: ``sqrt(d_in) max_i ||w_i:||_2`` ([S], Table 2).

    LMO: each row ``-d_i: / (sqrt(d_in) ||d_i:||_2)``. ``normalized=False`` drops the
    ``1/sqrt(d_in)`` (the l2 -> l_inf norm, for input layers); ``transpose=True`` as ColNorm.
    """

    name = "rownorm"
    reduce_dim = -1

    def __init__(self, transpose: bool = False, normalized: bool = True) -> None:
        super().__init__(transpose=transpose, normalized=normalized)

    def describe(self) -> str:
        flags = [f for f, on in (("T", self.transpose), ("l2", not self.normalized)) if on]
        return f"{self.name}({','.join(flags)})" if flags else self.name

    def scale(self, shape: torch.Size | tuple[int, ...]) -> float:
        _, d_in = self._oriented_shape(shape)
        return 1.0 / math.sqrt(d_in) if self.normalized else 1.0


def adam_denominator(exp_avg_sq: Tensor, step: int | float, beta2: float, eps: float) -> Tensor:
    """The diagonal ``D = sqrt(v_t / (1 - beta2^t)) + eps`` of Adam's geometry (a new tensor).

    Kingma & Ba 2015, Algorithm 1, written as ``torch.optim.Adam`` computes it (bias
    correction applied to the square root) so that results agree bit for bit.
    """
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    return (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)


class Adam(Norm):
    """The diagonal adaptive geometry of Adam: ``||x||_D = sqrt(sum_i D_i x_i^2)``.

    ``D = sqrt(v_hat) + eps`` comes from the second-moment estimate the optimizer keeps
    (``adam_denominator``) and is passed in as ``denom=``. The sharp operator is
    ``d# = D^-1 d`` (with the bias-corrected first moment as ``d`` this is Adam's step,
    Kingma & Ba 2015); the LMO is ``-D^-1 d / ||D^-1 d||_D`` and the dual norm
    ``||d||_{D^-1} = sqrt(sum d_i^2 / D_i)``. There is no fixed ball, so no ``init_``.
    """

    name = "adam"

    def __init__(self) -> None:
        super().__init__()

    @staticmethod
    def _need(denom: Tensor | None) -> Tensor:
        if denom is None:
            raise ValueError(
                "adam geometry: pass denom=adam_denominator(exp_avg_sq, step, beta2, eps); the "
                "diagonal comes from the optimizer's second-moment state"
            )
        return denom

    def base_lmo(self, d: Tensor, batched: bool = False, denom: Tensor | None = None) -> Tensor:
        denom = self._need(denom)
        scaled = d / denom
        length = (scaled * scaled * denom).sum(dim=_dims(d, batched), keepdim=True).sqrt()
        return _safe_div(-scaled, length)

    def lmo(self, d: Tensor, batched: bool = False, denom: Tensor | None = None) -> Tensor:
        return self.base_lmo(d, batched, denom)

    def dual_norm(self, d: Tensor, batched: bool = False, denom: Tensor | None = None) -> Tensor:
        return (d * d / self._need(denom)).sum(dim=_dims(d, batched)).sqrt()

    def norm(self, w: Tensor, batched: bool = False, denom: Tensor | None = None) -> Tensor:
        return (w * w * self._need(denom)).sum(dim=_dims(w, batched)).sqrt()

    def sharp(self, d: Tensor, batched: bool = False, denom: Tensor | None = None) -> Tensor:
        return d / self._need(denom)

    def init_(self, w: Tensor, radius: float = 1.0, batched: bool = False) -> Tensor:
        raise ValueError(
            "adam geometry has no fixed ball (its diagonal changes every step), so there is no "
            "boundary to initialize on; use the model's own initialization"
        )


NORMS: dict[str, type[Norm]] = {
    cls.name: cls
    for cls in (Euclidean, Sign, Spectral, SpectralConv, ColNorm, RowNorm, RMS, Identity, Adam)
}


def adaptive_geometries() -> dict[str, type[Norm]]:
    """The geometries learned online (Shampoo, SOAP, NorMuon), each in its own module.

    They build on ``Norm``, so they are imported here only when asked for.
    """
    from everyscale.optim.normuon import NorMuon
    from everyscale.optim.shampoo import Shampoo
    from everyscale.optim.soap import Soap

    return {cls.name: cls for cls in (Shampoo, Soap, NorMuon)}


def get_norm(name: str | Norm, **kwargs: Any) -> Norm:
    """The geometry called ``name`` (``NORMS`` or ``adaptive_geometries()``), built with ``kwargs``.

    A ``Norm`` instance is returned unchanged (then ``kwargs`` must be empty).
    """
    if isinstance(name, Norm):
        if kwargs:
            raise ValueError(f"get_norm: got a Norm instance {name!r} and extra options {kwargs}")
        return name
    geometries = {**NORMS, **adaptive_geometries()}
    if name not in geometries:
        raise ValueError(f"unknown norm {name!r}; valid norms are {', '.join(geometries)}")
    try:
        return geometries[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"norm {name!r}: bad options {kwargs}: {err}") from None
