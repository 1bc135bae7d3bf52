"""WSD branches: one long run's stable phase, a cooldown branched at each shorter budget.

With a warmup-stable-decay schedule, runs of one model that differ only in length share every
update up to the shorter one's cooldown. So one *trunk*, the longest run, can keep a copy of
its checkpoint at the start of each shorter run's cooldown (a *snapshot*), and each shorter
run is then that snapshot continued with its own cooldown: a *branch* (Hägele et al. 2024,
*Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations*, Section 3).
A branch equals the same run trained alone (on the CPU, bit for bit: the data order, the
initialization and every update are the same), at the cost of its cooldown only.

    trunk = train_trunk(longest, snapshot_steps=[cooldown_start(c) for c in shorter])
    for c in shorter:
        branch(snapshot_path(longest.out, cooldown_start(c)), c)

Both reuse finished runs by :func:`everyscale.train.run_or_reuse`'s rule and continue
interrupted ones. A branch asked of a snapshot past its stable phase is refused before
anything is written (:mod:`everyscale.train.extend` says when a checkpoint may continue).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from everyscale.train.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from everyscale.train.config import TrainConfig
from everyscale.train.extend import (
    SCHEDULE_FIELDS,
    cooldown_start,
    first_disagreement,
    run_fingerprint,
)
from everyscale.train.loop import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    SUMMARY_NAME,
    NonFiniteLossError,
    run,
)
from everyscale.train.reuse import reusable_summary, run_or_reuse

__all__ = ["branch", "cooldown_start", "snapshot_path", "train_trunk"]

SNAPSHOTS = "snapshots"

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


def snapshot_path(trunk_out: str | os.PathLike, step: int) -> Path:
    """Where :func:`train_trunk` keeps the copy of its checkpoint at ``step``."""
    return Path(trunk_out) / SNAPSHOTS / f"step-{step:08d}.pt"


def train_trunk(
    config: TrainConfig,
    snapshot_steps: Iterable[int],
    *,
    optimizer_factory: OptimizerFactory | None = None,
    fingerprint: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or reuse) ``config``'s run, keeping a snapshot of its checkpoint at each step of
    ``snapshot_steps`` (``0 < step < config.steps``), and return its summary.

    The run pauses at each snapshot step (``run``'s ``should_stop``), its checkpoint is copied
    to :func:`snapshot_path`, and it resumes: the updates are those of an unpaused run. A
    finished trunk is reused (``"reused": True``) only when all its snapshots exist.
    """
    out = Path(config.out)
    steps = sorted(set(int(s) for s in snapshot_steps))
    bad = [s for s in steps if not 0 < s < config.steps]
    if bad:
        raise ValueError(
            f"snapshot_steps: {bad} are not inside the trunk's run (1 .. {config.steps - 1}); "
            "a branch of the trunk must be shorter than it"
        )
    if not config.resume and (out / SNAPSHOTS).exists():
        raise ValueError(
            f"out: {out} holds snapshots of an earlier trunk; pass resume=True (--resume) to "
            "continue it, or use a new --out"
        )
    previous = reusable_summary(config, fingerprint)
    _keep_pending_snapshot(out, steps)
    missing = [s for s in steps if not snapshot_path(out, s).exists()]
    if previous is not None:
        if missing:
            raise ValueError(
                f"out: the finished trunk {out} has no snapshot at steps {missing}, and its "
                "checkpoint is gone; move that run folder away to train the trunk again"
            )
        return {**previous, "reused": True}
    summary: dict[str, Any] = {}
    for step in [*missing, None]:  # None: on to the end
        stop = None if step is None else _stop_at(step)
        resume = config.resume or summary != {}
        try:
            summary = run(
                dataclasses.replace(config, resume=resume),
                optimizer_factory=optimizer_factory,
                optimizer_fingerprint=fingerprint,
                should_stop=stop,
            )
        except NonFiniteLossError as err:
            return {**err.summary, "reused": False}
        if step is not None:
            _keep_pending_snapshot(out, [step])
    lost = [s for s in steps if not snapshot_path(out, s).exists()]
    if lost:
        raise ValueError(
            f"out: the trunk {out} was resumed from a checkpoint past steps {lost}, so it has no "
            "snapshot there; train the trunk again in a new --out (or move this one away)"
        )
    return {**summary, "reused": False}


