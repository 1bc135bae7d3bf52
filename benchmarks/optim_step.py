"""Time one optimizer step on a GPT-shaped stack and on MoE experts, against peers in the same run.

The GPT parameters are those of everyscale's GPT (4 blocks, width 256, vocab 256: q, k, v, o
and the two MLP matrices per block, token embedding, head, RMSNorm gains), with fixed random
gradients. Everything runs on ``--threads`` CPU threads (2 by default); each figure is a median
over repeated steps after a warm-up step. First the machine's float32 and bfloat16 ``torch.mm``
rates (``--mm-size`` square) and the polar-factor dtype ``ns_dtype="auto"`` picks on it
(``everyscale.optim.polar_dtype``). Printed, as ratios so that a busy machine affects both
sides alike:

``muon_vs_torch_muon``
    our ``muon`` preset's step time (its defaults: Polar Express, 5 steps, in the chosen dtype)
    over ``torch.optim.Muon`` (bfloat16 Newton-Schulz, one matrix at a time) on the block
    matrices plus ``torch.optim.AdamW(foreach=True)`` on the rest (the recipe torch documents),
    with the orthogonality error of each step's update against the exact SVD polar factor
    (max over the matrices; ours must be no larger). Target: <= 0.7.
``ns_efficiency``
    FLOP rate of our whole muon step (its matrix-product FLOPs, counted by
    ``torch.utils.flop_counter``, over the step's median time) divided by the *faster* of the
    float32 and bfloat16 ``torch.mm`` rates. Target: >= 0.75.
``(float32)`` lines
    the same with ``ns_dtype="float32"``: what a machine without bfloat16 units runs (there
    ``auto`` picks float32), against torch's bfloat16 Muon on *this* machine (a harder peer
    than on such a machine, where torch's bfloat16 is 50-100x slower), and its efficiency
    against the float32 rate.
``moe_vs_expert_loop``
    a step of a ``spectral`` group on one ``(64, 64, 256)`` tensor (64 fine-grained experts,
    as in Qwen3-MoE or OLMoE; one batched polar call) over a loop of the 64 per-expert polar
    factors in the same method and dtype. Target: <= 0.3.
``moe_large_ns_efficiency``
    ``ns_efficiency`` of that step on 8 large experts ``(8, 256, 1024)``. Target: >= 0.75.
``adamw_vs_torch_adamw``
    our ``adamw`` preset over ``torch.optim.AdamW(foreach=True)``, steps interleaved so that
    drifting load hits both. Target: <= 1.1.

Run:

    PYTHONPATH=src .venv/bin/python benchmarks/optim_step.py

On a machine shared with other processes everything slows down, and unevenly: a two-thread
OpenMP region stalls whenever one of its threads is descheduled, so many small products suffer
far more than a few large ones, and the ratios move. The load average is printed at the end.
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


def square_matmul(size: int, dtype: torch.dtype) -> tuple[Callable[[], object], int]:
    """A ``size x size`` ``torch.mm`` call in ``dtype`` and its FLOPs (``2 size^3``): the peer."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    return (lambda: torch.mm(a, b, out=out)), 2 * size**3


def matmul_rates(size: int, rounds: int) -> dict[str, float]:
    """FLOP/s of a square ``torch.mm`` in float32 and in bfloat16, measured in turns."""
    calls = {name: square_matmul(size, getattr(torch, name)) for name in ("float32", "bfloat16")}
    times = interleaved_medians({name: call for name, (call, _) in calls.items()}, rounds)
    return {name: flops / times[name] for name, (_, flops) in calls.items()}


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


