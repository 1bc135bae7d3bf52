"""Step time and state memory of shampoo, soap and normuon against published peers, one run.

The parameters are those of everyscale's GPT (4 blocks, width 256, vocab 256, as in
``optim_step.py``) with fixed random gradients, on ``--threads`` CPU threads (2 by default).
Every optimizer preconditions the 24 block matrices and runs AdamW on the rest (embedding,
head, norm gains): ours through the presets, the peers as their documentation suggests, with
``torch.optim.AdamW(foreach=True)`` beside them. Peers:

- ``pytorch_optimizer.Shampoo`` (Gupta et al.'s Shampoo; inverse roots by SVD),
- ``heavyball.SOAP`` (without ``torch.compile``, which on a CPU costs minutes of compilation
  before the first step) and ``pytorch_optimizer.SOAP``.

The step time is the mean over windows of ``--every`` steps (10 by default: the roots or the
bases are recomputed once per window, so the window holds the amortized cost), the median over
``--rounds`` windows, run in turn so that a drifting machine load hits every optimizer alike.
The state memory is the bytes of the distinct tensors in each optimizer's ``state``. Printed,
as ratios against the faster (or smaller) peer measured in the same run:

``shampoo_time_vs_peer``, ``shampoo_state_vs_peer``
    our ``shampoo`` (Adam grafting, momentum 0.9) against ``pytorch_optimizer.Shampoo``
    (momentum 0.9, no grafting). Targets: <= 1.0 and <= 1.0.
``soap_time_vs_peer``, ``soap_state_vs_peer``
    our ``soap`` against the faster of ``heavyball.SOAP`` and ``pytorch_optimizer.SOAP``.
    Targets: <= 1.0 and <= 1.0.
``normuon_time_vs_muon``
    our ``normuon`` against our ``muon`` preset (no published NorMuon installs from the
    package registry): the price of the row normalization.

Run:

    .venv/bin/python benchmarks/adaptive_step.py
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

from everyscale.optim import optimizer
from everyscale.train.models import build_model

GPT_SHAPE = {"width": 256, "depth": 4, "heads": 4, "context": 64, "vocab": 256}


def gpt_with_gradients(seed: int = 0) -> nn.Module:
    """everyscale's GPT at ``GPT_SHAPE`` with a fixed random gradient on every parameter."""
    torch.manual_seed(seed)
    model = build_model("gpt", **GPT_SHAPE)
    generator = torch.Generator().manual_seed(seed + 1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator) * 1e-2
    return model


def twin(model: nn.Module) -> nn.Module:
    """A copy with equal parameters and gradients."""
    copied = copy.deepcopy(model)
    for a, b in zip(model.parameters(), copied.parameters()):
        b.grad = a.grad.clone()
    return copied


def split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The block matrices (preconditioned) and the rest (AdamW)."""
    hidden = [p for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2]
    ids = {id(p) for p in hidden}
    return hidden, [p for p in model.parameters() if id(p) not in ids]


def with_adamw(model: nn.Module, make: Callable[[list], torch.optim.Optimizer]) -> list:
    """A peer on the block matrices plus AdamW(foreach) on the rest."""
    hidden, rest = split(model)
    return [make(hidden), torch.optim.AdamW(rest, lr=1e-3, foreach=True)]


def state_bytes(optimizers: list[torch.optim.Optimizer]) -> int:
    """Bytes of the distinct tensors held in the optimizers' state (nested lists/dicts too)."""
    seen: dict[int, int] = {}

    def visit(value: object) -> None:
        if isinstance(value, torch.Tensor):
            seen[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    for opt in optimizers:
        for state in opt.state.values():
            visit(state)
    return sum(seen.values())


def stepper(optimizers: list[torch.optim.Optimizer], window: int) -> Callable[[], None]:
    """``window`` steps; the gradients are put back before each (heavyball frees them)."""
    grads = [(p, p.grad) for opt in optimizers for g in opt.param_groups for p in g["params"]]

    def run() -> None:
        for _ in range(window):
            for p, grad in grads:
                p.grad = grad
            for opt in optimizers:
                opt.step()

    return run


def windows(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of each run's wall time, the runs taken in turn."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def build(every: int) -> dict[str, list[torch.optim.Optimizer]]:
    import heavyball
    import pytorch_optimizer

    heavyball.utils.compile_mode = None  # eager: compiling on a CPU takes minutes
    model = gpt_with_gradients()
    ours = {
        name: [optimizer(twin(model), name, precondition_every=every)]
        for name in ("shampoo", "soap")
    }
    ours["normuon"] = [optimizer(twin(model), "normuon")]
    ours["muon"] = [optimizer(twin(model), "muon")]
    peers = {
        "pytorch_optimizer.Shampoo": with_adamw(
            twin(model),
            lambda ps: pytorch_optimizer.Shampoo(
                ps, lr=1e-3, momentum=0.9, preconditioning_compute_steps=every
            ),
        ),
        "heavyball.SOAP": with_adamw(
            twin(model),
            lambda ps: heavyball.SOAP(ps, lr=3e-3, precondition_frequency=every),
        ),
        "pytorch_optimizer.SOAP": with_adamw(
            twin(model),
            lambda ps: pytorch_optimizer.SOAP(ps, lr=3e-3, precondition_frequency=every),
        ),
    }
    return {**ours, **peers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--every", type=int, default=10, help="precondition_every (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="timed windows (default 3)")
    args = parser.parse_args()
    for name in ("threads", "every", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    wall = time.perf_counter()

    optimizers = build(args.every)
    runs = {name: stepper(opts, args.every) for name, opts in optimizers.items()}
    print(f"GPT stack {GPT_SHAPE}, {args.threads} threads, precondition_every={args.every}")
    for run in runs.values():  # warm-up window: state allocated, decompositions done
        run()
    memory = {name: state_bytes(opts) for name, opts in optimizers.items()}
    times = windows(runs, args.rounds)
    print(f"{'optimizer':28s} {'step ms':>9s} {'state MiB':>10s}")
    for name in runs:
        step_ms = times[name] / args.every * 1e3
        print(f"{name:28s} {step_ms:9.2f} {memory[name] / 2**20:10.2f}")

    shampoo_peer = "pytorch_optimizer.Shampoo"
    soap_peers = ("heavyball.SOAP", "pytorch_optimizer.SOAP")
    fastest_soap = min(soap_peers, key=lambda n: times[n])
    smallest_soap = min(soap_peers, key=lambda n: memory[n])
    print(f"shampoo_time_vs_peer: {times['shampoo'] / times[shampoo_peer]:.3f}")
    print(f"shampoo_state_vs_peer: {memory['shampoo'] / memory[shampoo_peer]:.3f}")
    print(f"soap_time_vs_peer: {times['soap'] / times[fastest_soap]:.3f} ({fastest_soap})")
    print(f"soap_state_vs_peer: {memory['soap'] / memory[smallest_soap]:.3f} ({smallest_soap})")
    print(f"normuon_time_vs_muon: {times['normuon'] / times['muon']:.3f}")
    print(
        f"benchmark wall time: {time.perf_counter() - wall:.0f} s; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other processes on the "
        f"machine skew the ratios)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
