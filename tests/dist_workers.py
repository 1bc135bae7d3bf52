"""What each spawned rank runs for tests/test_dist.py (importable by the spawned children).

A tiny everyscale GPT trains on fixed random tokens. ``global_batch(step)`` is the same on
every rank; a rank takes its slice, and the one-process reference walks the same slices as
micro-batches, so with the loss of a micro-batch divided by their number the summed gradient
is the one DDP averages (exactly, at 2 ranks: a power-of-two scale and one addition).
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import everyscale
from everyscale.train.models import build_model

SHAPE = {"width": 32, "depth": 2, "heads": 2, "context": 8, "vocab": 64}
BATCH = 8
STEPS = 20
SHORT = 10  # the cases that are not the 20-step equality of the presets
#: float32 Newton-Schulz everywhere: the same products on every rank and in one process
SETTINGS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9},
    "adamw": {"lr": 3e-3},
    "muon": {"lr": 0.02, "ns_dtype": "float32"},
    "scion": {"lr": 2.0**-10, "ns_dtype": "float32"},
}


def build(seed: int = 0, depth: int = SHAPE["depth"]) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("gpt", **{**SHAPE, "depth": depth})


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    tokens = torch.randint(SHAPE["vocab"], (BATCH, SHAPE["context"] + 1), generator=generator)
    return tokens[:, :-1], tokens[:, 1:]


def micro_batch(step: int, index: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Micro-batch ``index`` of ``count`` equal slices of the global batch of ``step``."""
    x, y = global_batch(step)
    size = BATCH // count
    return x[index * size : (index + 1) * size], y[index * size : (index + 1) * size]


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


#: more template settings run under DDP and FSDP2 (no single-process twin in ``SETTINGS``)
EXTRA = {
    "clipped_scion": {"lr": 2.0**-10, "ns_dtype": "float32"},
}


def make_optimizer(model: nn.Module, preset: str) -> torch.optim.Optimizer:
    if preset == "sharp_spectral":  # steepest descent in the spectral norm for matrices
        from everyscale.optim import NormOptimizer

        named = list(model.named_parameters())
        spectral = {"norm": "spectral", "norm_kwargs": {"dtype": "float32"}}
        groups = [
            {"params": [(n, p) for n, p in named if p.ndim == 2], **spectral},
            {"params": [(n, p) for n, p in named if p.ndim < 2], "norm": "rms"},
        ]
        return NormOptimizer(groups, lr=0.01, step="sharp", momentum=0.9)
    settings = dict(SETTINGS.get(preset) or EXTRA[preset])
    return everyscale.optimizer(model, preset, **settings)


def full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        value = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = value.detach().clone()
    return out


def train_single(
    preset: str, steps: int = STEPS, accum: int = 2, seed: int = 0, depth: int = SHAPE["depth"]
) -> dict:
    """The one-process reference: ``accum`` micro-batches per step."""
    model = build(seed, depth)
    opt = make_optimizer(model, preset)
    for step in range(steps):
        for k in range(accum):
            (loss_of(model, micro_batch(step, k, accum)) / accum).backward()
        opt.step()
        opt.zero_grad()
    return full_params(model)


def count_polar_calls() -> list[int]:
    """Patch ``polar_factor`` to count its calls (one per batched stack); returns the counter."""
    from everyscale.optim import polar

    counter = [0]
    original = polar.polar_factor

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        counter[0] += 1
        return original(*args, **kwargs)

    polar.polar_factor = counted
    return counter


def train_ddp(
    preset: str,
    steps: int = STEPS,
    micro: int = 1,
    seed: int = 0,
    depth: int = SHAPE["depth"],
    hook: Callable | None = None,
) -> dict:
    """DDP: this rank's slice of every global batch, in ``micro`` accumulated micro-batches."""
    from torch.nn.parallel import DistributedDataParallel

    rank, world = dist.get_rank(), dist.get_world_size()
    model = build(seed, depth)
    ddp = DistributedDataParallel(model)
    opt = everyscale.dist.distribute(make_optimizer(model, preset))
    for step in range(steps):
        for k in range(micro):
            last = k == micro - 1
            with contextlib.nullcontext() if last else ddp.no_sync():
                batch = micro_batch(step, rank * micro + k, world * micro)
                (loss_of(ddp, batch) / micro).backward()
        opt.step()
        opt.zero_grad()
        if hook is not None:
            hook(step, model, opt)
    return full_params(model)


