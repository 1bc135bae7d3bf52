"""Time one optimizer step on a GPT-shaped stack, against peers measured in the same run.

The parameters are those of everyscale's GPT (4 blocks, width 256, vocab 256: q, k, v, o and
the two MLP matrices per block, token embedding, head, RMSNorm gains), with fixed random
gradients. Everything runs on ``--threads`` CPU threads (2 by default); each figure is a median
over repeated steps after a warm-up step. Printed, as ratios so that a busy machine affects
both sides alike:

``muon_vs_torch_muon``
    our ``muon`` preset's step time (its default Newton-Schulz dtype, float32 on the CPU)
    over ``torch.optim.Muon`` on the block matrices plus ``torch.optim.AdamW(foreach=True)``
    on the rest (the recipe torch documents), with the orthogonality error of each step's
    update against the exact SVD polar factor. ``torch.optim.Muon`` always runs Newton-Schulz
    in bfloat16, which CPUs without bfloat16 units compute 50-100x slower than float32.
    Target: <= 0.1.
``ns_efficiency``
    FLOP rate of our whole muon step (its matrix-product FLOPs, counted by
    ``torch.utils.flop_counter``, over the step's median time) divided by the float32 rate of
    a large square ``torch.mm`` measured in the same run. Target: >= 0.7.
    ``polar_efficiency`` is the same ratio for bare ``polar_factor`` calls on the gradients
    stacked by shape (no optimizer around it).
``adamw_vs_torch_adamw``
    our ``adamw`` preset over ``torch.optim.AdamW(foreach=True)``, steps interleaved so that
    drifting load hits both. Target: <= 1.1.

Run:

    .venv/bin/python benchmarks/optim_step.py

Most of the run time is torch's three bfloat16 Muon steps (12-17 s each on an idle 2-core
machine, so about a minute in all). On a machine shared with other processes everything
slows down, and unevenly: a two-thread OpenMP region stalls whenever one of its threads is
descheduled, so many small products (one 256 x 256 matrix at a time) suffer far more than a
few large ones. ``ns_efficiency`` then falls well below its idle-machine value; the
``foreach=True`` line (same-shape matrices in one batched call) shows how much batching
recovers. The load average is printed at the end for that reason.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from everyscale.optim.polar import newton_schulz_flops, polar_factor
from everyscale.train.models import build_model

GPT_SHAPE = {"width": 256, "depth": 4, "heads": 4, "context": 64, "vocab": 256}
MUON_LR = 0.02
ADAMW_LR = 1e-3


def interleaved_medians(
    steps: dict[str, Callable[[], object]],
    rounds: int,
    calls_per_round: dict[str, int] | None = None,
    warmup: int = 1,
) -> dict[str, float]:
    """Median wall time of each step, calling them in turn so that all see the same load.

    Each of ``rounds`` rounds calls every step ``calls_per_round[name]`` times (1 by default),
    timing each call; ``warmup`` untimed rounds come first. On a machine shared with other
    work the load drifts, so a ratio of two medians taken this way is far steadier than a
    ratio of two medians taken one after the other.
    """
    calls = {name: (calls_per_round or {}).get(name, 1) for name in steps}
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            for _ in range(calls[name]):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def square_matmul(size: int) -> tuple[Callable[[], object], int]:
    """A float32 ``size x size`` ``torch.mm`` call and its FLOPs (``2 size^3``): the peer."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    out = torch.empty(size, size)
    return (lambda: torch.mm(a, b, out=out)), 2 * size**3


def gpt_with_gradients(seed: int) -> nn.Module:
    """everyscale's GPT at ``GPT_SHAPE`` with a fixed random gradient on every parameter."""
    torch.manual_seed(seed)
    model = build_model("gpt", **GPT_SHAPE)
    generator = torch.Generator().manual_seed(seed + 1)
    for parameter in model.parameters():
        parameter.grad = torch.randn(parameter.shape, generator=generator) * 1e-2
    return model


def clone_with_gradients(model: nn.Module) -> nn.Module:
    """An independent copy with equal parameters and gradients (optimizer state is per tensor)."""
    twin = copy.deepcopy(model)
    for original, copied in zip(model.parameters(), twin.parameters()):
        copied.grad = original.grad.clone()
    return twin


