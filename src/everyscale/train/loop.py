"""The training loop: ``run(config) -> summary``, a run that can always be resumed.

Files under ``config.out``:

- ``config.json``: the full config;
- ``metrics.jsonl``: one JSON line per optimizer step ``{"step", "tokens", "train_loss", "lr",
  "seconds"}`` (``lr``: the first param group's, as used by that step; plus ``"val_loss"``
  and ``"val_accuracy"`` when evaluated, ``"grad_norm"`` when clipping; a line ``step 0``
  holds the initial validation loss when ``eval_every > 0``). Buffered: flushed at every
  checkpoint and at the end;
- ``summary.json``: the result (see :func:`run`), with ``status`` one of ``completed``,
  ``diverged``, ``interrupted``, ``failed`` (an unexpected exception, re-raised);
- ``checkpoint.pt``: model, optimizer, schedule, step, the data generator's and torch's RNG
  states, written atomically every ``checkpoint_every`` steps, at the end, and on
  SIGINT/SIGTERM. A fresh (not resumed) run in a directory that holds an earlier run moves
  that run's checkpoint, metrics, summary and config to the next numbered generation
  (``checkpoint.previous-1.pt``, ``metrics.previous-1.jsonl``, then ``previous-2``, ...)
  rather than overwrite them; ``--resume`` of a completed run whose checkpoint was not kept
  returns its summary, or is refused when the settings differ;
- ``.lock``: held by the running process (:class:`everyscale.train.rundir.RunLock`); a second
  writer is refused.

Exact resume: training batches come only from a ``torch.Generator`` owned by the loop, and the
checkpoint holds its state, so a resumed run draws the same batches and, on the CPU, reproduces
the uninterrupted run's losses bit for bit. ``metrics.jsonl`` is cut back to the checkpoint's
step on resume, so no step appears twice.

A "token" is one byte of text, or one image for the image models.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    finished_run,
    keep_earlier_run,
    refuse_inputs_in_outputs,
)
from everyscale.train.schedules import get_schedule

__all__ = ["NonFiniteLossError", "TrainingInterrupted", "build_model_for", "evaluate", "run"]


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


def run(
    config: TrainConfig,
    *,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    rank: int | None = None,
) -> dict[str, Any]:
    """Train ``config``'s model on its data and return the summary (also in ``summary.json``).

    Args:
        config: the run; validated (and its data loaded and checked) before any step.
        optimizer_factory: ``model -> optimizer``; replaces the preset lookup
            ``everyscale.optimizer(model, config.optimizer, lr=config.lr,
            **config.optimizer_options)``.
            The schedule multiplies each param group's learning rate.
        callback: called with each step's metrics row after it is logged (e.g. for live plots).
        rank: this process's rank under several processes: only the launcher or rank 0 locks
            ``config.out`` (default: the ``EVERYSCALE_RANK`` or ``RANK`` environment variable;
            see :mod:`everyscale.train.rundir`).

    Returns:
        The summary: ``status`` ("completed"), ``steps``, ``tokens``, ``final_val_loss``,
        ``best_val_loss``, ``initial_val_loss`` (or None), ``final_train_loss``,
        ``final_val_accuracy`` (top-1: next byte or label), ``params``,
        ``non_embedding_params``, ``flops_per_token``, ``total_flops`` (``flops_per_token *
        tokens``), ``wall_seconds``, ``tokens_per_second`` and the run's names.

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
    with RunLock(config.out, flag="--out", rank=rank):  # one writer per run folder
        dataset = load_dataset(
            config.data,
            context=config.context,  # image data ignores it
            seed=config.seed,
            max_val_windows=config.val_windows,
        )
        previous_threads = torch.get_num_threads()
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        try:
            return _train(config, dataset, optimizer_factory, callback)
        finally:
            torch.set_num_threads(previous_threads)


