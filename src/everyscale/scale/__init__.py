"""everyscale.scale: hyperparameters that transfer across width, depth, batch size and horizon.

- :mod:`~everyscale.scale.rules`: residual multiplier ``m_L^-alpha`` and its learning-rate
  factor, batch-size rules (``sqrt(B)`` / ``B``), horizon rules (``D^-0.28``, ``D^0.45``).
- :mod:`~everyscale.scale.parametrization`: base shapes, per-parameter multipliers and
  learning-rate factors (:func:`plan`), initialization on each role's norm ball (:func:`init_`).
- :mod:`~everyscale.scale.coord`: the coordinate check across widths.
- :mod:`~everyscale.scale.transfer`: learning-rate sweeps across widths or depths, analysed
  into ``transfer.json`` (``everyscale transfer``).
"""

from __future__ import annotations

from everyscale.scale.coord import CoordResult, coord_check
from everyscale.scale.parametrization import (
    BaseShape,
    ParamScaling,
    ScalePlan,
    base_shapes,
    describe_plan,
    find_blocks,
    init_,
    plan,
)
from everyscale.scale.rules import (
    batch_size_lr,
    depth_lr_factor,
    horizon_batch_size,
    horizon_lr,
    horizon_lr_exponent,
    residual_multiplier,
    transfer_lr,
    update_family,
)
from everyscale.scale.transfer import analyse, parse_lr_grid

__all__ = [
    "BaseShape",
    "CoordResult",
    "ParamScaling",
    "ScalePlan",
    "analyse",
    "base_shapes",
    "batch_size_lr",
    "coord_check",
    "depth_lr_factor",
    "describe_plan",
    "find_blocks",
    "horizon_batch_size",
    "horizon_lr",
    "horizon_lr_exponent",
    "init_",
    "parse_lr_grid",
    "plan",
    "residual_multiplier",
    "transfer_lr",
    "update_family",
]
