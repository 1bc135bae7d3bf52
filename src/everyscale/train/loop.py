"""The training loop: ``run(config) -> summary``, a run that can always be resumed.

Files under ``config.out``:

- ``config.json``: the full config;
- ``metrics.jsonl``: one JSON line per optimizer step ``{"step", "tokens", "train_loss", "lr",
  "seconds"}`` (``lr``: the first param group's, as used by that step; plus ``"val_loss"``
  and ``"val_accuracy"`` when evaluated, ``"grad_norm"`` when clipping; a line ``step 0``
  holds the initial validation loss when ``eval_every > 0``). Buffered: flushed at every
  checkpoint and at the end;
- ``summary.json``: the result (see :func:`run`), with ``status`` one of ``completed``,
  ``diverged``, ``interrupted``, ``stopped`` (ended early by the caller's ``should_stop``),
  ``failed`` (an unexpected exception, re-raised);
- ``checkpoint.pt``: model, optimizer, schedule, step, the data generator's and torch's RNG
  states, written atomically every ``checkpoint_every`` steps, at the end, and on
  SIGINT/SIGTERM. A fresh (not resumed) run in a directory that holds an earlier run moves
  that run's checkpoint, metrics, summary and config to the next numbered generation
  (``checkpoint.previous-1.pt``, ``metrics.previous-1.jsonl``, then ``previous-2``, ...)
  rather than overwrite them; ``resume=True`` on a completed run whose checkpoint was not kept
  returns its summary under the same settings and is refused under others;
- ``.lock``: held by the running process for the run's life
  (:class:`everyscale.train.rundir.RunLock`); a second writer is refused.

Exact resume: training batches come only from a ``torch.Generator`` owned by the loop, and the
checkpoint holds its state, so a resumed run draws the same batches and, on the CPU, reproduces
the uninterrupted run's losses bit for bit. ``metrics.jsonl`` is cut back to the checkpoint's
step on resume, so no step appears twice.

A "token" is one byte of text, or one image for the image models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from everyscale.train.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
)
from everyscale.train.config import TrainConfig
from everyscale.train.data import load_dataset
from everyscale.train.models import build_model
from everyscale.train.rundir import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    RUN_FILES,
    SUMMARY_NAME,
    RunLock,
    keep_earlier_run,
    refuse_inputs_in_outputs,
)
from everyscale.train.schedules import get_schedule

__all__ = [
    "NonFiniteLossError",
    "RunState",
    "TrainingInterrupted",
    "build_model_for",
    "evaluate",
    "run",
]


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm, or a weight) became NaN or infinite at ``step``.

    The run's last good checkpoint is left in place and ``summary.json`` says ``"diverged"``;
    ``summary`` holds that summary for callers that catch this (e.g. learning-rate sweeps).
    """

    def __init__(self, message: str, step: int, summary: dict[str, Any]):
        super().__init__(message)
        self.step = step
        self.summary = summary


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; a checkpoint was saved at ``step`` (resume with it)."""

    def __init__(self, message: str, step: int, summary: dict[str, Any]):
        super().__init__(message)
        self.step = step
        self.summary = summary


def build_model_for(config: TrainConfig, dataset) -> nn.Module:
    """The model ``config`` asks for, shaped to ``dataset`` (vocabulary, image size, classes)."""
    if config.model == "gpt":
        if dataset.kind != "text":
            raise ValueError(
                f"model 'gpt' needs text data but {config.data!r} is images: use --data "
                "stdlib, shakespeare or a text file, or --model mlp/cnn"
            )
        return build_model(
            "gpt",
            width=config.width,
            depth=config.depth,
            heads=config.heads,
            context=config.context,
            vocab=dataset.vocab_size,
            tied=config.tied,
            residual_multiplier=config.residual_multiplier,
        )
    if dataset.kind != "image":
        raise ValueError(
            f"model {config.model!r} needs image data but {config.data!r} is text: use --data "
            "digits or fashion-mnist, or --model gpt"
        )
    return build_model(
        config.model,
        width=config.width,
        depth=config.depth,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
    )


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int = 64) -> tuple[float, float]:
    """``(loss, accuracy)`` on the dataset's fixed validation set.

    ``loss``: mean cross-entropy in nats per token (text) or per image; ``accuracy``: the share
    of next bytes (text) or labels (images) that the largest logit predicts.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, correct, count = 0.0, 0, 0
    for x, y in dataset.val_batches(batch_size):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        total += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(dim=-1) == y).sum())
        count += y.numel()
    model.train(was_training)
    return total / count, correct / count


