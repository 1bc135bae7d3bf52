"""Geometries learned online: the contract Shampoo, SOAP and NorMuon share.

Adam learns a diagonal geometry from the gradients it sees; Shampoo (Gupta et al. 2018) learns
a Kronecker-factored one, SOAP (Vyas et al. 2024) runs Adam in that geometry's eigenbasis and
NorMuon (Li et al. 2025) learns a diagonal over the output neurons of Muon's update. Each is an
``AdaptiveGeometry``: a ``Norm`` whose metric is the optimizer's *state*, so it has no fixed
ball (no ``lmo``/``norm``/``init_`` without that state) and it computes its own update. The
template calls ``update_`` with the group's parameters, gradients and per-parameter state
dicts; the geometry returns how many matrices fell back to a simpler step (Shampoo: a failed
eigendecomposition) so that the optimizer can count them.

Every parameter is seen as a stack of ``b`` matrices ``(d_out, d_in)``: through the group's
``Layout`` when it has one (``layouts.py``: HF ``Conv1D`` transposed, fused q/k/v as three
matrices, HF experts per expert, per-head blocks), otherwise as stored (``as_matrices``): a
2-D weight is one ``m x n`` matrix, a 3-D tensor ``(E, m, n)`` is ``E`` expert matrices, a
convolution kernel ``(out, in, *k)`` is one ``out x (in k...)`` matrix. A kernel
(``kernel(grad, state, step, group)``) works on such a stack, with its state tensors stacked
the same way (leading ``b``).
``apply_kernel`` runs it in one of two ways, which compute the same thing:

- per parameter (``batched=False``): the kernel updates that parameter's own state in place;
- batched (``batched=True``): parameters of one shape, dtype, device and step count are
  concatenated along the stack dimension, run as one stack (one batched ``eigh``/``qr``/
  ``bmm`` per shape), and their state slices copied back.

Each matrix's state stays self-contained (no tensor is shared between parameters), so a
sharded optimizer can keep every matrix's preconditioner where its owner is.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, ClassVar

import torch
from torch import Tensor

from everyscale.optim.layouts import Layout
from everyscale.optim.norms import Norm

__all__ = [
    "AdaptiveGeometry",
    "apply_kernel",
    "as_matrices",
    "matrix_shape",
    "safe_eigh",
    "stack_shape",
    "work_dtype",
]


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
    """``(b, m, n)``: how many matrices a parameter of ``shape`` holds and their shape."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 3:  # a stack of expert matrices (E, m, n)
        return shape[0], shape[1], shape[2]
    return 1, shape[0], math.prod(shape[1:])  # a convolution kernel (out, in, *k)


def as_matrices(t: Tensor) -> Tensor:
    """``t`` as a ``(b, m, n)`` stack (a view when ``t`` is contiguous)."""
    return t.reshape(matrix_shape(t.shape))


