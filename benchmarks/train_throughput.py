"""Throughput of everyscale's training loop against a bare PyTorch loop, measured in one run.

Both loops train the same GPT (width 128, depth 4, 4 heads, context 128 by default) on the
same Shakespeare batches with the same optimizer (``torch.optim.AdamW``, so only the loop
differs) on the same number of CPU threads. The bare loop is the minimum a training step
needs: sample a batch, forward, cross-entropy, backward, optimizer step. ``everyscale.train.run``
adds the schedule, the loss sync and finiteness check, the metrics line, the progress bar
bookkeeping and the signal check.

Runs come in pairs (ours then bare, then bare then ours, ...) so that load from other
processes hits both alike; a run's step time is the median over its timed steps (the first
step, a warm-up, and the last one, which includes the final evaluation, are left out).

Prints:
    loop_overhead: R      median over the pairs of (run()'s step time / the bare loop's)
                          (target <= 1.05)
    tokens_per_second: T  of run(), and of the bare loop for reference

    .venv/bin/python benchmarks/train_throughput.py [--repeats 3 --steps 8 --threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from everyscale.train import TrainConfig, build_model, load_dataset, run


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3)


def bare_loop(config: TrainConfig) -> list[float]:
    """Per-step seconds of the plainest PyTorch loop on the same model, data and optimizer."""
    dataset = load_dataset(config.data, context=config.context, max_val_windows=config.val_windows)
    torch.manual_seed(config.seed)
    model = build_model(
        "gpt",
        width=config.width,
        depth=config.depth,
        heads=config.heads,
        context=config.context,
        vocab=dataset.vocab_size,
    )
    optimizer = make_optimizer(model)
    generator = torch.Generator().manual_seed(config.seed)
    times = []
    for _ in range(config.steps):
        start = time.perf_counter()
        x, y = dataset.sample_batch(config.batch_size, generator)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def our_loop(config: TrainConfig) -> list[float]:
    """Per-step seconds of ``everyscale.train.run``, from its own metrics.jsonl clock."""
    run(config, optimizer_factory=make_optimizer)
    with open(Path(config.out) / "metrics.jsonl") as f:
        seconds = [json.loads(line)["seconds"] for line in f]
    # The first row's time includes the first step only; differences give each later step.
    return [seconds[0]] + [b - a for a, b in itertools.pairwise(seconds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--progress-bar", action="store_true", help="time run() with its bar on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours, bare, pair_ratios = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            config = TrainConfig(
                model="gpt",
                data="shakespeare",
                width=args.width,
                depth=args.depth,
                heads=4,
                context=args.context,
                steps=args.steps,
                batch_size=args.batch_size,
                val_windows=32,
                threads=args.threads,
                quiet=not args.progress_bar,
                out=str(Path(tmp) / f"run{repeat}"),
            )
            # Drop each run's first step (warm-up) and last step (final evaluation); swap the
            # order every repeat so neither loop always runs first.
            if repeat % 2 == 0:
                ours_now, bare_now = our_loop(config)[1:-1], bare_loop(config)[1:-1]
            else:
                bare_now, ours_now = bare_loop(config)[1:-1], our_loop(config)[1:-1]
            ours += ours_now
            bare += bare_now
            pair_ratios.append(statistics.median(ours_now) / statistics.median(bare_now))

    tokens_per_step = args.batch_size * args.context
    step_ours, step_bare = statistics.median(ours), statistics.median(bare)
    print(
        f"gpt width={args.width} depth={args.depth} context={args.context} "
        f"batch={args.batch_size} threads={args.threads} adamw; {len(ours)} timed steps each"
    )
    print(f"step_seconds: ours {step_ours:.4f}  bare {step_bare:.4f}")
    print(f"loop_overhead: {statistics.median(pair_ratios):.3f}")
    print(
        "  per repeat: "
        + ", ".join(f"{r:.3f}" for r in pair_ratios)
        + f"; ratio of the pooled medians {step_ours / step_bare:.3f}"
    )
    print(f"tokens_per_second: {tokens_per_step / step_ours:,.0f}")
    print(f"tokens_per_second_bare: {tokens_per_step / step_bare:,.0f}")


if __name__ == "__main__":
    main()
