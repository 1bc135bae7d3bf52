"""Run a config, or reuse the finished run in its folder: the one rule for sweeps and ladders.

A run in ``config.out`` may stand for ``config`` when

1. ``config.resume`` is True (``resume=False`` asks for a fresh run);
2. its ``summary.json`` says ``completed`` or ``diverged`` (training is deterministic: a run
   that diverged would diverge again); ``stopped``, ``interrupted`` or ``failed`` runs are
   trained on, resuming their checkpoint when it fits;
3. its ``config.json`` has the same :meth:`TrainConfig.fingerprint` (the fields that change
   the sequence of updates), and the optimizer fingerprint recorded in its summary equals the
   caller's (``None`` for the preset lookup).

A finished run that fails 3 is refused with a ``ValueError`` rather than trained over: its
files are the user's, and a finished run's checkpoint may be gone (``keep_checkpoint=False``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from everyscale.train.config import TrainConfig
from everyscale.train.loop import CONFIG_NAME, SUMMARY_NAME, NonFiniteLossError, run

__all__ = ["FINISHED", "reusable_summary", "run_or_reuse"]

FINISHED = ("completed", "diverged")


def reusable_summary(
    config: TrainConfig, fingerprint: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The summary of the finished run in ``config.out`` that stands for ``config``, or None.

    ``fingerprint``: the JSON-able settings of the caller's optimizer factory (``None`` for
    the preset lookup). ``None`` is returned when there is nothing to reuse (see the module's
    rule); a finished run with other settings is a ``ValueError`` naming what differs.
    """
    out = Path(config.out)
    summary_path, config_path = out / SUMMARY_NAME, out / CONFIG_NAME
    if not config.resume or not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("status") not in FINISHED:
        return None
    if not config_path.exists():
        raise ValueError(
            f"out: {out} holds a finished run without its {CONFIG_NAME}, so it cannot be "
            "checked against these settings; use a new --out or move that run away"
        )
    differing = _differences(TrainConfig.from_json(config_path).fingerprint(), config.fingerprint())
    wanted = None if fingerprint is None else json.loads(json.dumps(dict(fingerprint)))
    if summary.get("optimizer_fingerprint") != wanted:
        differing.append(f"optimizer: {summary.get('optimizer_fingerprint')!r} vs now {wanted!r}")
    if differing:
        raise ValueError(
            f"out: {out} holds a finished run with other settings ({'; '.join(differing)}); "
            "use a new --out or the settings it was trained with"
        )
    return summary


def run_or_reuse(
    config: TrainConfig,
    *,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary of ``config``'s run: the finished one in ``config.out`` when it may be
    reused (:func:`reusable_summary`), else a new or resumed :func:`everyscale.train.run`.

    ``fingerprint`` describes ``optimizer_factory``'s settings (JSON-able); it is required
    with a factory, since nothing else records them. A divergence, now or recorded, is
    returned as its summary (status ``"diverged"``), not raised. The summary carries
    ``"reused": True`` when nothing was trained (not written to ``summary.json``).
    """
    if optimizer_factory is not None and fingerprint is None:
        raise ValueError(
            "fingerprint: give the settings of optimizer_factory as a JSON-able dict, so that "
            "a run trained under other settings is not reused"
        )
    previous = reusable_summary(config, fingerprint)
    if previous is not None:
        return {**previous, "reused": True}
    try:
        summary = run(
            config, optimizer_factory=optimizer_factory, optimizer_fingerprint=fingerprint
        )
    except NonFiniteLossError as err:
        summary = err.summary
    return {**summary, "reused": False}


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [
        f"{k}: {stored.get(k)!r} vs now {wanted.get(k)!r}"
        for k in sorted(set(stored) | set(wanted))
        if stored.get(k) != wanted.get(k)
    ]
