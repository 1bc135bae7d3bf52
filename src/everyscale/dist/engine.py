"""The training loop on many processes: ``everyscale train --nproc N --parallel ddp|fsdp``.

``launch`` starts ``torchrun`` (``python -m torch.distributed.run --standalone``) with
``N`` copies of ``python -m everyscale train``; ``torchrun -m everyscale train ...`` on a cluster
does the same by hand. In each copy, ``from_environment`` reads the rank and world size torchrun
set, joins the process group (gloo on the CPU, nccl on GPUs, with a timeout on every
collective) and returns a ``DistRun`` that the loop (``everyscale.train.loop``) calls at a few
points:

- ``wrap_model`` / ``wrap_optimizer``: ``DistributedDataParallel`` or ``fully_shard`` (each GPT
  block, then the whole model), and ``everyscale.dist.distribute`` on the optimizer;
- ``micro_batches``: every rank draws the same global batch from the same generator (so a
  resumed run draws the same data) and takes its own ``grad_accum`` micro-batches of it, the
  gradient all-reduce running once, on the last one (``no_sync`` before it);
- ``mean``: the loss averaged over the ranks, so that every rank sees (and logs, on rank 0)
  the global batch's loss and all take the same decision on a non-finite value;
- ``save`` / ``load``: the checkpoint as a ``torch.distributed.checkpoint`` folder
  (``checkpoint.dcp``) that every rank writes its shards into and reads back.

Rank 0 alone writes ``config.json``, ``metrics.jsonl``, ``summary.json`` and the progress bar.
A failed rank's exception ends that process; torchrun then stops the others and reports the
failure (``torch.distributed.elastic``'s ``record``), and a rank waiting in a collective for a
dead peer gets an error within ``EVERYSCALE_DIST_TIMEOUT`` seconds (default 300).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from everyscale.train.rundir import DIST_CHECKPOINT_NAME

__all__ = ["DCP_NAME", "DistRun", "from_environment", "launch"]

DCP_NAME = DIST_CHECKPOINT_NAME  # one name, kept with the run folder rules
ParallelMode = Literal["ddp", "fsdp"]
PARALLEL_CHOICES: tuple[str, ...] = ("ddp", "fsdp")
PARALLEL_ENV = "EVERYSCALE_PARALLEL"
TIMEOUT_ENV = "EVERYSCALE_DIST_TIMEOUT"


def check_parallel(parallel: str) -> str:
    if parallel not in PARALLEL_CHOICES:
        raise ValueError(
            f"--parallel must be one of {', '.join(PARALLEL_CHOICES)}, got {parallel!r}"
        )
    return parallel


def launch(config_path: str | os.PathLike, nproc: int, parallel: str) -> int:
    """Run ``everyscale train --config CONFIG`` on ``nproc`` local processes via torchrun.

    Returns torchrun's exit code (non-zero when any rank failed; torchrun prints which).
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"--nproc must be a positive integer, got {nproc!r}")
    check_parallel(parallel)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "-m", "everyscale", "train",
        "--config", str(config_path), "--parallel", parallel,
    ]  # fmt: skip
    env = {**os.environ, PARALLEL_ENV: parallel}
    return subprocess.run(command, env=env, check=False).returncode


def under_torchrun() -> bool:
    """True inside a process that torchrun (or another launcher) gave a rank."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def from_environment(parallel: str | None = None) -> DistRun | None:
    """The ``DistRun`` of this process when a launcher set ``RANK``/``WORLD_SIZE``, else None.

    Joins the default process group if nobody did yet: nccl when CUDA is available, else gloo.
    """
    if not under_torchrun() and not (dist.is_available() and dist.is_initialized()):
        return None
    parallel = check_parallel(parallel or os.environ.get(PARALLEL_ENV, "ddp"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        seconds = float(os.environ.get(TIMEOUT_ENV, "300"))
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=seconds))
    return DistRun(dist.get_rank(), dist.get_world_size(), parallel)


@dataclass
class DistRun:
    """This process's place in a distributed run, and the few things the loop asks of it."""

    rank: int
    world: int
    parallel: str
    _wrapped: nn.Module | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only writer of the run's files."""
        return self.rank == 0

    # ------------------------------------------------------------------ model and optimizer
    def wrap_model(self, model: nn.Module) -> nn.Module:
        """``fully_shard`` the model in place (FSDP2), or keep a DDP wrapper for the forward."""
        if self.parallel == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in getattr(model, "blocks", []):
                fully_shard(block)
            fully_shard(model)
            self._wrapped = model
        else:
            self._wrapped = nn.parallel.DistributedDataParallel(model)
        return model

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        from everyscale.dist.optimizer import distribute
        from everyscale.optim.optimizer import NormOptimizer

        if not isinstance(optimizer, NormOptimizer):
            raise ValueError(
                f"--nproc/torchrun runs everyscale's optimizers; got {type(optimizer).__name__} "
                "from the optimizer factory"
            )
        return distribute(optimizer, parallel=self.parallel)

    # ------------------------------------------------------------------ batches and losses
    def check_batch(self, batch_size: int, grad_accum: int) -> None:
        """Every rank gets ``grad_accum`` equal micro-batches of each global batch."""
        count = self.world * grad_accum
        if batch_size % count:
            raise ValueError(
                f"--batch-size {batch_size} is not divisible by {self.world} processes x "
                f"--grad-accum {grad_accum}: choose a multiple of {count}"
            )

    def micro_batches(
        self, x: torch.Tensor, y: torch.Tensor, grad_accum: int
    ) -> Iterator[tuple[nn.Module, torch.Tensor, torch.Tensor, Any]]:
        """``(module, x, y, context)`` for each of this rank's micro-batches of the global batch.

        The global batch is cut into ``world * grad_accum`` equal micro-batches; rank ``r``
        takes numbers ``r * grad_accum`` to ``(r + 1) * grad_accum - 1``. Under DDP the
        gradient all-reduce is skipped (``no_sync``) on all but the last.
        """
        self.check_batch(x.shape[0], grad_accum)
        size = x.shape[0] // (self.world * grad_accum)
        module = self._wrapped
        for k in range(grad_accum):
            start = (self.rank * grad_accum + k) * size
            last = k == grad_accum - 1
            ddp = isinstance(module, nn.parallel.DistributedDataParallel)
            context = module.no_sync() if ddp and not last else contextlib.nullcontext()
            yield module, x[start : start + size], y[start : start + size], context

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over the ranks (a copy)."""
        total = value.detach().clone()
        dist.all_reduce(total)
        return total / self.world

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, out: Path) -> Path:
        return Path(out) / DCP_NAME

    def save(self, out: Path, model: nn.Module, optimizer: Any, extra: dict[str, Any]) -> None:
        from everyscale.dist import checkpoint

        checkpoint.save(self.checkpoint_path(out), model, optimizer, extra=extra)

    def load(self, out: Path, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        from everyscale.dist import checkpoint

        return checkpoint.load(self.checkpoint_path(out), model, optimizer)

    def remove_checkpoint(self, out: Path) -> None:
        """Rank 0 deletes the DCP folder (a completed run that keeps no checkpoint)."""
        self.barrier()
        if self.is_main:
            shutil.rmtree(self.checkpoint_path(out), ignore_errors=True)

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
