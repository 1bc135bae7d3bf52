"""The optimizer template (issue 2): geometries, the optimizer, roles and presets.

    import everyscale
    opt = everyscale.optimizer(model, "scion", lr=2**-12)  # lr * radius 50 is the step
    everyscale.describe(model, "scion")  # prints (and returns) the per-parameter table

- ``norms``: one class per geometry (``get_norm(name)``), each with ``lmo``, ``dual_norm``,
  ``norm``, ``init_``.
- ``optimizer.NormOptimizer``: the template, a ``torch.optim.Optimizer``.
- ``roles``: which parameter is an input, hidden, output or vector parameter.
- ``presets``: ``optimizer(params_or_model, preset, lr, **overrides)``, ``describe``, ``PRESETS``.
- ``layouts``: how a tensor is read as matrices (``Layout``, ``register_layout``).
- ``registry``: one typed ``PresetSpec`` per preset (``register_preset``, ``get_preset``), read
  by optim, scale, train and ladder.
"""

from __future__ import annotations

from everyscale.optim.layouts import Layout, register_layout
from everyscale.optim.norms import NORMS, Norm, get_norm
from everyscale.optim.optimizer import NonFiniteGradientError, NormOptimizer
from everyscale.optim.presets import DEFAULT_LR, PRESETS, describe, describe_optimizer, optimizer
from everyscale.optim.registry import ParamInfo, PresetSpec, get_preset, register_preset
from everyscale.optim.roles import Role, assign_roles

__all__ = [
    "DEFAULT_LR",
    "NORMS",
    "PRESETS",
    "Layout",
    "NonFiniteGradientError",
    "Norm",
    "NormOptimizer",
    "ParamInfo",
    "PresetSpec",
    "Role",
    "assign_roles",
    "describe",
    "describe_optimizer",
    "get_norm",
    "get_preset",
    "optimizer",
    "register_layout",
    "register_preset",
]
