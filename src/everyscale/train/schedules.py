"""Learning-rate schedules and the batch-size rules of BRIEF §2.

A schedule is a function ``step -> multiplier`` of the base learning rate, for steps
``0 .. total_steps`` (step ``s`` is the ``s``-th optimizer update; ``total_steps`` is the end,
where decaying schedules reach 0). It works with any optimizer, e.g. through
``torch.optim.lr_scheduler.LambdaLR``.

- ``constant``: 1.
- ``linear``: ``1 - s/T`` (linear decay to zero).
- ``cosine``: ``(1 + cos(pi s/T)) / 2`` (Loshchilov & Hutter 2017, without restarts).
- ``wsd``: warmup-stable-decay: 1 after the warmup, then a linear cooldown to zero over the last
  ``cooldown`` fraction of the steps (Hu et al. 2024, MiniCPM; Scion's runs use no warmup and
  a cooldown over the last ~30% [S]).

Any schedule can start with a linear warmup over the first ``warmup`` fraction of the steps:
``(s + 1) / W`` for ``s < W``, so the first update already moves; the decay then runs over the
remaining steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = [
    "SCHEDULES",
    "batch_size_rule",
    "get_schedule",
    "scale_lr_for_batch_size",
]

SCHEDULES = ("constant", "linear", "cosine", "wsd")


def get_schedule(
    name: str, total_steps: int, warmup: float = 0.0, cooldown: float = 0.0
) -> Callable[[int], float]:
    """The multiplier ``f(step)`` of the base learning rate (see the module docstring).

    Args:
        name: ``constant``, ``linear``, ``cosine`` or ``wsd``.
        total_steps: the number of optimizer steps T (> 0).
        warmup: fraction of T spent in a linear warmup, in [0, 1).
        cooldown: fraction of T spent in the final linear decay, in [0, 1]; only for ``wsd``
            (``warmup + cooldown <= 1``).

    Raises:
        ValueError: unknown name, non-positive ``total_steps``, fractions out of range, a
            cooldown on a schedule other than ``wsd``.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    for label, fraction in (("warmup", warmup), ("cooldown", cooldown)):
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"{label} is a fraction of the steps in [0, 1], got {fraction!r}")
    if cooldown and name != "wsd":
        raise ValueError(
            f"cooldown={cooldown} applies to the wsd schedule only; use --schedule wsd or drop "
            "the cooldown"
        )
    if warmup >= 1.0 or warmup + cooldown > 1.0:
        raise ValueError(
            f"warmup ({warmup}) + cooldown ({cooldown}) exceed the run: make warmup < 1 and "
            "their sum <= 1"
        )
    warmup_steps = round(warmup * total_steps)
    cooldown_steps = round(cooldown * total_steps)
    decay_steps = total_steps - warmup_steps  # where linear / cosine decay runs

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        if name == "wsd":
            remaining = total_steps - step
            if cooldown_steps == 0 or remaining >= cooldown_steps:
                return 1.0
            return max(0.0, remaining / cooldown_steps)
        # A warmup that rounds to the whole run leaves no decay phase: the end (step T) is 0.
        progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps else 1.0
        if name == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine

    return schedule


def batch_size_rule(optimizer: str) -> str:
    """How the best learning rate grows with the batch size B for an optimizer preset.

    ``"linear"`` (lr proportional to B) for plain SGD; ``"sqrt"`` (lr proportional to sqrt(B))
    for adaptive and sign-based methods (Adam, signSGD, Lion, Scion, Muon): Granziol et al.
    2022, *Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach*
    (BRIEF §2). Valid up to the critical batch size, beyond which the learning rate saturates.
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
