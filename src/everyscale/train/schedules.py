"""Learning-rate schedules and the batch-size rules of scale transfer.

A schedule is a function ``step -> multiplier`` of the base learning rate, for steps
``0 .. total_steps`` (step ``s`` is the ``s``-th optimizer update; ``total_steps`` is the end,
where decaying schedules reach 0). It works with any optimizer, e.g. through
``torch.optim.lr_scheduler.LambdaLR``.

- ``constant``: 1.
- ``linear``: ``1 - s/T`` (linear decay to zero).
- ``cosine``: ``(1 + cos(pi s/T)) / 2`` (Loshchilov & Hutter 2017, without restarts).
- ``wsd``: warmup-stable-decay: 1 after the warmup, then a cooldown to zero over the last
  ``Tc`` steps (Hu et al. 2024, MiniCPM; Scion's runs use no warmup and a cooldown over the
  last ~30% [S]). With ``p = (s - (T - Tc)) / Tc`` the progress through the cooldown, the
  ``linear`` shape is ``1 - p`` and the ``sqrt`` shape ``1 - sqrt(p)`` (Hägele et al. 2024,
  *Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations*, which found
  ``1 - sqrt`` better than linear).

Any schedule can start with a linear warmup over the first ``W`` steps: ``(s + 1) / W`` for
``s < W``, so the first update already moves; the decay then runs over the remaining steps.

``constant`` and ``wsd`` can decay their stable phase as a power of the step,
``(s / S0)^-b`` from step ``S0`` on (``power_decay_from``, ``power_decay`` = b), and the
``wsd`` cooldown then starts from the level its stable phase reached. A run of ``T`` steps
whose stable phase ends at ``0.7 T`` so ends it at ``(T / T0)^-b`` when ``S0 = 0.7 T0``: the
learning rate of a longer horizon, ``eta*(D) ~ D^-b`` (Filatov et al. 2025 fit it for Scion),
reached without knowing the horizon in advance, so that runs of every length still share
their stable phase step for step (the Power scheduler of Shen et al. 2024 decays the same
way, ``lr ~ step^-b``, for the same reason).

Warmup and cooldown are given as fractions of the run (``warmup``, ``cooldown``) or as
absolute step counts (``warmup_steps``, ``cooldown_steps``, which win when given). Absolute
counts are what WSD branches need: runs of different lengths share their warmup and stable
phase step for step only when the warmup does not scale with the length
(:mod:`everyscale.train.branch`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

__all__ = [
    "COOLDOWN_SHAPES",
    "SCHEDULES",
    "batch_size_rule",
    "get_schedule",
    "scale_lr_for_batch_size",
]

SCHEDULES = ("constant", "linear", "cosine", "wsd")
COOLDOWN_SHAPES = ("linear", "sqrt")
CooldownShape = Literal["linear", "sqrt"]


def get_schedule(
    name: str,
    total_steps: int,
    warmup: float = 0.0,
    cooldown: float = 0.0,
    *,
    warmup_steps: int | None = None,
    cooldown_steps: int | None = None,
    cooldown_shape: CooldownShape = "linear",
    power_decay: float = 0.0,
    power_decay_from: int | None = None,
) -> Callable[[int], float]:
    """The multiplier ``f(step)`` of the base learning rate (see the module docstring).

    Args:
        name: ``constant``, ``linear``, ``cosine`` or ``wsd``.
        total_steps: the number of optimizer steps T (> 0).
        warmup: fraction of T spent in a linear warmup, in [0, 1).
        cooldown: fraction of T spent in the final decay, in [0, 1]; only for ``wsd``.
        warmup_steps: the warmup in steps (replaces ``warmup``), in [0, T).
        cooldown_steps: the cooldown in steps (replaces ``cooldown``), in [0, T]; ``wsd`` only.
        cooldown_shape: ``linear`` or ``sqrt`` (``1 - sqrt``); ``wsd`` only.
        power_decay: the exponent b >= 0 of the stable phase's decay ``(s / S0)^-b``;
            ``constant`` and ``wsd`` only (0: no decay).
        power_decay_from: S0 >= 1, the step where that decay starts (needed when b > 0).

    Raises:
        ValueError: unknown name or shape, non-positive ``total_steps``, fractions or step
            counts out of range, a cooldown on a schedule other than ``wsd``, warmup and
            cooldown longer than the run.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if cooldown_shape not in COOLDOWN_SHAPES:
        raise ValueError(
            f"unknown cooldown_shape {cooldown_shape!r}: choose one of {', '.join(COOLDOWN_SHAPES)}"
        )
    warm = _steps_of("warmup", warmup, warmup_steps, total_steps)
    cool = _steps_of("cooldown", cooldown, cooldown_steps, total_steps)
    if cool and name != "wsd":
        raise ValueError(
            f"a cooldown ({cool} steps) applies to the wsd schedule only; use --schedule wsd or "
            "drop the cooldown"
        )
    if warmup_steps is None and warmup >= 1.0:
        raise ValueError(f"warmup ({warmup}) is the whole run: make warmup < 1")
    if warm + cool > total_steps:
        raise ValueError(
            f"warmup ({warm} steps) + cooldown ({cool} steps) exceed the run of {total_steps} "
            "steps: make their sum <= 1 (as fractions) or <= --steps (as step counts)"
        )
    stable = _stable_phase(name, power_decay, power_decay_from)
    return _schedule_function(name, total_steps, warm, cool, cooldown_shape, stable)


