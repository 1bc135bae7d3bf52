"""Who computes what: each polar-factor matrix gets one owner rank, balanced by its FLOPs.

The Spectral LMO of a ``d_out x d_in`` matrix costs ``steps (4 p^2 q + 2 p^3)`` FLOPs by
Newton-Schulz (``p``, ``q`` its short and long side; ``everyscale.optim.polar``), far more
than any element-wise geometry, and it needs the whole matrix. Splitting the matrices over
``W`` ranks so that each rank's FLOPs are about ``1/W`` of the total is the scheduling
problem ``P || C_max``; the greedy "longest processing time first" rule (Graham 1969,
*Bounds on multiprocessing timing anomalies*) gives each matrix, largest first, to the rank
with the least work so far, and is within ``4/3 - 1/(3W)`` of the best split.

The plan is a pure function of the shapes, so every rank computes the same plan without
talking to the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from everyscale.optim.polar import newton_schulz_flops

__all__ = ["OwnerPlan", "assign_owners", "polar_flops"]


def polar_flops(shape: Sequence[int], steps: int = 5, kernel: bool = False) -> int:
    """Newton-Schulz FLOPs of one parameter of ``shape``.

    A stack ``(..., m, n)`` counts each matrix; a convolution kernel (``kernel=True``,
    ``(out, in, *k)``) is the one matrix ``(out, in * prod(k))`` of ``spectral_conv``.
    """
    shape = tuple(int(s) for s in shape)
    if kernel:
        shape = (shape[0], math.prod(shape[1:]))
    return newton_schulz_flops(shape, steps)


@dataclass(frozen=True)
class OwnerPlan:
    """``owner[i]``: the rank that computes matrix ``i``; ``loads[r]``: rank ``r``'s FLOPs."""

    owner: tuple[int, ...]
    loads: tuple[int, ...]

    def owned(self, rank: int) -> list[int]:
        """Indices of the matrices ``rank`` computes, in their original order."""
        return [i for i, r in enumerate(self.owner) if r == rank]

    @property
    def imbalance(self) -> float:
        """Largest load over the mean load (1.0 is a perfect split)."""
        mean = sum(self.loads) / len(self.loads)
        return max(self.loads) / mean if mean else 1.0


def assign_owners(
    costs: Sequence[int], world_size: int, start_loads: Sequence[int] | None = None
) -> OwnerPlan:
    """Give each job (its FLOPs in ``costs``) to a rank: largest first, to the least loaded.

    Ties go to the lower rank and, among equal costs, the earlier job is placed first, so the
    result is deterministic. ``start_loads`` carries work already given out (by earlier
    parameter groups) so that the whole step stays balanced.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    loads = list(start_loads) if start_loads is not None else [0] * world_size
    if len(loads) != world_size:
        raise ValueError(f"start_loads has {len(loads)} entries for {world_size} ranks")
    owner = [0] * len(costs)
    for job in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        owner[job] = rank
        loads[rank] += int(costs[job])
    return OwnerPlan(tuple(owner), tuple(loads))
