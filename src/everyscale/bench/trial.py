"""One trial: train a workload with one contender and one set of hyperparameters until the
validation target is reached (a hit, with its time and steps) or the step budget ends (a miss).

Timing follows AlgoPerf (Dahl et al. 2023, Section 4.1): the clock runs over training steps
only. Each step is timed whole, as the harness runs it: drawing the batch, setting the
scheduled learning rate, ``zero_grad``, forward, backward and ``optimizer.step()`` (some peers
clear or consume ``p.grad`` in their step; whatever they do is inside the clock). Evaluation is
timed apart and excluded. So is one-off compilation and warm-up: the excess of each of the
first ``WARMUP_STEPS`` steps over the trial's median step time is reported as
``compile_seconds`` and left out of the training time.

The model is evaluated every ``workload.eval_every`` steps and at the step budget; the time to
target is the training time at the first evaluation whose metric is at most the target. A
non-finite loss, gradient, weight or validation value, or a failed factorization inside an
optimizer, is a divergence: the trial is a miss and the study goes on.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from everyscale.bench.optimizers import Contender
from everyscale.bench.workloads import Workload

__all__ = ["WARMUP_STEPS", "TrialResult", "run_trial", "schedule_multiplier"]

#: steps whose excess over the median step time counts as one-off compile/warm-up time
WARMUP_STEPS = 3


@dataclass
class TrialResult:
    """What one trial measured (seconds are wall-clock on this machine)."""

    reached: bool
    diverged: bool
    steps: int  # optimizer steps trained
    steps_to_target: int | None
    train_seconds: float  # up to the target, or to the end of a miss; compile excluded
    compile_seconds: float
    eval_seconds: float
    setup_seconds: float  # building the model and the optimizer
    best_metric: float | None
    last_metric: float | None
    message: str = ""

    @property
    def time_to_target(self) -> float:
        """The score of the trial: training seconds to the target, ``inf`` for a miss."""
        return self.train_seconds if self.reached else math.inf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def schedule_multiplier(step: int, steps: int, warmup: float) -> float:
    """Linear warmup over ``warmup * steps`` steps, then cosine decay to 0 at ``steps``."""
    warm = round(warmup * steps)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class _Diverged(Exception):
    pass


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _set_mode(optimizer: Any, contender: Contender, training: bool) -> None:
    """Schedule-Free keeps two sequences: train() / eval() switch the weights between them."""
    if contender.schedule_free:
        (optimizer.train if training else optimizer.eval)()


def _split_compile_time(step_seconds: list[float]) -> tuple[float, float]:
    """``(training seconds, compile seconds)`` from the per-step times (module docstring)."""
    if not step_seconds:
        return 0.0, 0.0
    median = statistics.median(step_seconds)
    compile_seconds = sum(max(0.0, t - median) for t in step_seconds[:WARMUP_STEPS])
    return sum(step_seconds) - compile_seconds, compile_seconds


def _step(model, optimizer, dataset, workload, generator, lrs, multiplier) -> float:
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr * multiplier
    x, y = dataset.sample_batch(workload.config.batch_size, generator)
    optimizer.zero_grad(set_to_none=True)
    loss = _loss(model, x, y)
    loss.backward()
    value = loss.item()
    if not math.isfinite(value):
        raise _Diverged(f"non-finite training loss {value}")
    try:
        optimizer.step()
    except (FloatingPointError, torch.linalg.LinAlgError) as err:
        raise _Diverged(f"optimizer step failed: {err}") from err
    return value


def _evaluate(workload, model, dataset, optimizer, contender) -> tuple[float, float]:
    """``(metric, seconds)``, in the optimizer's evaluation mode (Schedule-Free)."""
    tick = time.perf_counter()
    _set_mode(optimizer, contender, training=False)
    value = workload.evaluate(model, dataset)
    _set_mode(optimizer, contender, training=True)
    if not math.isfinite(value):
        raise _Diverged(f"non-finite validation {workload.metric} {value}")
    return value, time.perf_counter() - tick


def run_trial(
    workload: Workload,
    contender: Contender,
    hparams: dict[str, float],
    options: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    dataset: Any = None,
) -> TrialResult:
    """Train until the target or the step budget; see the module docstring for the clock.

    Args:
        workload: the model, data, step budget, evaluation cadence and target.
        contender: the optimizer (``optimizers.get_contender``).
        hparams: the trial's hyperparameters (``lr`` and, as its space says, ``warmup``,
            ``weight_decay``, ``beta1``/``momentum``, ``adam_lr``).
        options: fixed optimizer options passed through to the contender.
        seed: seeds the model's initialization and the training batches.
        dataset: the workload's data, when the caller already loaded it.
    """
    start = time.perf_counter()
    dataset = dataset if dataset is not None else workload.load()
    steps = workload.config.steps
    torch.manual_seed(seed)
    model = workload.build_model(dataset)
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a peer's notes on changed learning rates, etc.
        optimizer = contender.build(model, hparams, dict(options or {}), steps)
    lrs = [group["lr"] for group in optimizer.param_groups]
    warmup = 0.0 if contender.schedule_free else hparams.get("warmup", 0.0)
    generator = torch.Generator().manual_seed(seed)
    setup_seconds = time.perf_counter() - start

    step_seconds: list[float] = []
    eval_seconds, best, last = 0.0, math.inf, None
    reached, diverged, message = False, False, ""
    _set_mode(optimizer, contender, training=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for step in range(steps):
                tick = time.perf_counter()
                multiplier = (
                    1.0 if contender.schedule_free else schedule_multiplier(step, steps, warmup)
                )
                _step(model, optimizer, dataset, workload, generator, lrs, multiplier)
                step_seconds.append(time.perf_counter() - tick)
                if (step + 1) % workload.eval_every and step + 1 < steps:
                    continue
                last, seconds = _evaluate(workload, model, dataset, optimizer, contender)
                eval_seconds += seconds
                best = min(best, last)
                if last <= workload.target:
                    reached = True
                    break
        except _Diverged as err:
            diverged, message = True, f"diverged at step {len(step_seconds)}: {err}"
    train_seconds, compile_seconds = _split_compile_time(step_seconds)
    return TrialResult(
        reached=reached,
        diverged=diverged,
        steps=len(step_seconds),
        steps_to_target=len(step_seconds) if reached else None,
        train_seconds=train_seconds,
        compile_seconds=compile_seconds,
        eval_seconds=eval_seconds,
        setup_seconds=setup_seconds,
        best_metric=best if math.isfinite(best) else None,
        last_metric=last if last is not None and math.isfinite(last) else None,
        message=message,
    )