def block_matrices(model: nn.Module) -> dict[str, nn.Parameter]:
    """The hidden weight matrices (inside the blocks) that both Muon variants orthogonalize."""
    return {
        name: p
        for name, p in model.named_parameters()
        if name.startswith("blocks.") and p.ndim == 2
    }


def orthogonality_error(before: torch.Tensor, after: torch.Tensor, grad: torch.Tensor) -> float:
    """Relative Frobenius distance of the step's direction to the exact polar factor of ``grad``.

    The direction ``D = before - after`` is first rescaled by the least-squares scalar
    ``c = <D, Q> / <D, D>`` so that the learning-rate convention does not enter: what is left,
    ``||c D - Q||_F / ||Q||_F``, measures how far the update's singular values are from equal.
    On the first step from zero momentum (and no weight decay) both Muons move along a multiple
    of ``polar(grad)``.
    """
    direction = (before - after).double()
    exact = polar_factor(grad.double(), method="svd")
    scale = (direction * exact).sum() / (direction * direction).sum()
    return float(
        torch.linalg.matrix_norm(scale * direction - exact) / torch.linalg.matrix_norm(exact)
    )


def first_step_errors(model: nn.Module, step: Callable[[], object]) -> list[float]:
    """Take one step and return the orthogonality error of every block matrix's update."""
    matrices = block_matrices(model)
    before = {name: p.detach().clone() for name, p in matrices.items()}
    step()
    return [orthogonality_error(before[name], p.detach(), p.grad) for name, p in matrices.items()]


def matmul_flops_of(step: Callable[[], object]) -> int:
    """Matrix-product FLOPs of one call of ``step``, counted by torch's FLOP counter."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def stacked_block_gradients(model: nn.Module) -> list[torch.Tensor]:
    """The block matrices' gradients stacked by shape, as a batched optimizer hands them over."""
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for p in block_matrices(model).values():
        by_shape.setdefault(tuple(p.shape), []).append(p.grad)
    return [torch.stack(grads) for grads in by_shape.values()]


