"""Throughput of everyscale's training loop against a bare PyTorch loop, measured in one run.

Both loops train the same GPT (width 128, depth 4, 4 heads, context 128, batch 32 by default)
on the same Shakespeare batches (the stdlib corpus where tinyshakespeare is absent) with the
same optimizer (``torch.optim.AdamW``, so only the loop differs) on the same number of CPU
threads. The bare loop is the minimum a training step
needs: sample a batch, forward, cross-entropy, backward, optimizer step. ``everyscale.train.run``
adds the schedule, the loss sync and finiteness check, the metrics line, the progress-bar
bookkeeping and the signal check.

Pairing, because the machine is shared: after each step of ``run()`` its ``callback`` takes
one step of the bare loop (a second model, optimizer and generator), so every pair of steps
meets the same load from other processes. ``run()``'s step time is the difference of its
metrics clock between consecutive steps minus the bare step run in between. The first pair
(warm-up) and the last (it includes the final evaluation) are left out.

Prints:
    loop_overhead: R      median over step pairs of (run()'s step time / bare step time)
                          (target <= 1.05)
    tokens_per_second: T  of run() (median step time), and of the bare loop for reference

    .venv/bin/python benchmarks/train_throughput.py [--steps 12 --threads 2]
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
from everyscale.train.data import shakespeare_path


def text_data() -> str:
    """tinyshakespeare when it is present (``../shared/data``), else the stdlib corpus."""
    try:
        shakespeare_path()
    except FileNotFoundError:
        return "stdlib"
    return "shakespeare"


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3)


class BareLoop:
    """The plainest PyTorch training step on the same model, data and optimizer as ``config``."""

    def __init__(self, config: TrainConfig):
        self.dataset = load_dataset(
            config.data, context=config.context, max_val_windows=config.val_windows
        )
        torch.manual_seed(config.seed)
        self.model = build_model(
            "gpt",
            width=config.width,
            depth=config.depth,
            heads=config.heads,
            context=config.context,
            vocab=self.dataset.vocab_size,
        )
        self.optimizer = make_optimizer(self.model)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.batch_size = config.batch_size

    def step(self) -> float:
        """One training step; returns its wall-clock seconds."""
        start = time.perf_counter()
        x, y = self.dataset.sample_batch(self.batch_size, self.generator)
        logits = self.model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def paired_step_times(config: TrainConfig) -> tuple[list[float], list[float]]:
    """``(ours, bare)``: per-step seconds of ``run()`` and of the bare loop, interleaved."""
    bare = BareLoop(config)
    bare_times: list[float] = []
    run(
        config,
        optimizer_factory=make_optimizer,
        callback=lambda row: bare_times.append(bare.step()),
    )
    with open(Path(config.out) / "metrics.jsonl") as f:
        seconds = [json.loads(line)["seconds"] for line in f]
    # Between the clock readings of steps k and k+1 lie the bare step k and our step k+1.
    ours = [b - a - bare_times[k] for k, (a, b) in enumerate(itertools.pairwise(seconds))]
    # ours[k] is our step k+2, paired with the bare step taken right after it (bare_times[k+1]);
    # step 1 (warm-up) is in neither list, and the last pair is dropped (our last step
    # includes the final evaluation).
    return ours[:-1], bare_times[1:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--progress-bar", action="store_true", help="time run() with its bar on")
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3 (warm-up and final pairs are dropped)")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            model="gpt",
            data=text_data(),
            width=args.width,
            depth=args.depth,
            heads=4,
            context=args.context,
            steps=args.steps,
            batch_size=args.batch_size,
            val_windows=32,
            threads=args.threads,
            quiet=not args.progress_bar,
            out=str(Path(tmp) / "run"),
        )
        ours, bare = paired_step_times(config)

    ratios = [o / b for o, b in zip(ours, bare)]
    tokens_per_step = args.batch_size * args.context
    step_ours, step_bare = statistics.median(ours), statistics.median(bare)
    print(
        f"gpt width={args.width} depth={args.depth} context={args.context} "
        f"batch={args.batch_size} threads={args.threads} adamw; {len(ratios)} step pairs"
    )
    print(f"step_seconds: ours {step_ours:.4f}  bare {step_bare:.4f} (medians)")
    print(f"loop_overhead: {statistics.median(ratios):.3f}")
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"  pair ratios: quartiles {quartiles[0]:.3f} / {quartiles[1]:.3f} / {quartiles[2]:.3f}")
    print(f"tokens_per_second: {tokens_per_step / step_ours:,.0f}")
    print(f"tokens_per_second_bare: {tokens_per_step / step_bare:,.0f}")


if __name__ == "__main__":
    main()
