"""The muon step on 2 gloo ranks against 1 rank, and the bytes it sends.

The parameters are the GPT stack of ``benchmarks/optim_step.py`` (everyscale's GPT: 4 blocks,
width 256, vocab 256) with fixed random gradients, the same on every rank (as after DDP's
all-reduce). Two processes with one CPU thread each join a gloo group; in every round

1. the 1-rank step: each process times one step of its own plain (single-process) ``muon``
   optimizer, both at the same time and without talking to each other;
2. the 2-rank step: both time one step of the same optimizer under
   ``everyscale.dist.distribute``: each rank orthogonalizes the matrices it owns
   (FLOP-balanced) and the results are all-gathered.

Both figures are the slower process's time, a median over rounds after a warm-up round. The
1-rank step runs on both processes at once so that it gets the same share of a busy machine
as the 2-rank step (on an idle 2-core machine this equals one process alone on its core); the
time of rank 0 alone, the other process waiting, is printed beside it for reference.

Printed:

``dist_muon_2rank_vs_1rank``
    the 2-rank step time over the 1-rank step time. Target: <= 0.65 (the matrix work splits
    in two; the element-wise AdamW part of the muon preset and the all-gather do not).
``bytes sent per step``
    what each rank sends (a ring all-gather sends ``(W - 1)`` buckets' worth, padding
    included) and the total over the ranks, against the minimum: the polar-factor results'
    size once (every result must leave its owner at least once).

Run:

    .venv/bin/python benchmarks/dist_step.py [--rounds 7]

Timing on gloo measures the CPU path only; FSDP2 is not timed here (gloo's reduce-scatter is a
stand-in for nccl's). No GPU was lent to this project, so the nccl path is not measured.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

GPT_SHAPE = {"width": 256, "depth": 4, "heads": 4, "context": 64, "vocab": 256}
MUON_LR = 0.02


def gpt_with_gradients(seed: int = 0) -> nn.Module:
    """everyscale's GPT at ``GPT_SHAPE`` with a fixed random gradient on every parameter."""
    from everyscale.train.models import build_model

    torch.manual_seed(seed)
    model = build_model("gpt", **GPT_SHAPE)
    generator = torch.Generator().manual_seed(seed + 1)
    for parameter in model.parameters():
        parameter.grad = torch.randn(parameter.shape, generator=generator) * 1e-2
    return model


def timed(step) -> float:
    """Seconds of ``step()`` on the slowest rank (all ranks start together)."""
    dist.barrier()
    start = time.perf_counter()
    step()
    slowest = torch.tensor(time.perf_counter() - start)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    return float(slowest)


def worker(rank: int, world: int, port: int, rounds: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=300))
    import everyscale
    from everyscale.dist import distribute

    single = everyscale.optimizer(gpt_with_gradients(), "muon", lr=MUON_LR, weight_decay=0.0)
    shared = everyscale.optimizer(gpt_with_gradients(), "muon", lr=MUON_LR, weight_decay=0.0)
    distribute(shared)
    times: dict[str, list[float]] = {"one": [], "alone": [], "two": []}
    sent = []
    for index in range(rounds + 1):
        one = timed(single.step)  # each rank its own 1-rank step, at the same time
        dist.barrier()
        if rank == 0:  # for reference: 1 rank while the other process waits
            start = time.perf_counter()
            single.step()
            alone = time.perf_counter() - start
        shared.lmo_hook.stats.reset()
        two = timed(shared.step)
        if index:  # the first round warms up
            times["one"].append(one)
            times["two"].append(two)
            sent.append(shared.lmo_hook.stats.sent_bytes)
            if rank == 0:
                times["alone"].append(alone)
    stats = shared.lmo_hook.stats  # the last round's
    if rank == 0:
        result = {name: statistics.median(values) for name, values in times.items()}
        result.update(sent=statistics.median(sent), calls=stats.calls)
        torch.save(result, Path(out) / "result.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    world = 2
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(world, _free_port(), args.rounds, folder), nprocs=world)
        result = torch.load(Path(folder) / "result.pt")
    one, two, alone = result["one"], result["two"], result["alone"]
    model = gpt_with_gradients()
    matrices = [p for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2]
    minimum = sum(p.numel() * p.element_size() for p in matrices)
    sent = result["sent"]
    print(
        f"GPT stack {GPT_SHAPE}: {len(matrices)} block matrices on the Spectral LMO, "
        f"torch {torch.__version__}, gloo, 1 thread per rank"
    )
    print(
        f"muon step (median): 1 rank {one * 1e3:.1f} ms (while the other core runs the same), "
        f"2 ranks {two * 1e3:.1f} ms; 1 rank with the other process idle {alone * 1e3:.1f} ms"
    )
    print(f"dist_muon_2rank_vs_1rank: {two / one:.4f}  (target <= 0.65)")
    print(
        f"bytes sent per step: {sent / 2**20:.2f} MiB per rank, {world * sent / 2**20:.2f} MiB "
        f"in all, minimum {minimum / 2**20:.2f} MiB (the results' size once): "
        f"{world * sent / minimum:.3f}x; {result['calls']} all-gather call(s) per step"
    )
    print(f"load average {os.getloadavg()[0]:.1f} (timings are noisy on a busy machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