def stack_shape(layout: Layout | None, shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
    """``(b, m, n)`` of a parameter of ``shape`` read through ``layout`` (or as stored)."""
    if layout is not None and layout.reshapes(shape):
        return layout.matrix_shape(shape)
    return matrix_shape(shape)


def _to_stack(layout: Layout | None, t: Tensor) -> Tensor:
    if layout is not None and layout.reshapes(t.shape):
        return layout.to_matrices(t)
    return as_matrices(t)


def _from_stack(layout: Layout | None, u: Tensor, shape: torch.Size) -> Tensor:
    if layout is not None and layout.reshapes(shape):
        return layout.from_matrices(u, shape)
    return u.reshape(shape)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision of factors, roots and bases: float32, or float64 for float64 parameters."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def safe_eigh(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``eigh`` of a stack of symmetric matrices that never raises.

    Returns ``(eigenvalues, eigenvectors, ok)``; ``ok[i]`` is False where matrix ``i`` holds a
    NaN/inf or ``eigh`` did not converge (its outputs are then the identity's and must not be
    used). A failing batch is retried one matrix at a time to find the culprits.
    """
    finite = torch.isfinite(a).flatten(1).all(dim=1)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    sym = torch.where(finite[:, None, None], (a + a.mT) / 2, eye)
    try:
        values, vectors = torch.linalg.eigh(sym)
        ok = finite.clone()
    except torch.linalg.LinAlgError:
        values, vectors, ok = [], [], finite.clone()
        for i, matrix in enumerate(sym):
            try:
                v, q = torch.linalg.eigh(matrix)
            except torch.linalg.LinAlgError:
                v, q = torch.ones_like(matrix[0]), torch.eye(*matrix.shape).to(matrix)
                ok[i] = False
            values.append(v)
            vectors.append(q)
        values, vectors = torch.stack(values), torch.stack(vectors)
    ok &= torch.isfinite(values).all(dim=1) & torch.isfinite(vectors).flatten(1).all(dim=1)
    return values, vectors, ok


class AdaptiveGeometry(Norm):
    """A geometry learned from the gradients (see the module docstring).

    Subclasses set ``name``, implement ``init_state`` (the zero state of one parameter),
    ``kernel`` (the update of a stack of matrices) and ``state_bytes``, and list in
    ``group_keys`` the param-group settings they read besides ``lr`` and ``weight_decay``.
    """

    min_ndim: ClassVar[int] = 2
    #: not batched by default on the CPU: there one LAPACK call per matrix is what a batched
    #: ``eigh`` does anyway, and concatenating the state costs more than it saves (measured:
    #: ``cat``/``copy_`` took a fifth of a Shampoo step on the GPT stack); ``foreach=None``
    #: batches on accelerators, ``foreach=True`` forces it
    batchable: ClassVar[bool] = False
    group_keys: ClassVar[tuple[str, ...]] = ()

    # ---------------------------------------------------------------- contract
    def init_state(
        self, shape: tuple[int, int, int], p: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        """Fill ``state`` (empty) with the zero state of parameter ``p`` in ``group``, read as
        a ``shape = (b, m, n)`` stack of matrices."""
        raise NotImplementedError

    def kernel(
        self, grad: Tensor, state: dict[str, Tensor], step: int, group: dict[str, Any]
    ) -> tuple[Tensor | None, Tensor | None]:
        """The update ``u`` of a ``(b, m, n)`` stack (``None``: no step this time) and which
        matrices fell back (a ``(b,)`` bool tensor, or ``None`` when none could)."""
        raise NotImplementedError

    def state_bytes(
        self, shape: tuple[int, int, int], dtype: torch.dtype, group: dict[str, Any]
    ) -> int:
        """Bytes of optimizer state of one parameter read as a ``(b, m, n)`` stack."""
        raise NotImplementedError

    def update_(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        group: dict[str, Any],
        layout: Layout | None,
        batched: bool,
    ) -> list[int]:
        """One step for every parameter; returns the fallbacks of each parameter."""
        return apply_kernel(self, params, grads, states, group, layout, batched)

    # ------------------------------------------------- no state, no geometry
    def _stateless(self, *_: Any, **__: Any) -> Tensor:
        raise ValueError(
            f"the {self.name} geometry is learned from the gradients (it lives in the "
            f"optimizer's state), so it has no fixed ball: use the {self.name} preset "
            f"(everyscale.optimizer(model, {self.name!r})) rather than lmo/norm/dual_norm/init_"
        )

    base_lmo = _base_dual = _base_norm = lmo = dual_norm = norm = sharp = init_ = _stateless


def _stack_groups(
    params: list[Tensor], states: list[dict[str, Any]], layout: Layout | None, batched: bool
) -> list[list[int]]:
    """Indices to run together: one per parameter, or same shape/dtype/device/step."""
    if not batched:
        return [[i] for i in range(len(params))]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (p, s) in enumerate(zip(params, states)):
        key = (stack_shape(layout, p.shape)[1:], p.dtype, p.device, int(s["step"].item()))
        groups[key].append(i)
    return list(groups.values())


def apply_kernel(
    geometry: AdaptiveGeometry,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Any]],
    group: dict[str, Any],
    layout: Layout | None,
    batched: bool,
) -> list[int]:
    """Run ``geometry.kernel`` and take the step ``W <- (1 - lr wd) W - lr u``.

    Returns the number of matrices of each parameter that fell back this step.
    """
    lr, wd = group["lr"], group["weight_decay"]
    for p, state in zip(params, states):
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            geometry.init_state(stack_shape(layout, p.shape), p, state, group)
    fallbacks = [0] * len(params)
    for indices in _stack_groups(params, states, layout, batched):
        for i in indices:
            states[i]["step"] += 1
        step = int(states[indices[0]]["step"].item())
        if len(indices) == 1:
            stack = {k: v for k, v in states[indices[0]].items() if k != "step"}
            grad = _to_stack(layout, grads[indices[0]])
        else:
            keys = [k for k in states[indices[0]] if k != "step"]
            stack = {k: torch.cat([states[i][k] for i in indices]) for k in keys}
            grad = torch.cat([_to_stack(layout, grads[i]) for i in indices])
        update, failed = geometry.kernel(grad, stack, step, group)
        if len(indices) > 1:
            _copy_back(stack, [states[i] for i in indices])
        counts = [stack_shape(layout, params[i].shape)[0] for i in indices]
        if failed is not None:
            for i, f in zip(indices, failed.split(counts)):
                fallbacks[i] += int(f.sum())
        if update is None:
            continue
        for i, u in zip(indices, update.split(counts)):
            p = params[i]
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(_from_stack(layout, u, p.shape), alpha=-lr)
    return fallbacks


def _copy_back(stack: dict[str, Tensor], states: list[dict[str, Any]]) -> None:
    """Write the slices of a concatenated state back into each parameter's own tensors."""
    for key, stacked in stack.items():
        offset = 0
        for state in states:
            size = state[key].shape[0]
            state[key].copy_(stacked[offset : offset + size])
            offset += size
