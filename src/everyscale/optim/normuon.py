"""NorMuon: Muon's orthogonalized update, normalized per output neuron by a learned diagonal.

For a matrix ``W`` (``m x n``, ``m`` output neurons: the rows of an ``nn.Linear`` weight)
with gradient ``G`` (Li, Liu, Liang, Chen, Zhao 2025, *NorMuon: Making Muon more efficient and
scalable*, arXiv 2510.05491, Algorithm 1):

1. ``M <- beta1 M + (1 - beta1) G`` (``momentum=beta1``, zero start; ``nesterov=True`` uses
   ``(1 - beta1) G + beta1 M`` as modded-nanogpt does; the paper's Algorithm 1 does not);
2. ``O = NS_5(M)``, Muon's Newton-Schulz polar factor (Jordan et al. 2024; see ``polar.py``);
3. ``v <- beta2 v + (1 - beta2) mean_j O_ij^2`` (one number per row, zero start, no bias
   correction);
4. ``O_hat_ij = O_ij / (sqrt(v_i) + eps)``: each neuron's update has unit RMS in the
   learned scale;
5. ``W <- (1 - lr wd) W - lr (0.2 sqrt(mn) / ||O_hat||_F) O_hat``: the step's RMS is
   ``0.2 lr``, Muon's with the ``0.2 sqrt(max(m, n))`` scaling (Liu et al. 2025, *Muon is
   Scalable for LLM Training*; ``adjust_lr_fn="match_rms_adamw"``), so AdamW's learning rate
   carries over.

State per ``m x n`` matrix: ``M`` (``mn``) and ``v`` (``m``), in the weight's dtype; ``E`` of
each for a 3-D stack of experts.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from everyscale.optim.adaptive import AdaptiveGeometry
from everyscale.optim.norms import _PolarMixin

__all__ = ["NorMuon", "normuon_kernel"]

#: the RMS of NorMuon's step per unit learning rate (Li et al. 2025; Liu et al. 2025)
MATCHED_RMS = 0.2


def normuon_kernel(
    grad: Tensor,
    state: dict[str, Tensor],
    *,
    beta1: float,
    nesterov: bool,
    beta2: float,
    eps: float,
    polar: Any,
) -> Tensor:
    """NorMuon's update for a ``(b, m, n)`` stack (module docstring); ``polar(x)`` is NS_5."""
    momentum = state["momentum_buffer"]
    momentum.lerp_(grad, 1 - beta1)
    direction = grad.lerp(momentum, beta1) if nesterov else momentum
    o = polar(direction)
    v = state["row_sq"]
    v.lerp_(o.square().mean(dim=-1), 1 - beta2)
    o_hat = o / (v.sqrt() + eps).unsqueeze(-1)
    m, n = o.shape[-2:]
    length = torch.linalg.vector_norm(o_hat, dim=(-2, -1), keepdim=True)
    scale = MATCHED_RMS * (m * n) ** 0.5 / length.clamp_min(torch.finfo(length.dtype).tiny)
    return o_hat * scale


class NorMuon(_PolarMixin, AdaptiveGeometry):
    """NorMuon's geometry (module docstring).

    Options: ``beta2`` (the row second moment's decay), ``eps``, and the polar factor's
    ``method``, ``steps``, ``dtype`` (as the spectral norm's). The group's ``momentum`` and
    ``nesterov`` drive the first moment.
    """

    name = "normuon"
    group_keys: ClassVar[tuple[str, ...]] = ("momentum", "nesterov")

    def __init__(
        self,
        beta2: float = 0.95,
        eps: float = 1e-8,
        method: str = "newton_schulz",
        steps: int = 5,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        if isinstance(beta2, bool) or not isinstance(beta2, (int, float)) or not 0 <= beta2 < 1:
            raise ValueError(f"normuon: beta2 must be in [0, 1), got {beta2!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"normuon: eps must be a number > 0, got {eps!r}")
        options = self._polar_options(method, steps, dtype)
        super().__init__(beta2=float(beta2), eps=float(eps), **options)

    def describe(self) -> str:
        return "normuon" if self.method == "newton_schulz" else f"normuon[{self.method}]"

    def init_state(
        self, shape: tuple[int, int, int], p: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        b, m, n = shape
        state["momentum_buffer"] = torch.zeros(b, m, n, dtype=p.dtype, device=p.device)
        state["row_sq"] = torch.zeros(b, m, dtype=p.dtype, device=p.device)

    def kernel(
        self, grad: Tensor, state: dict[str, Tensor], step: int, group: dict[str, Any]
    ) -> tuple[Tensor, None]:
        update = normuon_kernel(
            grad,
            state,
            beta1=group["momentum"],
            nesterov=group["nesterov"],
            beta2=self.kwargs["beta2"],
            eps=self.kwargs["eps"],
            polar=self._polar,
        )
        return update, None

    def state_bytes(
        self, shape: tuple[int, int, int], dtype: torch.dtype, group: dict[str, Any]
    ) -> int:
        b, m, n = shape
        return b * (m * n + m) * torch.empty((), dtype=dtype).element_size()