def gpt_muon(args: argparse.Namespace, peak: float, rates: dict[str, float]) -> None:
    """Our muon preset (auto dtype, and float32) against torch.optim.Muon + AdamW."""
    from everyscale.optim import optimizer

    model = gpt_with_gradients(seed=0)
    hidden = block_matrices(model)
    print(
        f"GPT stack {GPT_SHAPE}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(hidden)} block matrices"
    )
    steps, errors, flops = {}, {}, {}
    for name, options in (("ours", {}), ("float32", {"ns_dtype": "float32"})):
        twin = clone_with_gradients(model)
        opt = optimizer(twin, "muon", lr=MUON_LR, weight_decay=0.0, **options)
        errors[name] = first_step_errors(twin, opt.step)  # also the warm-up step
        flops[name] = matmul_flops_of(opt.step)
        steps[name] = opt.step
        if name == "ours":
            polar = next(g for g in opt.param_groups if "method" in g["norm_kwargs"])
            print(f"muon polar factor: {polar['norm_kwargs']}")
    if args.torch_muon:
        torch_model = clone_with_gradients(model)
        steps["torch"] = torch_muon_step(torch_model, weight_decay=0.0)
        errors["torch"] = first_step_errors(torch_model, steps["torch"])  # also the warm-up
    else:  # torch's bfloat16 steps can take minutes on a loaded machine
        steps["torch"], errors["torch"] = (lambda: None), [float("nan")]

    # Each round: several of our (short) steps, one of torch's (possibly long) steps.
    ours_calls = max(1, args.reps // args.torch_muon_reps)
    times = interleaved_medians(
        steps,
        rounds=args.torch_muon_reps,
        calls_per_round={"ours": ours_calls, "float32": ours_calls},
        warmup=0,
    )
    print(
        f"muon step: ours {times['ours'] * 1e3:.1f} ms, ours float32 "
        f"{times['float32'] * 1e3:.1f} ms, torch.optim.Muon(+AdamW) {times['torch'] * 1e3:.1f} ms"
    )
    print(
        f"orthogonality error vs SVD polar factor (max over {len(hidden)} matrices): "
        f"ours {max(errors['ours']):.4f}, ours float32 {max(errors['float32']):.4f}, "
        f"torch {max(errors['torch']):.4f}"
    )
    if args.torch_muon:
        print(f"muon_vs_torch_muon: {times['ours'] / times['torch']:.4f}")
        print(f"muon_vs_torch_muon (float32): {times['float32'] / times['torch']:.4f}")
    expected = sum(newton_schulz_flops(p.shape, 5) for p in hidden.values())
    print(
        f"muon step matmul FLOPs {flops['ours'] / 1e9:.2f} G (5 quintic steps on the block "
        f"matrices: {expected / 1e9:.2f} G)"
    )
    print(f"ns_efficiency: {flops['ours'] / times['ours'] / peak:.3f}")
    print(
        f"ns_efficiency (float32, against the float32 rate): "
        f"{flops['float32'] / times['float32'] / rates['float32']:.3f}"
    )


def expert_errors(grad: torch.Tensor, update: torch.Tensor) -> float:
    """Max over experts of the orthogonality error of ``update`` against polar(``grad``)."""
    return max(orthogonality_error(update[e], torch.zeros_like(update[e]), grad[e])
               for e in range(grad.shape[0]))  # fmt: skip


def moe_step(shape: tuple[int, int, int], dtype: str) -> tuple[Callable[[], None], torch.Tensor]:
    """A muon-like step (Spectral LMO, Polar Express) on one ``(E, m, n)`` expert tensor."""
    from everyscale.optim import NormOptimizer

    generator = torch.Generator().manual_seed(3)
    experts = nn.Parameter(torch.randn(shape, generator=generator) * 0.02)
    experts.grad = torch.randn(shape, generator=generator) * 1e-2
    opt = NormOptimizer(
        [experts], lr=MUON_LR, norm="spectral", momentum=0.95, nesterov=True,
        norm_kwargs={"method": "polar_express", "steps": 5, "dtype": dtype},
    )  # fmt: skip
    return opt.step, experts


def moe(args: argparse.Namespace, peak: float, dtype: str) -> None:
    """Fine-grained experts against a loop over them; large experts' efficiency."""
    fine = (64, 64, 256)
    step, experts = moe_step(fine, dtype)
    before = experts.detach().clone()
    step()
    error = expert_errors(experts.grad, before - experts.detach())
    grads = experts.grad

    def loop() -> None:
        for e in range(fine[0]):
            polar_factor(grads[e], method="polar_express", steps=5, dtype=dtype)

    times = interleaved_medians({"step": step, "loop": loop}, args.reps)
    print(
        f"MoE {fine[0]} experts of {fine[1]}x{fine[2]} ({dtype}): step {times['step'] * 1e3:.2f} "
        f"ms, loop of per-expert polar factors {times['loop'] * 1e3:.2f} ms; orthogonality "
        f"error (max over experts) {error:.4f}"
    )
    print(f"moe_vs_expert_loop: {times['step'] / times['loop']:.3f}")

    large = (8, 256, 1024)
    step, experts = moe_step(large, dtype)
    flops = matmul_flops_of(step)
    time_large = interleaved_medians({"step": step}, args.reps)["step"]
    print(
        f"MoE {large[0]} experts of {large[1]}x{large[2]} ({dtype}): step "
        f"{time_large * 1e3:.2f} ms, {flops / time_large / 1e9:.0f} GFLOP/s"
    )
    print(f"moe_large_ns_efficiency: {flops / time_large / peak:.3f}")


def adamw(args: argparse.Namespace) -> None:
    """Our adamw preset against torch.optim.AdamW(foreach=True)."""
    from everyscale.optim import optimizer

    model = gpt_with_gradients(seed=0)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--reps", type=int, default=10, help="timed steps for our optimizers")
    parser.add_argument(
        "--torch-muon-reps", type=int, default=3, help="timed torch.optim.Muon steps (default 3)"
    )
    parser.add_argument(
        "--torch-muon",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time torch.optim.Muon (--no-torch-muon: skip it; the muon_vs_torch_muon lines "
        "are then meaningless)",
    )
    parser.add_argument("--adamw-reps", type=int, default=40, help="timed AdamW step pairs")
    parser.add_argument("--mm-size", type=int, default=2048, help="side of the reference mm")
    args = parser.parse_args()
    for name in ("threads", "reps", "torch_muon_reps", "adamw_reps", "mm_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")

    from everyscale.optim.polar_dtype import choose_polar_dtype

    torch.set_num_threads(args.threads)
    wall_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {args.threads} threads")
    rates = matmul_rates(args.mm_size, args.reps)
    faster = max(rates, key=rates.get)
    print(
        f"torch.mm {args.mm_size}^2: float32 {rates['float32'] / 1e9:.1f} GFLOP/s, bfloat16 "
        f"{rates['bfloat16'] / 1e9:.1f} GFLOP/s (efficiencies below are against {faster})"
    )
    choice = choose_polar_dtype("cpu")
    print(f"ns_dtype='auto' picks {choice.dtype}: {choice.reason}")
    gpt_muon(args, rates[faster], rates)
    moe(args, rates[faster], choice.dtype)
    adamw(args)
    print(
        f"benchmark wall time: {time.perf_counter() - wall_start:.0f} s; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other processes on the "
        f"machine skew the ratios)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
