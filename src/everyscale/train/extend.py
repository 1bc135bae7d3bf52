"""When a checkpoint may continue under a longer (or otherwise changed) schedule.

A checkpoint written at step ``S`` holds everything a run needs except the schedule's future.
It may therefore continue under a new config that differs only in the schedule's fields
(:data:`SCHEDULE_FIELDS`: the length ``steps``, the schedule's name, warmup, cooldown) when
the two learning-rate multipliers agree at every step ``0 .. S``: the new run then has taken
exactly the updates the old one took. That covers

- a ``constant`` run given more steps;
- a ``wsd`` run before its cooldown, given more steps (with the warmup in absolute
  ``warmup_steps``, since a warmup fraction grows with the run);
- a cooldown branched from a stable-phase checkpoint (Hägele et al. 2024,
  :mod:`everyscale.train.branch`),

and refuses a run already in its decay (``linear``, ``cosine``, ``wsd`` past its stable
phase), whose learning rates would jump.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from everyscale.train.checkpoint import CheckpointError, load_checkpoint
from everyscale.train.config import TrainConfig

__all__ = [
    "SCHEDULE_FIELDS",
    "cooldown_start",
    "first_disagreement",
    "load_resumable_checkpoint",
    "run_fingerprint",
]

SCHEDULE_FIELDS = frozenset(
    {
        "schedule",
        "steps",
        "warmup",
        "cooldown",
        "warmup_steps",
        "cooldown_steps",
        "cooldown_shape",
        "power_decay",
        "power_decay_from",
    }
)


def run_fingerprint(
    config: TrainConfig, optimizer_fingerprint: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What a checkpoint of ``config`` records to be resumed: the config's fingerprint and,
    for a custom optimizer factory, its settings (in JSON form, as they read back)."""
    fingerprint = config.fingerprint()
    if optimizer_fingerprint is not None:
        fingerprint["optimizer_factory"] = json.loads(json.dumps(dict(optimizer_fingerprint)))
    return fingerprint


def cooldown_start(config: TrainConfig) -> int:
    """The last step of a ``wsd`` run's stable phase: where a cooldown branch starts."""
    if config.schedule != "wsd":
        raise ValueError(f"schedule: only a wsd run has a cooldown, got {config.schedule!r}")
    if config.cooldown_steps is not None:
        return config.steps - config.cooldown_steps
    return config.steps - round(config.effective_cooldown * config.steps)


def first_disagreement(old: TrainConfig, new: TrainConfig, up_to_step: int) -> int | None:
    """The first step in ``0 .. up_to_step`` where the two schedules' multipliers differ."""
    f_old, f_new = old.schedule_function(), new.schedule_function()
    return next((k for k in range(up_to_step + 1) if f_old(k) != f_new(k)), None)


def _config_of(saved: Mapping[str, Any], like: TrainConfig) -> TrainConfig:
    """``like`` with the schedule fields a checkpoint recorded (absent ones: the defaults)."""
    defaults = TrainConfig()
    values = like.to_dict()
    for name in SCHEDULE_FIELDS:
        values[name] = saved.get(name, getattr(defaults, name))
    return TrainConfig.from_dict(values)


def load_resumable_checkpoint(
    path: str | Path, fingerprint: dict[str, Any], config: TrainConfig
) -> dict[str, Any]:
    """The checkpoint at ``path`` if ``config`` may continue it (see the module docstring).

    ``fingerprint`` is :func:`run_fingerprint` of ``config``; every field outside
    :data:`SCHEDULE_FIELDS` must match exactly. The file is never modified. Raises
    ``CheckpointError`` (a ``ValueError``) saying what differs and what to do instead.
    """
    saved = load_checkpoint(path, fingerprint, ignore=SCHEDULE_FIELDS)
    step = int(saved["step"])
    old = _config_of(saved.get("config", {}), config)
    if old.fingerprint() == config.fingerprint():
        return saved
    if step > config.steps:
        raise CheckpointError(
            f"checkpoint {path} is at step {step}, beyond --steps {config.steps}; it was left in "
            f"place. Resume with --steps >= {step}, or start a new run in another --out"
        )
    k = first_disagreement(old, config, step)
    if k is not None:
        was, now = old.schedule_function()(k), config.schedule_function()(k)
        raise CheckpointError(
            f"checkpoint {path} (step {step}) cannot continue under the new schedule: its "
            f"learning-rate multiplier at step {k} was {was:.6g} and would be {now:.6g}. A run "
            "can be lengthened only while its schedule so far stays the same (constant, or wsd "
            "before its cooldown, with the warmup in --warmup-steps); it was left in place. To "
            "train longer, start a new run in another --out, or branch a cooldown from a "
            "stable-phase checkpoint (everyscale.train.branch)"
        )
    return saved