def _stop_at(step: int) -> Callable[[dict[str, Any]], bool]:
    return lambda row: row["step"] == step


def _keep_pending_snapshot(out: Path, steps: list[int]) -> None:
    """Copy the checkpoint of a trunk stopped at one of ``steps`` to its snapshot (atomically:
    a half-copied snapshot never passes for a whole one)."""
    summary_path = out / SUMMARY_NAME
    if not summary_path.exists():
        return
    summary = json.loads(summary_path.read_text())
    step = summary.get("stopped_step")
    if summary.get("status") != "stopped" or step not in steps:
        return
    target = snapshot_path(out, step)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copyfile(out / CHECKPOINT_NAME, partial)
    os.replace(partial, target)


def branch(
    snapshot: str | os.PathLike,
    config: TrainConfig,
    *,
    optimizer_factory: OptimizerFactory | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    trunk_metrics: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """``config``'s run, continued from a trunk's ``snapshot`` with ``config``'s own cooldown.

    ``config`` is the branch as it would be trained alone (its own ``steps`` and cooldown);
    everything but the schedule must equal the trunk's, and the two schedules must agree up
    to the snapshot's step. ``trunk_metrics``: the trunk's ``metrics.jsonl``, whose lines up
    to the snapshot become the start of the branch's (for its loss curve). A finished branch
    is reused, an interrupted one continued, as :func:`everyscale.train.run_or_reuse` does.

    Raises:
        ValueError: the snapshot is past the branch's stable phase, or was trained under other
            settings; nothing is written and the snapshot is left as it was.
    """
    out = Path(config.out)
    if reusable_summary(config, fingerprint) is not None or (
        config.resume and (out / CHECKPOINT_NAME).exists()
    ):
        return run_or_reuse(config, optimizer_factory=optimizer_factory, fingerprint=fingerprint)
    if not config.resume and ((out / CHECKPOINT_NAME).exists() or (out / SUMMARY_NAME).exists()):
        raise ValueError(
            f"out: {out} holds a run; pass resume=True (--resume) to continue it, or use a "
            "new --out"
        )
    saved = _checked_snapshot(Path(snapshot), config, fingerprint)
    out.mkdir(parents=True, exist_ok=True)
    saved["config"] = run_fingerprint(config, fingerprint)
    saved.pop("format", None)
    saved["elapsed"] = 0.0  # a branch's wall_seconds count its own steps (the trunk paid the rest)
    save_checkpoint(out / CHECKPOINT_NAME, saved)
    lines = _metrics_up_to(trunk_metrics, int(saved["step"]))
    atomic_write_bytes(out / METRICS_NAME, "".join(line + "\n" for line in lines).encode())
    return run_or_reuse(
        dataclasses.replace(config, resume=True),
        optimizer_factory=optimizer_factory,
        fingerprint=fingerprint,
    )


def _checked_snapshot(
    snapshot: Path, config: TrainConfig, fingerprint: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The snapshot's contents, if ``config`` may continue them; else a ValueError."""
    if not snapshot.is_file():
        raise FileNotFoundError(
            f"snapshot: {snapshot} does not exist; train the trunk with train_trunk(..., "
            "snapshot_steps=[...]) that include this branch's cooldown start"
        )
    saved = load_checkpoint(snapshot, run_fingerprint(config, fingerprint), ignore=SCHEDULE_FIELDS)
    step = int(saved["step"])
    trunk_values = {**config.to_dict()}
    for name in SCHEDULE_FIELDS:
        trunk_values[name] = saved["config"].get(name, getattr(TrainConfig(), name))
    trunk = TrainConfig.from_dict(trunk_values)
    start = cooldown_start(config) if config.schedule == "wsd" else config.steps
    if step > start or first_disagreement(trunk, config, step) is not None:
        raise ValueError(
            f"snapshot: {snapshot} is at step {step}, past the stable phase this branch shares "
            f"with its trunk (the branch's cooldown starts at step {start}, and the learning "
            f"rates must agree up to the snapshot); branch from a snapshot at step <= {start} "
            "of a trunk whose stable phase reaches it, or train the run alone"
        )
    return saved


def _metrics_up_to(path: str | os.PathLike | None, step: int) -> list[str]:
    if path is None or not Path(path).exists():
        return []
    kept = []
    for line in Path(path).read_text().splitlines():
        try:
            if json.loads(line).get("step", step + 1) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return kept