class _SignalCatcher:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks between steps.

    A second signal interrupts at once (default behaviour). Only installable from the main
    thread; elsewhere (e.g. a sweep's worker thread) signals keep their usual handlers.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalCatcher:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _make_optimizer(config: TrainConfig, model: nn.Module, optimizer_factory):
    if optimizer_factory is not None:
        return optimizer_factory(model)
    from everyscale.optim import optimizer as make_optimizer  # lazy: optim may import train

    return make_optimizer(model, config.optimizer, lr=config.lr, **config.optimizer_options)


def _read_metrics(path: Path, up_to_step: int) -> list[str]:
    """Lines of ``metrics.jsonl`` with ``step <= up_to_step`` (a torn last line is dropped)."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if row.get("step", math.inf) <= up_to_step:
            kept.append(line)
    return kept


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ----------------------------------------------------------------------------- the run's state


@dataclass
class RunState:
    """What a run carries from step to step: built once by :func:`_setup`, then updated."""

    config: TrainConfig
    dataset: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator  # the only source of training batches (exact resume)
    device: torch.device
    out: Path
    fingerprint: dict[str, Any]  # what a checkpoint must match to be resumed
    optimizer_fingerprint: dict[str, Any] | None
    custom_optimizer: bool
    tokens_per_step: int
    params: int
    non_embedding_params: int
    flops_per_token: float
    step: int = 0
    elapsed_before: float = 0.0  # training seconds before this session (resumed runs)
    best_val: float = math.inf
    initial_val: float | None = None
    last_val: float | None = None
    last_accuracy: float | None = None
    last_train: float | None = None
    start: float = 0.0  # time.perf_counter() when this session's steps began
    tokens_at_start: int = 0
    metrics_file: TextIO | None = None  # open while steps run
    #: the process's place in a distributed run (``everyscale.dist.engine.DistRun``), or None
    dist: Any = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0, or the only process)."""
        return self.dist is None or self.dist.is_main

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    @property
    def metrics_path(self) -> Path:
        return self.out / METRICS_NAME

    @property
    def summary_path(self) -> Path:
        return self.out / SUMMARY_NAME

    def seconds(self) -> float:
        """Training seconds so far, earlier sessions included."""
        return self.elapsed_before + (time.perf_counter() - self.start)


# ----------------------------------------------------------------------------- the entry point


def run(
    config: TrainConfig,
    *,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    optimizer_fingerprint: Mapping[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[dict[str, Any]], bool] | None = None,
    rank: int | None = None,
    distributed: Any = None,
) -> dict[str, Any]:
    """Train ``config``'s model on its data and return the summary (also in ``summary.json``).

    Args:
        config: the run; validated (and its data loaded and checked) before any step.
        optimizer_factory: ``model -> optimizer``; replaces the preset lookup
            ``everyscale.optimizer(model, config.optimizer, lr=config.lr,
            **config.optimizer_options)``.
            The schedule multiplies each param group's learning rate.
        optimizer_fingerprint: a JSON-able description of ``optimizer_factory``'s settings;
            recorded in ``summary.json`` and the checkpoint, so that a resume (or a reuse by
            :func:`everyscale.train.run_or_reuse`) under other settings is refused.
        callback: called with each step's metrics row after it is logged (e.g. for live plots).
        should_stop: called with each step's metrics row after ``callback``; ``True`` ends the
            run early: a checkpoint is saved (kept whatever ``keep_checkpoint`` says) and the
            summary, status ``"stopped"`` with ``stopped_step``, is returned. A later run with
            ``resume=True`` continues it. Not called after the last step.
        rank: this process's rank under several processes: only the launcher or rank 0 locks
            ``config.out`` (default: the ``EVERYSCALE_RANK`` or ``RANK`` environment variable;
            see :mod:`everyscale.train.rundir`).
        distributed: this process's ``everyscale.dist.engine.DistRun`` when several processes
            train together (``everyscale train --nproc N`` or torchrun): the model and
            optimizer are wrapped, each rank takes its share of every batch, the checkpoint is
            a ``torch.distributed.checkpoint`` folder, and only rank 0 writes files.

    Returns:
        The summary: ``status`` ("completed" or "stopped"), ``steps``, ``tokens``,
        ``final_val_loss`` (the last evaluation's), ``best_val_loss``, ``initial_val_loss``
        (or None), ``final_train_loss``, ``final_val_accuracy`` (top-1: next byte or label),
        ``params``, ``non_embedding_params``, ``flops_per_token``, ``total_flops``
        (``flops_per_token * tokens``), ``wall_seconds``, ``tokens_per_second`` and the run's
        names.

    Raises:
        ValueError / FileNotFoundError: bad config or data, before training.
        RunFolderLocked: another live process is writing ``config.out`` (a ValueError).
        CheckpointError: ``resume=True`` with an unreadable or mismatched checkpoint (kept).
        NonFiniteLossError: the loss became NaN/inf; summary status "diverged".
        TrainingInterrupted: SIGINT/SIGTERM; checkpoint saved, summary status "interrupted".
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate(check_optimizer=optimizer_factory is None)
    refuse_inputs_in_outputs({"--data": config.data}, config.out, RUN_FILES)
    if distributed is not None:
        rank = distributed.rank  # only rank 0 locks and writes the run folder
    with RunLock(config.out, flag="--out", rank=rank):  # one writer per run folder
        dataset = load_dataset(
            config.data,
            context=config.context,  # image data ignores it
            seed=config.seed,
            max_val_windows=config.val_windows,
        )
        if distributed is not None and not distributed.is_main:
            config = dataclasses.replace(config, quiet=True)  # one progress bar: rank 0's
        previous_threads = torch.get_num_threads()
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        try:
            state = _setup(config, dataset, optimizer_factory, optimizer_fingerprint, distributed)
            return _train(state, callback, should_stop)
        finally:
            torch.set_num_threads(previous_threads)


def _train(state: RunState, callback, should_stop) -> dict[str, Any]:
    """Resume or start afresh, run the steps, and write the summary."""
    config = state.config
    if config.resume:
        finished = _resume(state)
        if finished is not None:
            return finished  # nothing left to do
    if state.step == 0:
        _start_fresh(state)
    if state.is_main:
        atomic_write_bytes(state.out / CONFIG_NAME, (config.to_json() + "\n").encode())
    if _run_steps(state, callback, should_stop):
        message = (
            f"stopped early at step {state.step} of {config.steps} (should_stop); the "
            f"checkpoint {state.checkpoint_path} was kept: resume=True continues the run"
        )
        return _write_summary(state, "stopped", stopped_step=state.step, message=message)
    result = _write_summary(state, "completed")
    if not config.keep_checkpoint and state.dist is not None:
        state.dist.remove_checkpoint(state.out)
    elif not config.keep_checkpoint:
        state.checkpoint_path.unlink(missing_ok=True)
    return result


# ----------------------------------------------------------------------------- setup and resume


def _setup(
    config: TrainConfig,
    dataset,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer] | None,
    optimizer_fingerprint: Mapping[str, Any] | None,
    distributed: Any = None,
) -> RunState:
    """Seed, build the model, optimizer, schedule and data generator; create ``config.out``."""
    torch.manual_seed(config.seed)
    model = build_model_for(config, dataset)
    device = torch.device(config.device)
    model.to(device).train()
    if distributed is not None:
        distributed.check_batch(config.batch_size, config.grad_accum)
        model = distributed.wrap_model(model)
    optimizer = _make_optimizer(config, model, optimizer_factory)
    if distributed is not None:
        optimizer = distributed.wrap_optimizer(optimizer)
    schedule = get_schedule(config.schedule, config.steps, config.warmup, config.effective_cooldown)
    fingerprint = config.fingerprint()
    if optimizer_fingerprint is not None:
        # In JSON form, as it reads back from summary.json.
        optimizer_fingerprint = json.loads(json.dumps(dict(optimizer_fingerprint)))
        fingerprint["optimizer_factory"] = optimizer_fingerprint
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    return RunState(
        config=config,
        dataset=dataset,
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        generator=torch.Generator().manual_seed(config.seed),
        device=device,
        out=out,
        fingerprint=fingerprint,
        optimizer_fingerprint=optimizer_fingerprint,
        custom_optimizer=optimizer_factory is not None,
        tokens_per_step=config.batch_size * dataset.tokens_per_example,
        params=model.num_params(embeddings=True),
        non_embedding_params=model.num_params(embeddings=False),
        flops_per_token=model.flops_per_token(),
        dist=distributed,
    )


def _resume(state: RunState) -> dict[str, Any] | None:
    """Load the checkpoint into ``state`` (if there is one) and cut the metrics back to it.

    Returns the stored summary when that run had already completed, else ``None``.
    """
    config, path = state.config, state.checkpoint_path
    if state.dist is not None:
        path = state.dist.checkpoint_path(state.out)
    if not path.exists():
        finished = _completed_without_checkpoint(state)
        if finished is not None:
            return finished
        if not config.quiet:
            print(f"no checkpoint in {state.out}: starting a new run", file=sys.stderr)
        return None
    if state.dist is not None:
        _load_run_fields(state, state.dist.load(state.out, state.model, state.optimizer))
    else:
        _load_checkpoint_into(state, load_checkpoint(path, state.fingerprint))
    kept = _read_metrics(state.metrics_path, state.step)
    if state.is_main:
        atomic_write_bytes(state.metrics_path, "".join(line + "\n" for line in kept).encode())
    if state.step >= config.steps and state.summary_path.exists():
        summary = json.loads(state.summary_path.read_text())
        if summary.get("status") == "completed":
            return summary
    return None


def _completed_without_checkpoint(state: RunState) -> dict[str, Any] | None:
    """The summary of a completed run in ``out`` whose checkpoint was not kept, when it was
    trained under these settings (:func:`everyscale.train.reusable_summary`'s rule); under
    other settings it is refused, since there is nothing to continue and a fresh run would
    replace it."""
    from everyscale.train.reuse import reusable_summary  # reuse builds on this module

    try:
        summary = json.loads(state.summary_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("status") != "completed":
        return None
    try:
        return reusable_summary(state.config, state.optimizer_fingerprint)
    except ValueError as err:
        raise ValueError(
            f"--resume: {state.out} holds a completed run whose checkpoint was not kept, so "
            f"there is nothing to continue; {err}. Or drop --resume to train anew (the "
            "finished run's files are kept as NAME.previous-N.EXT)"
        ) from None


def _load_checkpoint_into(state: RunState, saved: dict[str, Any]) -> None:
    try:
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(
            f"checkpoint {state.checkpoint_path} does not fit this model/optimizer ({err}); it "
            "was left in place. Resume with the optimizer it was trained with, or use a new --out"
        ) from err
    state.scheduler.load_state_dict(saved["scheduler"])
    state.generator.set_state(saved["data_generator"])
    torch.set_rng_state(saved["torch_rng"])
    _set_run_fields(state, saved)


def _load_run_fields(state: RunState, saved: dict[str, Any]) -> None:
    """A distributed checkpoint's ``extra`` (JSON: the RNG states as lists of bytes)."""
    if saved.get("config") != state.fingerprint:
        raise ValueError(
            f"checkpoint {state.dist.checkpoint_path(state.out)} was written under other "
            "settings; it was left in place. Resume with the same settings, or use a new --out"
        )
    state.scheduler.load_state_dict(saved["scheduler"])
    state.generator.set_state(torch.tensor(saved["data_generator"], dtype=torch.uint8))
    torch.set_rng_state(torch.tensor(saved["torch_rng"], dtype=torch.uint8))
    _set_run_fields(state, saved)


def _set_run_fields(state: RunState, saved: dict[str, Any]) -> None:
    state.step, state.elapsed_before = saved["step"], saved["elapsed"]
    state.best_val, state.initial_val = saved["best_val"], saved["initial_val"]
    state.last_val, state.last_accuracy = saved["last_val"], saved["last_accuracy"]


def _start_fresh(state: RunState) -> None:
    """Empty metrics, no summary; an earlier run's files go to ``NAME.previous-N.EXT``.

    A fresh start never destroys an earlier run, whether or not its checkpoint was kept (a
    distributed run's ``checkpoint.dcp`` folder too). Only rank 0 touches the folder.
    """
    if not state.is_main:
        return
    keep_earlier_run(state.out, quiet=state.config.quiet)
    state.metrics_path.write_text("")


# ----------------------------------------------------------------------------- the steps


def _run_steps(state: RunState, callback, should_stop) -> bool:
    """Train up to ``config.steps``; ``True`` when ``should_stop`` ended the run early.

    Metrics are buffered; they are flushed at every checkpoint and at the end. A divergence
    becomes :class:`NonFiniteLossError`, anything unexpected a "failed" summary (re-raised).
    """
    state.start = time.perf_counter()
    state.tokens_at_start = state.step * state.tokens_per_step
    progress = _Progress(state)
    metrics_path = state.metrics_path if state.is_main else os.devnull  # rank 0 logs
    with open(metrics_path, "a") as metrics_file, _SignalCatcher() as signals:
        state.metrics_file = metrics_file
        try:
            return _step_until_done(state, signals, progress, callback, should_stop)
        except _Diverged as diverged:
            raise _divergence_error(state, diverged) from None
        except Exception as err:
            # Anything unexpected: record it, keep the last checkpoint, let the caller see it.
            _write_summary(state, "failed", message=f"{type(err).__name__}: {err}")
            raise
        finally:
            progress.close()
            state.metrics_file = None


def _step_until_done(
    state: RunState, signals: _SignalCatcher, progress: _Progress, callback, should_stop
) -> bool:
    config = state.config
    if state.step == 0 and config.eval_every:
        _initial_evaluation(state)
    while state.step < config.steps:
        lr = state.optimizer.param_groups[0]["lr"]  # the rate this step uses
        row = _training_step(state)
        _evaluate_if_due(state, row)
        _log_row(state, row, lr, callback)
        stop = should_stop is not None and state.step < config.steps and bool(should_stop(row))
        progress.update(state)
        due = config.checkpoint_every and state.step % config.checkpoint_every == 0
        if due or state.step == config.steps or signals.received is not None or stop:
            _save_checkpoint(state)
        if signals.received is not None and state.step < config.steps:
            _interrupt(state, signals.received)
        if stop:
            return True
    return False


def _training_step(state: RunState) -> dict[str, Any]:
    """One optimizer step (accumulated micro-batches, clipping, finiteness checks).

    Returns the step's metrics row so far: ``step``, ``tokens``, ``train_loss``, ``grad_norm``.
    """
    config, step = state.config, state.step + 1
    loss = _forward_backward(state)
    row: dict[str, Any] = {"step": step, "tokens": step * state.tokens_per_step}
    row["train_loss"] = loss
    grad_norm = None
    if config.clip is not None:
        grad_norm = float(nn.utils.clip_grad_norm_(state.model.parameters(), config.clip))
        row["grad_norm"] = grad_norm
    if not math.isfinite(loss):
        raise _Diverged(step, f"loss {loss}")
    if grad_norm is not None and not math.isfinite(grad_norm):
        raise _Diverged(step, f"gradient norm {grad_norm}")
    try:
        state.optimizer.step()
    except FloatingPointError as err:  # e.g. optim's NonFiniteGradientError
        raise _Diverged(step, f"gradient ({err})") from err
    state.scheduler.step()
    state.step, state.last_train = step, loss
    return row


def _forward_backward(state: RunState) -> float:
    """Gradients of one batch, summed over ``grad_accum`` micro-batches; the mean loss."""
    config, device = state.config, state.device
    x, y = state.dataset.sample_batch(config.batch_size, state.generator)
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    state.optimizer.zero_grad(set_to_none=True)
    loss_total = torch.zeros((), device=device)
    if state.dist is not None:  # this rank's micro-batches, gradients all-reduced on the last
        parts = state.dist.micro_batches(x, y, config.grad_accum)
    else:
        micro_batch = config.batch_size // config.grad_accum
        parts = (
            (state.model, xm, ym, contextlib.nullcontext())
            for xm, ym in zip(x.split(micro_batch), y.split(micro_batch))
        )
    for module, xm, ym, context in parts:
        with context:
            loss = _loss(module, xm, ym) / config.grad_accum
            loss.backward()
        loss_total += loss.detach()
    if state.dist is not None:
        loss_total = state.dist.mean(loss_total)  # the global batch's loss, on every rank
    # One host sync per step: the finiteness check and the metrics need the value.
    return loss_total.item()


# ----------------------------------------------------------------------------- evaluate and log


def _initial_evaluation(state: RunState) -> None:
    """The validation loss before any step, logged as the row ``step 0``."""
    state.initial_val, state.last_accuracy = _evaluate(state)
    state.last_val = state.best_val = state.initial_val
    row = {"step": 0, "tokens": 0, "val_loss": state.initial_val}
    state.metrics_file.write(json.dumps({**row, "val_accuracy": state.last_accuracy}) + "\n")


def _evaluate_if_due(state: RunState, row: dict[str, Any]) -> None:
    """Every ``eval_every`` steps and at the last: validation loss and accuracy into ``row``."""
    config, step = state.config, state.step
    if not ((config.eval_every and step % config.eval_every == 0) or step == config.steps):
        return
    state.last_val, state.last_accuracy = _evaluate(state)
    if not math.isfinite(state.last_val):
        raise _Diverged(step, f"validation loss {state.last_val}")
    state.best_val = min(state.best_val, state.last_val)
    row["val_loss"] = state.last_val
    row["val_accuracy"] = state.last_accuracy


def _evaluate(state: RunState) -> tuple[float, float]:
    return evaluate(state.model, state.dataset, state.config.batch_size)


def _log_row(state: RunState, row: dict[str, Any], lr: float, callback) -> None:
    row["lr"] = lr
    row["seconds"] = state.seconds()
    state.metrics_file.write(json.dumps(row) + "\n")
    if callback is not None:
        callback(row)


class _Progress:
    """The tqdm bar: loss, throughput and last validation loss, refreshed twice a second."""

    def __init__(self, state: RunState):
        config = state.config
        self.bar = tqdm(
            total=config.steps,
            initial=state.step,
            disable=config.quiet,
            desc=f"{config.model} {config.data}",
            unit="step",
            dynamic_ncols=True,
        )
        self.refreshed = state.start
        self.rate_label = "tok/s" if state.dataset.kind == "text" else "img/s"  # image = token

    def update(self, state: RunState) -> None:
        now, config = time.perf_counter(), state.config
        if not config.quiet and (now - self.refreshed > 0.5 or state.step == config.steps):
            rate = (state.step * state.tokens_per_step - state.tokens_at_start) / (
                now - state.start
            )
            postfix = {"loss": f"{state.last_train:.3f}", self.rate_label: f"{rate:,.0f}"}
            if state.last_val is not None:
                postfix["val"] = f"{state.last_val:.3f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.refreshed = now
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------- checkpoint and end


def _save_checkpoint(state: RunState) -> None:
    """Flush the metrics and write the checkpoint atomically (refused if a weight is NaN/inf)."""
    if not _params_finite(state.model):
        raise _Diverged(state.step, "weight")
    state.metrics_file.flush()
    if state.dist is not None:
        state.dist.save(state.out, state.model, state.optimizer, _run_fields(state))
        return
    save_checkpoint(
        state.checkpoint_path,
        {
            "config": state.fingerprint,
            "step": state.step,
            "elapsed": state.seconds(),
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "data_generator": state.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_val": state.best_val,
            "initial_val": state.initial_val,
            "last_val": state.last_val,
            "last_accuracy": state.last_accuracy,
        },
    )


def _run_fields(state: RunState) -> dict[str, Any]:
    """What a distributed checkpoint carries besides the tensors (JSON: ``DistRun.save``)."""
    return {
        "config": state.fingerprint,
        "step": state.step,
        "elapsed": state.seconds(),
        "scheduler": state.scheduler.state_dict(),
        "data_generator": state.generator.get_state().tolist(),
        "torch_rng": torch.get_rng_state().tolist(),
        "best_val": state.best_val,
        "initial_val": state.initial_val,
        "last_val": state.last_val,
        "last_accuracy": state.last_accuracy,
    }


def _write_summary(state: RunState, status: str, **extra) -> dict[str, Any]:
    """The run's summary (see :func:`run`), written atomically to ``summary.json``."""
    config = state.config
    tokens = state.step * state.tokens_per_step
    result = {
        "status": status,
        "steps": state.step,
        "tokens": tokens,
        # JSON has no NaN/inf: a non-finite loss is None (the status says why).
        "final_val_loss": _finite_or_none(state.last_val),
        "best_val_loss": _finite_or_none(state.best_val),
        "initial_val_loss": _finite_or_none(state.initial_val),
        "final_train_loss": _finite_or_none(state.last_train),
        "final_val_accuracy": state.last_accuracy,
        "params": state.params,
        "non_embedding_params": state.non_embedding_params,
        "flops_per_token": state.flops_per_token,
        "flops_counting": "6 x (weights used per token) + attention, see models.py",
        "total_flops": state.flops_per_token * tokens,
        "wall_seconds": state.seconds(),
        "tokens_per_second": (tokens - state.tokens_at_start)
        / max(time.perf_counter() - state.start, 1e-9),
        "model": config.model,
        "data": config.data,
        "optimizer": config.optimizer,
        "custom_optimizer": state.custom_optimizer,
        "lr": state.scheduler.base_lrs[0],
        "out": str(state.out),
        **extra,
    }
    if state.optimizer_fingerprint is not None:
        result["optimizer_fingerprint"] = state.optimizer_fingerprint
    if state.dist is not None:
        result["processes"] = state.dist.world
        result["parallel"] = state.dist.parallel
    if state.is_main:
        atomic_write_json(state.summary_path, result)
    return result


def _divergence_error(state: RunState, diverged: _Diverged) -> NonFiniteLossError:
    """Write the "diverged" summary and return the error that tells the caller."""
    state.metrics_file.flush()
    kept = (
        f"the last good checkpoint {state.checkpoint_path} was kept"
        if state.checkpoint_path.exists()
        else "no checkpoint had been written yet"
    )
    message = (
        f"non-finite {diverged.what} at step {diverged.step}: training stopped ({kept}). "
        "Lower the learning rate, add --clip, or add warmup"
    )
    result = _write_summary(state, "diverged", diverged_step=diverged.step, message=message)
    return NonFiniteLossError(message, diverged.step, result)


def _interrupt(state: RunState, signum: int) -> NoReturn:
    """A signal arrived (the checkpoint is saved): write "interrupted" and raise."""
    name = signal.Signals(signum).name
    message = (
        f"{name} received: checkpoint saved at step {state.step} in {state.checkpoint_path}; "
        "resume with --resume (resume=True)"
    )
    summary = _write_summary(state, "interrupted", message=message)
    raise TrainingInterrupted(message, state.step, summary)


class _Diverged(Exception):
    def __init__(self, step: int, what: str):
        super().__init__(what)
        self.step = step
        self.what = what
