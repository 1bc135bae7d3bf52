"""Sharded checkpoints of a model and its ``NormOptimizer`` with ``torch.distributed.checkpoint``.

``save(path, model, optimizer)`` writes a DCP checkpoint (each rank writes its own shards;
replicated tensors are written once) into ``path.tmp`` and, once every rank is done, rank 0
renames it to ``path``: a checkpoint is whole or absent. ``load(path, model, optimizer)`` reads
it back into whatever layout the model has now: the same ranks (exact resume), another number
of ranks, or one plain process (DCP reshards by the tensors' global offsets).

The state dict is flat, keyed by parameter name so that it does not depend on the order in
which the optimizer lists its parameters:

- ``model/<name>``: ``model.state_dict()`` (``DTensor`` shards under FSDP2);
- ``optim/<name>/<key>``: each optimizer state tensor (``momentum_buffer``, ``exp_avg``,
  ``exp_avg_sq``, ``step``), sharded like its parameter;
- ``optim/counters``: steps taken and skipped; ``optim/groups``: the groups' hyperparameters
  (JSON);
- ``extra``: any JSON-serializable object the caller passes (the training loop's step and
  data state).

On load the optimizer's state keys are created from the checkpoint's metadata before DCP
fills them, so a fresh optimizer on any rank asks for exactly what was saved.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from everyscale.optim.optimizer import NormOptimizer

__all__ = ["load", "save"]

_GROUP_SKIP = ("params", "param_names")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (names without ``module.``)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _param_names(model: nn.Module, optimizer: NormOptimizer) -> list[tuple[str, torch.Tensor]]:
    """``(name, param)`` for every parameter the optimizer steps, named as in the model."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    pairs = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in by_id:
                raise ValueError(
                    "checkpoint: the optimizer holds a parameter the model does not have (shape "
                    f"{tuple(p.shape)}); pass the model the optimizer was built on"
                )
            pairs.append((by_id[id(p)], p))
    return pairs


def _state_dict(model: nn.Module, optimizer: NormOptimizer) -> dict[str, Any]:
    state: dict[str, Any] = {f"model/{k}": v for k, v in model.state_dict().items()}
    for name, p in _param_names(model, optimizer):
        for key, value in optimizer.state.get(p, {}).items():
            state[f"optim/{name}/{key}"] = value
    counters = optimizer.state_dict().get("everyscale", {"steps": 0, "skipped_steps": 0})
    state["optim/counters"] = torch.tensor([counters["steps"], counters["skipped_steps"]])
    groups = [{k: v for k, v in g.items() if k not in _GROUP_SKIP} for g in optimizer.param_groups]
    state["optim/groups"] = json.dumps(groups)
    return state


def _check_same_keys(keys: list[str]) -> None:
    """All ranks must save the same entries, or DCP would wait forever: say which differ."""
    if not _distributed():
        return
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, sorted(keys))
    for rank, theirs in enumerate(gathered):
        if theirs != gathered[0]:
            diff = sorted(set(theirs) ^ set(gathered[0]))
            raise ValueError(
                f"checkpoint: rank {rank} has different optimizer state than rank 0 "
                f"({', '.join(diff[:3])}); every rank must step the same parameters"
            )


def save(
    path: str | os.PathLike, model: nn.Module, optimizer: NormOptimizer, extra: Any = None
) -> Path:
    """Write a DCP checkpoint of ``model`` and ``optimizer`` (and ``extra``) to ``path``.

    Call on every rank with the same ``path`` on a file system all ranks share. An existing
    checkpoint at ``path`` is replaced only once the new one is complete; a folder that is not
    a DCP checkpoint is never overwritten.
    """
    final = Path(path)
    tmp = final.with_name(final.name + ".tmp")
    if final.exists() and not (final / ".metadata").is_file():
        raise ValueError(
            f"checkpoint: {final} exists and is not a torch.distributed.checkpoint folder (no "
            ".metadata); choose another path, it is left untouched"
        )
    model = _unwrap(model)
    state = _state_dict(model, optimizer)
    state["extra"] = json.dumps(extra)
    _check_same_keys(list(state))
    if _rank() == 0 and tmp.exists():
        shutil.rmtree(tmp)  # the leftover of an interrupted save
    _barrier()
    with warnings.catch_warnings():  # one process writing a checkpoint is intended
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=tmp, no_dist=not _distributed())
    _barrier()
    if _rank() == 0:
        _swap_into_place(tmp, final)
    _barrier()
    return final


def _swap_into_place(tmp: Path, final: Path) -> None:
    """``tmp`` becomes ``final``; an older ``final`` is removed only after the rename."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old.exists():
        shutil.rmtree(old)


def _placeholder(meta: Any, like: torch.Tensor) -> torch.Tensor:
    """An empty tensor for a saved state entry: shaped (and sharded) like its parameter."""
    if tuple(meta.size) == tuple(like.shape):
        return torch.zeros_like(like, dtype=meta.properties.dtype)
    return torch.zeros(meta.size, dtype=meta.properties.dtype)


def load(path: str | os.PathLike, model: nn.Module, optimizer: NormOptimizer) -> Any:
    """Load a checkpoint written by ``save`` into ``model`` and ``optimizer``; returns ``extra``.

    The model and optimizer must be built as for the run that saved it (same parameter names
    and geometries); the number of ranks and the sharding may differ.
    """
    folder = Path(path)
    if not (folder / ".metadata").is_file():
        raise FileNotFoundError(
            f"checkpoint: no torch.distributed.checkpoint at {folder} (no .metadata file)"
        )
    saved = dcp.FileSystemReader(folder).read_metadata().state_dict_metadata
    model = _unwrap(model)
    model_state = model.state_dict()
    state: dict[str, Any] = {f"model/{k}": v for k, v in model_state.items()}
    missing = sorted(k for k in state if k not in saved)
    if missing:
        raise ValueError(
            f"checkpoint: {folder} has no {missing[0].removeprefix('model/')!r}"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; was it saved "
            "from this model?"
        )
    slots: list[tuple[torch.Tensor, str, str]] = []
    for name, p in _param_names(model, optimizer):
        prefix = f"optim/{name}/"
        for key in (k for k in saved if k.startswith(prefix)):
            meta = saved[key]
            if isinstance(meta, TensorStorageMetadata):
                state[key] = _placeholder(meta, p)
                slots.append((p, key.removeprefix(prefix), key))
    state["optim/counters"] = torch.zeros(2, dtype=torch.long)
    state["optim/groups"] = ""
    state["extra"] = ""
    with warnings.catch_warnings():  # one process reading a sharded checkpoint is intended
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=folder, no_dist=not _distributed())
    model.load_state_dict({k.removeprefix("model/"): state[f"model/{k}"] for k in model_state})
    optimizer.state.clear()
    for p, key, full in slots:
        optimizer.state[p][key] = state[full]
    for group, saved_group in zip(optimizer.param_groups, json.loads(state["optim/groups"])):
        for key, value in saved_group.items():
            group[key] = tuple(value) if isinstance(group.get(key), tuple) else value
    steps, skipped = (int(v) for v in state["optim/counters"])
    optimizer._counters.update(steps=steps, skipped_steps=skipped)
    optimizer._norm_cache.clear()
    return json.loads(state["extra"])