def torch_muon_step(model: nn.Module, weight_decay: float) -> Callable[[], None]:
    """torch's documented recipe: Muon on hidden matrices, AdamW(foreach) on everything else."""
    hidden = list(block_matrices(model).values())
    hidden_ids = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if id(p) not in hidden_ids]
    muon = torch.optim.Muon(hidden, lr=MUON_LR, weight_decay=weight_decay)
    adamw = torch.optim.AdamW(rest, lr=ADAMW_LR, weight_decay=weight_decay, foreach=True)

    def step() -> None:
        muon.step()
        adamw.step()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--reps", type=int, default=10, help="timed steps for our optimizers")
    parser.add_argument(
        "--torch-muon-reps",
        type=int,
        default=2,
        help="timed torch.optim.Muon steps (each takes seconds in bfloat16; default 2)",
    )
    parser.add_argument("--adamw-reps", type=int, default=40, help="timed AdamW step pairs")
    parser.add_argument("--mm-size", type=int, default=2048, help="side of the reference mm")
    args = parser.parse_args()
    for name in ("threads", "reps", "torch_muon_reps", "adamw_reps", "mm_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")

    torch.set_num_threads(args.threads)
    wall_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    model = gpt_with_gradients(seed=0)
    hidden = block_matrices(model)
    print(
        f"GPT stack {GPT_SHAPE}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(hidden)} block matrices; torch {torch.__version__}, {args.threads} threads"
    )
    matmul, matmul_flops = square_matmul(args.mm_size)

    # --- polar_factor alone, on the block gradients stacked by shape ----------------------
    stacks = stacked_block_gradients(model)
    polar_flops = sum(newton_schulz_flops(stack.shape, 5) for stack in stacks)
    times = interleaved_medians(
        {"mm": matmul, "polar": lambda: [polar_factor(stack) for stack in stacks]}, args.reps
    )
    mm_rate = matmul_flops / times["mm"]
    print(f"float32 torch.mm {args.mm_size}^2: {mm_rate / 1e9:.1f} GFLOP/s")
    print(
        f"polar_factor on {len(stacks)} stacks: {times['polar'] * 1e3:.1f} ms, "
        f"{polar_flops / times['polar'] / 1e9:.1f} GFLOP/s"
    )
    print(f"polar_efficiency: {polar_flops / times['polar'] / mm_rate:.3f}")

    try:
        from everyscale.optim import optimizer
    except ImportError as error:  # the presets live in another module of the package
        print(f"muon_vs_torch_muon: n/a (everyscale.optim.optimizer unavailable: {error})")
        return 1

    # --- muon: ours (default dtype) against torch.optim.Muon + AdamW -----------------------
    ours_model = clone_with_gradients(model)
    ours = optimizer(ours_model, "muon", lr=MUON_LR, weight_decay=0.0)
    ours_errors = first_step_errors(ours_model, ours.step)  # also the warm-up step
    step_flops = matmul_flops_of(ours.step)

    # The same preset with foreach=True, whose same-shape matrices share one batched call.
    batched_model = clone_with_gradients(model)
    batched = optimizer(batched_model, "muon", lr=MUON_LR, weight_decay=0.0, foreach=True)
    batched_errors = first_step_errors(batched_model, batched.step)

    torch_model = clone_with_gradients(model)
    torch_step = torch_muon_step(torch_model, weight_decay=0.0)
    torch_errors = first_step_errors(torch_model, torch_step)  # also the warm-up step

    # Each round: the reference mm, several of our (short) steps, one of torch's (long) steps.
    ours_calls = max(1, args.reps // args.torch_muon_reps)
    times = interleaved_medians(
        {"mm": matmul, "ours": ours.step, "batched": batched.step, "torch": torch_step},
        rounds=args.torch_muon_reps,
        calls_per_round={"mm": 3, "ours": ours_calls, "batched": ours_calls},
        warmup=0,
    )
    mm_rate = matmul_flops / times["mm"]
    expected_flops = sum(newton_schulz_flops(p.shape, 5) for p in hidden.values())
    print(
        f"muon step: ours {times['ours'] * 1e3:.1f} ms, torch.optim.Muon(+AdamW) "
        f"{times['torch'] * 1e3:.1f} ms"
    )
    print(
        f"orthogonality error vs SVD polar factor (max over {len(hidden)} matrices): "
        f"ours {max(ours_errors):.4f}, ours foreach {max(batched_errors):.4f}, "
        f"torch {max(torch_errors):.4f}"
    )
    print(f"muon_vs_torch_muon: {times['ours'] / times['torch']:.4f}")
    print(
        f"muon step matmul FLOPs {step_flops / 1e9:.2f} G (5-step Newton-Schulz on the block "
        f"matrices: {expected_flops / 1e9:.2f} G); torch.mm {mm_rate / 1e9:.1f} GFLOP/s"
    )
    print(f"ns_efficiency: {step_flops / times['ours'] / mm_rate:.3f}")
    print(
        f"muon preset with foreach=True (batched polar calls): "
        f"{times['batched'] * 1e3:.1f} ms, vs torch {times['batched'] / times['torch']:.4f}, "
        f"efficiency {step_flops / times['batched'] / mm_rate:.3f}"
    )

    # --- adamw: ours against torch.optim.AdamW(foreach=True) ---------------------------------
    ours_adamw = optimizer(clone_with_gradients(model), "adamw", lr=ADAMW_LR)
    torch_adamw = torch.optim.AdamW(
        clone_with_gradients(model).parameters(), lr=ADAMW_LR, foreach=True
    )
    adamw_times = interleaved_medians(
        {"ours": ours_adamw.step, "torch": torch_adamw.step}, args.adamw_reps, warmup=2
    )
    print(
        f"adamw step: ours {adamw_times['ours'] * 1e3:.2f} ms, torch.optim.AdamW(foreach) "
        f"{adamw_times['torch'] * 1e3:.2f} ms"
    )
    print(f"adamw_vs_torch_adamw: {adamw_times['ours'] / adamw_times['torch']:.3f}")
    print(
        f"benchmark wall time: {time.perf_counter() - wall_start:.0f} s; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other processes on the "
        f"machine skew the ratios)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