def _stable_phase(name: str, exponent: float, start: int | None) -> Callable[[int], float] | None:
    """The stable phase's multiplier ``(s / S0)^-b`` after ``S0`` (None: 1 throughout)."""
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)):
        raise ValueError(f"power_decay must be a number >= 0, got {exponent!r}")
    if not (math.isfinite(exponent) and exponent >= 0):
        raise ValueError(f"power_decay must be a finite number >= 0, got {exponent!r}")
    if exponent == 0:
        return None
    if name not in ("constant", "wsd"):
        raise ValueError(
            f"power_decay applies to the constant and wsd schedules (their stable phase), not "
            f"{name!r}; use --schedule wsd or drop --power-decay"
        )
    if isinstance(start, bool) or not isinstance(start, int) or start < 1:
        raise ValueError(
            f"power_decay_from: the step where the power decay starts, an integer >= 1, "
            f"got {start!r}"
        )
    return lambda step: 1.0 if step <= start else (step / start) ** -exponent


def _steps_of(label: str, fraction: float, steps: int | None, total_steps: int) -> int:
    """A warmup or cooldown in whole steps, from its fraction or its absolute count."""
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= total_steps:
            raise ValueError(
                f"{label}_steps must be an integer in [0, {total_steps}] (the run's steps), "
                f"got {steps!r}"
            )
        return steps
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValueError(f"{label} is a fraction of the steps in [0, 1], got {fraction!r}")
    if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"{label} is a fraction of the steps in [0, 1], got {fraction!r}")
    return round(fraction * total_steps)


def _schedule_function(
    name: str,
    total_steps: int,
    warm: int,
    cool: int,
    shape: CooldownShape,
    stable: Callable[[int], float] | None = None,
) -> Callable[[int], float]:
    decay_steps = total_steps - warm  # where linear / cosine decay runs
    level = stable or (lambda step: 1.0)  # the stable phase's multiplier

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if name == "constant":
            return level(step)
        if name == "wsd":
            remaining = total_steps - step
            if cool == 0 or remaining >= cool:
                return level(step)
            left = max(0.0, remaining / cool)  # 1 - p
            top = level(total_steps - cool)  # where the stable phase ended
            return top * (left if shape == "linear" else 1.0 - math.sqrt(1.0 - left))
        # A warmup that fills the whole run leaves no decay phase: the end (step T) is 0.
        progress = min(1.0, (step - warm) / decay_steps) if decay_steps else 1.0
        if name == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine

    return schedule


def batch_size_rule(optimizer: str) -> str:
    """How the best learning rate grows with the batch size B for an optimizer preset.

    ``"linear"`` (lr proportional to B) for plain SGD; ``"sqrt"`` (lr proportional to sqrt(B))
    for adaptive and sign-based methods (Adam, signSGD, Lion, Scion, Muon): Granziol et al.
    2022, *Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach*
    Valid up to the critical batch size, beyond which the learning rate saturates.
    The rule follows the preset's update family in the preset registry.
    """
    from everyscale.optim.registry import get_preset  # optim sits below train

    return "linear" if get_preset(optimizer).family == "linear" else "sqrt"


def scale_lr_for_batch_size(
    lr: float, batch_size: int, base_batch_size: int, rule: str = "sqrt"
) -> float:
    """Transfer ``lr`` tuned at ``base_batch_size`` to ``batch_size``.

    ``rule="sqrt"``: ``lr (B / B0)^(1/2)``; ``rule="linear"``: ``lr B / B0``
    (see :func:`batch_size_rule` for which rule an optimizer follows).
    """
    if rule not in ("sqrt", "linear"):
        raise ValueError(f"rule must be 'sqrt' or 'linear', got {rule!r}")
    if batch_size < 1 or base_batch_size < 1:
        raise ValueError(
            f"batch sizes must be positive, got batch_size={batch_size}, "
            f"base_batch_size={base_batch_size}"
        )
    ratio = batch_size / base_batch_size
    return lr * (math.sqrt(ratio) if rule == "sqrt" else ratio)