def shard(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def train_fsdp(
    preset: str,
    steps: int = STEPS,
    seed: int = 0,
    start: int = 0,
    save_at: int | None = None,
    resume: Path | None = None,
    folder: Path | None = None,
) -> dict:
    """FSDP2 with this rank's slice; optionally save at ``save_at`` or resume from ``resume``."""
    from everyscale.dist import checkpoint

    rank, world = dist.get_rank(), dist.get_world_size()
    model = shard(build(seed))
    opt = everyscale.dist.distribute(make_optimizer(model, preset))
    if resume is not None:
        start = checkpoint.load(resume, model, opt)["step"]
    for step in range(start, steps):
        if step == save_at:
            checkpoint.save(folder, model, opt, extra={"step": step})
        loss_of(model, micro_batch(step, rank, world)).backward()
        opt.step()
        opt.zero_grad()
    return full_params(model)


def train_single_resumed(preset: str, folder: Path, steps: int = STEPS, accum: int = 2) -> dict:
    """One plain process resuming a checkpoint saved by sharded ranks (DCP reshards)."""
    from everyscale.dist import checkpoint

    model = build(seed=123)
    opt = make_optimizer(model, preset)
    start = checkpoint.load(folder, model, opt)["step"]
    for step in range(start, steps):
        for k in range(accum):
            (loss_of(model, micro_batch(step, k, accum)) / accum).backward()
        opt.step()
        opt.zero_grad()
    return full_params(model)


def expect_error(run: Callable[[], Any]) -> str:
    """The message of the ValueError ``run`` raises ("" if none)."""
    try:
        run()
    except ValueError as err:
        return str(err)
    return ""


def cases_two_ranks(rank: int, out: Path) -> dict:
    import everyscale.dist  # noqa: F401

    results: dict[str, Any] = {}
    for preset in SETTINGS:
        results[f"ddp/{preset}"] = train_ddp(preset)
    counter = count_polar_calls()
    results["ddp/muon/micro4"] = train_ddp("muon", steps=3, micro=2)
    results["polar_calls/micro4"] = counter[0]
    counter[0] = 0
    train_ddp("muon", steps=3, micro=1)
    results["polar_calls/micro1"] = counter[0]
    for preset in ("clipped_scion", "sharp_spectral"):
        results[f"ddp/{preset}"] = train_ddp(preset, steps=SHORT)
        results[f"fsdp/{preset}"] = train_fsdp(preset, steps=SHORT)
    # uneven: one fc and one proj matrix (one of each shape) for two ranks
    results["ddp/muon/depth1"] = train_ddp("muon", depth=1)
    for preset in SETTINGS:
        results[f"fsdp/{preset}"] = train_fsdp(preset)
    # checkpoints: save at step 10 on 2 ranks, resume on 2 ranks from another initialization
    for preset in ("muon", "adamw"):
        folder = out / f"ckpt-{preset}"
        results[f"ckpt/{preset}/through"] = train_fsdp(
            preset, steps=SHORT, save_at=SHORT // 2, folder=folder
        )
        results[f"ckpt/{preset}/resumed"] = train_fsdp(preset, steps=SHORT, seed=123, resume=folder)
    results["errors"] = bad_inputs(rank)
    results["engine"] = engine_runs(out)
    try:
        import transformers  # noqa: F401
    except ImportError:
        return results
    for name, preset, parallel in HF_CASES:
        results[f"hf/{name}/{preset}/{parallel}"] = hf_distributed(name, preset, parallel)
    return results


def cases_four_ranks(rank: int, out: Path) -> dict:
    import everyscale.dist  # noqa: F401

    return {f"ddp/{preset}": train_ddp(preset) for preset in ("sgd", "adamw", "muon")}


#: transformers models read through optim's layouts: GPT-2's fused Conv1D c_attn (three
#: matrices), Mixtral's 3-D expert stacks (one matrix per expert)
HF_CASES = (("gpt2", "scion", "ddp"), ("mixtral", "muon", "fsdp"))


def hf_model(name: str) -> tuple[nn.Module, torch.Tensor, Callable]:
    import hf_zoo

    torch.manual_seed(0)
    return getattr(hf_zoo, name)()


def hf_optimizer(model: nn.Module, preset: str) -> torch.optim.Optimizer:
    return everyscale.optimizer(model, preset, lr=0.01, ns_dtype="float32")


def hf_single(name: str, preset: str, steps: int = 3) -> dict:
    """One process, the batch in 2 accumulated micro-batches."""
    model, batch, loss_fn = hf_model(name)
    opt = hf_optimizer(model, preset)
    half = batch.shape[0] // 2
    for _ in range(steps):
        for k in range(2):
            (loss_fn(model, batch[k * half : (k + 1) * half]) / 2).backward()
        opt.step()
        opt.zero_grad()
    return full_params(model)


def hf_distributed(name: str, preset: str, parallel: str, steps: int = 3) -> dict:
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    rank = dist.get_rank()
    model, batch, loss_fn = hf_model(name)
    if parallel == "fsdp":
        for module in model.modules():
            if type(module).__name__.endswith(("GPT2Block", "DecoderLayer")):
                fully_shard(module)
        forward = fully_shard(model)
    else:
        forward = DistributedDataParallel(model)
    opt = everyscale.dist.distribute(hf_optimizer(model, preset))
    half = batch.shape[0] // 2
    for _ in range(steps):
        loss_fn(forward, batch[rank * half : (rank + 1) * half]).backward()
        opt.step()
        opt.zero_grad()
    return full_params(model)


def run_config(out: Path, **changes: Any):
    """A tiny GPT run of the training loop (6 steps, checkpoints every 3)."""
    from available_data import TEXT_DATA
    from everyscale.train import TrainConfig

    values = {
        "model": "gpt", "data": TEXT_DATA, "width": 32, "depth": 2, "heads": 2, "context": 16,
        "batch_size": 8, "steps": 6, "optimizer": "muon", "lr": 0.02,
        "optimizer_options": {"ns_dtype": "float32"}, "eval_every": 3, "val_windows": 16,
        "checkpoint_every": 3, "threads": 1, "quiet": True, "out": str(out),
    }  # fmt: skip
    return TrainConfig(**{**values, **changes})


def engine_runs(out: Path) -> dict[str, Any]:
    """The loop on 2 ranks: straight through, and stopped at step 3 then resumed."""
    from everyscale.dist.engine import from_environment
    from everyscale.train import run

    summaries = {}
    for parallel in ("ddp", "fsdp"):
        distributed = from_environment(parallel)
        through = out / f"run-{parallel}"
        summaries[f"{parallel}/through"] = run(run_config(through), distributed=distributed)
        resumed = out / f"run-{parallel}-resumed"
        summaries[f"{parallel}/stopped"] = run(
            run_config(resumed), distributed=distributed, should_stop=lambda r: r["step"] == 3
        )
        summaries[f"{parallel}/resumed"] = run(
            run_config(resumed, resume=True), distributed=distributed
        )
    return summaries


def bad_inputs(rank: int) -> dict[str, str]:
    """The error each rank gets for a layout, a mode and a parameter list that cannot run."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard

    from everyscale.dist import distribute

    errors = {}
    model = build()
    fully_shard(model, shard_placement_fn=lambda p: Shard(1) if p.ndim == 2 else None)
    errors["shard1"] = expect_error(lambda: distribute(make_optimizer(model, "muon")))
    sharded = shard(build())
    errors["ddp_on_dtensor"] = expect_error(
        lambda: distribute(make_optimizer(sharded, "muon"), parallel="ddp")
    )
    mismatched = build(depth=1 if rank == 1 else 2)
    errors["mismatch"] = expect_error(lambda: distribute(make_optimizer(mismatched, "muon")))
    return errors


CASES = {2: cases_two_ranks, 4: cases_four_ranks}


def worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank: join the gloo group, run this world size's cases, save them (or the error)."""
    # as torchrun sets them (the run-folder lock and the engine read RANK / WORLD_SIZE)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    from datetime import timedelta

    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    path = Path(out)
    results: dict[str, Any] = {}
    try:
        results = CASES[world](rank, path)
    except Exception:
        results = {"error": traceback.format_exc()}
        raise
    finally:
        torch.save(results, path / f"rank{rank}.pt")
        dist.destroy_process_group()