def _train(config: TrainConfig, dataset, optimizer_factory, callback) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    model = build_model_for(config, dataset)
    device = torch.device(config.device)
    model.to(device).train()
    optimizer = _make_optimizer(config, model, optimizer_factory)
    schedule = get_schedule(config.schedule, config.steps, config.warmup, config.effective_cooldown)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(config.seed)

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / CHECKPOINT_NAME
    metrics_path = out / METRICS_NAME
    summary_path = out / SUMMARY_NAME
    fingerprint = config.fingerprint()

    step, elapsed_before = 0, 0.0
    best_val, initial_val, last_val = math.inf, None, None
    last_accuracy: float | None = None
    if config.resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, fingerprint)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(
                f"checkpoint {checkpoint_path} does not fit this model/optimizer ({err}); it was "
                "left in place. Resume with the optimizer it was trained with, or use a new --out"
            ) from err
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["data_generator"])
        torch.set_rng_state(state["torch_rng"])
        step, elapsed_before = state["step"], state["elapsed"]
        best_val, initial_val, last_val = state["best_val"], state["initial_val"], state["last_val"]
        last_accuracy = state["last_accuracy"]
        atomic_write_bytes(
            metrics_path,
            "".join(line + "\n" for line in _read_metrics(metrics_path, step)).encode(),
        )
        if step >= config.steps and summary_path.exists():
            summary = json.loads(summary_path.read_text())
            if summary.get("status") == "completed":
                return summary  # nothing left to do
    elif config.resume:
        finished = finished_run(out, fingerprint)  # refuses a finished run of other settings
        if finished is not None:
            return finished  # completed, checkpoint not kept: nothing left to do
        if not config.quiet:
            print(f"no checkpoint in {out}: starting a new run", file=sys.stderr)
    if step == 0:
        # A fresh start never destroys an earlier run: its files become NAME.previous-N.EXT.
        keep_earlier_run(out, quiet=config.quiet)
        metrics_path.write_text("")
    atomic_write_bytes(out / CONFIG_NAME, (config.to_json() + "\n").encode())

    tokens_per_step = config.batch_size * dataset.tokens_per_example
    micro_batch = config.batch_size // config.grad_accum
    params = model.num_params(embeddings=True)
    non_embedding_params = model.num_params(embeddings=False)
    flops_per_token = model.flops_per_token()

    def summary(status: str, **extra) -> dict[str, Any]:
        seconds = elapsed_before + (time.perf_counter() - start)
        tokens = step * tokens_per_step
        result = {
            "status": status,
            "steps": step,
            "tokens": tokens,
            # JSON has no NaN/inf: a non-finite loss is None (the status says why).
            "final_val_loss": _finite_or_none(last_val),
            "best_val_loss": _finite_or_none(best_val),
            "initial_val_loss": _finite_or_none(initial_val),
            "final_train_loss": _finite_or_none(last_train),
            "final_val_accuracy": last_accuracy,
            "params": params,
            "non_embedding_params": non_embedding_params,
            "flops_per_token": flops_per_token,
            "flops_counting": "6 x (weights used per token) + attention, see models.py",
            "total_flops": flops_per_token * tokens,
            "wall_seconds": seconds,
            "tokens_per_second": (tokens - tokens_at_start)
            / max(time.perf_counter() - start, 1e-9),
            "model": config.model,
            "data": config.data,
            "optimizer": config.optimizer,
            "custom_optimizer": optimizer_factory is not None,
            "lr": scheduler.base_lrs[0],
            "out": str(out),
            **extra,
        }
        atomic_write_json(summary_path, result)
        return result

    def checkpoint() -> None:
        metrics_file.flush()
        save_checkpoint(
            checkpoint_path,
            {
                "config": fingerprint,
                "step": step,
                "elapsed": elapsed_before + (time.perf_counter() - start),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "data_generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "best_val": best_val,
                "initial_val": initial_val,
                "last_val": last_val,
                "last_accuracy": last_accuracy,
            },
        )

    start = time.perf_counter()
    tokens_at_start = step * tokens_per_step
    last_train: float | None = None
    bar = tqdm(
        total=config.steps,
        initial=step,
        disable=config.quiet,
        desc=f"{config.model} {config.data}",
        unit="step",
        dynamic_ncols=True,
    )
    bar_refreshed = start
    rate_label = "tok/s" if dataset.kind == "text" else "img/s"  # an image counts as a token
    # Metrics are buffered; they are flushed at every checkpoint and at the end.
    with open(metrics_path, "a") as metrics_file, _SignalCatcher() as signals:
        try:
            if step == 0 and config.eval_every:
                initial_val, last_accuracy = evaluate(model, dataset, config.batch_size)
                last_val = best_val = initial_val
                row0 = {"step": 0, "tokens": 0, "val_loss": initial_val}
                metrics_file.write(json.dumps({**row0, "val_accuracy": last_accuracy}) + "\n")

            while step < config.steps:
                lr = optimizer.param_groups[0]["lr"]
                x, y = dataset.sample_batch(config.batch_size, generator)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                loss_total = torch.zeros((), device=device)
                for xm, ym in zip(x.split(micro_batch), y.split(micro_batch)):
                    loss = _loss(model, xm, ym) / config.grad_accum
                    loss.backward()
                    loss_total += loss.detach()
                # One host sync per step: the finiteness check and the metrics need the value.
                loss_sum = loss_total.item()
                row: dict[str, Any] = {"step": step + 1, "tokens": (step + 1) * tokens_per_step}
                row["train_loss"] = loss_sum
                grad_norm = None
                if config.clip is not None:
                    grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.clip))
                    row["grad_norm"] = grad_norm
                if not math.isfinite(loss_sum) or (
                    grad_norm is not None and not math.isfinite(grad_norm)
                ):
                    what = "loss" if not math.isfinite(loss_sum) else "gradient norm"
                    raise _Diverged(step + 1, f"{what} {loss_sum if what == 'loss' else grad_norm}")
                try:
                    optimizer.step()
                except FloatingPointError as err:  # e.g. optim's NonFiniteGradientError
                    raise _Diverged(step + 1, f"gradient ({err})") from err
                scheduler.step()
                step += 1
                last_train = loss_sum
                if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
                    last_val, last_accuracy = evaluate(model, dataset, config.batch_size)
                    if not math.isfinite(last_val):
                        raise _Diverged(step, f"validation loss {last_val}")
                    best_val = min(best_val, last_val)
                    row["val_loss"] = last_val
                    row["val_accuracy"] = last_accuracy
                row["lr"] = lr
                row["seconds"] = elapsed_before + (time.perf_counter() - start)
                metrics_file.write(json.dumps(row) + "\n")
                if callback is not None:
                    callback(row)

                now = time.perf_counter()
                if not config.quiet and (now - bar_refreshed > 0.5 or step == config.steps):
                    rate = (step * tokens_per_step - tokens_at_start) / (now - start)
                    postfix = {"loss": f"{loss_sum:.3f}", rate_label: f"{rate:,.0f}"}
                    if last_val is not None:
                        postfix["val"] = f"{last_val:.3f}"
                    bar.set_postfix(postfix, refresh=False)
                    bar_refreshed = now
                bar.update(1)

                due = config.checkpoint_every and step % config.checkpoint_every == 0
                if due or step == config.steps or signals.received is not None:
                    if not _params_finite(model):
                        raise _Diverged(step, "weight")
                    checkpoint()
                if signals.received is not None and step < config.steps:
                    name = signal.Signals(signals.received).name
                    message = (
                        f"{name} received: checkpoint saved at step {step} in {checkpoint_path}; "
                        "resume with --resume (resume=True)"
                    )
                    raise TrainingInterrupted(
                        message, step, summary("interrupted", message=message)
                    )
        except _Diverged as diverged:
            metrics_file.flush()
            kept = (
                f"the last good checkpoint {checkpoint_path} was kept"
                if checkpoint_path.exists()
                else "no checkpoint had been written yet"
            )
            message = (
                f"non-finite {diverged.what} at step {diverged.step}: training stopped ({kept}). "
                "Lower the learning rate, add --clip, or add warmup"
            )
            result = summary("diverged", diverged_step=diverged.step, message=message)
            raise NonFiniteLossError(message, diverged.step, result) from None
        except Exception as err:
            # Anything unexpected: record it, keep the last checkpoint, let the caller see it.
            summary("failed", message=f"{type(err).__name__}: {err}")
            raise
        finally:
            bar.close()

    result = summary("completed")
    if not config.keep_checkpoint:
        checkpoint_path.unlink(missing_ok=True)
    return result


class _Diverged(Exception):
    def __init__(self, step: int, what: str):
        super().__init__(what)
        self.step = step
        self.what = what
