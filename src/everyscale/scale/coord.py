"""The coordinate check: does every layer's output keep its size across widths while training?

muP's diagnostic [Y, TP5 §D]: build the model at several widths, take a few optimizer steps
with the same learning rate, and record the root-mean-square of each layer's output
(``sqrt(mean(y^2))``, the size of a typical coordinate) after every step. In a parametrization
that transfers, the curves are flat in width; in one that does not, some layer's output
grows or shrinks with width, visibly after a step or two.

The bar, after Yang et al.'s coordinate check (Tensor Programs V): for ``scion``, the
per-layer output RMS after steps 1-3 changes by less than 1.2x across widths
(:meth:`CoordResult.max_spread`).

Reference: [Y] Yang et al., *Tensor Programs V* (2022), the "coordinate check".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from everyscale.scale.parametrization import find_blocks


@dataclass
class CoordResult:
    """``rms[width][step][layer]``: a layer's output RMS at ``step`` (0 = initialization)."""

    widths: list[int]
    steps: int
    rms: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    lr: float | None = None
    label: str = ""

    @property
    def layers(self) -> list[str]:
        return list(self.rms[self.widths[0]][0])

    def spread(self, step: int) -> dict[str, float]:
        """Per layer: largest over smallest RMS across the widths at ``step`` (1 = flat).

        A non-finite or zero RMS at any width gives ``inf``.
        """
        out = {}
        for layer in self.layers:
            values = [self.rms[w][step][layer] for w in self.widths]
            if not all(math.isfinite(v) and v > 0 for v in values):
                out[layer] = math.inf
            else:
                out[layer] = max(values) / min(values)
        return out

    def max_spread(self, steps: Iterable[int] = (1, 2, 3)) -> tuple[float, str, int]:
        """The worst ``(spread, layer, step)`` over the given steps."""
        worst = (0.0, "", 0)
        for step in steps:
            if step > self.steps:
                raise ValueError(f"steps: the check ran {self.steps} steps, asked for step {step}")
            for layer, value in self.spread(step).items():
                if value > worst[0]:
                    worst = (value, layer, step)
        return worst

    def to_json(self) -> dict:
        spreads = {str(s): self.spread(s) for s in range(self.steps + 1)}
        worst, layer, step = self.max_spread(range(1, self.steps + 1)) if self.steps else (1, "", 0)
        return {
            "lr": self.lr,
            "widths": self.widths,
            "steps": self.steps,
            "rms": {str(w): v for w, v in self.rms.items()},
            "spread": spreads,
            "max_spread_after_step_1": {"spread": worst, "layer": layer, "step": step},
        }


def _rms(output: object) -> float:
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        return math.nan
    x = output.detach().to(torch.float64)
    return float(x.square().mean().sqrt())


def _watched_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that own parameters directly, plus each repeated block (the residual stream)."""
    blocks = find_blocks(model)
    block_names = {f"{blocks[0]}.{i}" for i in range(blocks[1])} if blocks else set()
    return {
        name: m
        for name, m in model.named_modules()
        if name and (name in block_names or any(True for _ in m.parameters(recurse=False)))
    }


def default_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dimension (classifier logits or per-token logits)."""
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def coord_check(
    build_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int = 3,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = default_loss,
    seeds: int = 1,
) -> CoordResult:
    """Record each layer's output RMS at initialization and after each of ``steps`` steps.

    Args:
        build_model: width -> model (same architecture, so the same layer names, at every width).
        widths: at least two widths.
        make_optimizer: model -> optimizer, with the learning rate you want to check.
        batches: ``(input, target)`` pairs; step ``t`` trains on ``batches[t % len]`` and every
            measurement is a forward pass on ``batches[0]``, so all widths see the same data.
        steps: optimizer steps to take.
        loss_fn: ``(output, target) -> scalar`` loss; cross-entropy by default.
        seeds: models per width (``torch.manual_seed(0..seeds-1)`` before each build); the
            RMS is averaged over them, as muP's coordinate check does, so that the finite-width
            fluctuations of one random draw do not pass for a trend.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2:
        raise ValueError("widths: give at least two widths to compare, e.g. 32,64,128")
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    if not batches:
        raise ValueError("batches: give at least one (input, target) batch")
    result = CoordResult(widths=widths, steps=steps)
    if seeds < 1:
        raise ValueError(f"seeds: must be >= 1, got {seeds}")
    for width in widths:
        runs = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = build_model(width)
            optimizer = make_optimizer(model)
            runs.append(_train_and_measure(model, optimizer, batches, steps, loss_fn, width))
        result.rms[width] = [
            {layer: sum(r[step][layer] for r in runs) / seeds for layer in runs[0][step]}
            for step in range(steps + 1)
        ]
    return result


def _train_and_measure(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    width: int,
) -> list[dict[str, float]]:
    """Per step (0 = before training): layer name -> output RMS on ``batches[0]``."""
    record: dict[str, float] = {}

    def hook(name: str) -> Callable:
        return lambda _module, _inputs, output: record.__setitem__(name, _rms(output))

    def measure() -> dict[str, float]:
        record.clear()
        with torch.no_grad():
            model(batches[0][0])
        return dict(record)

    hooks = [m.register_forward_hook(hook(name)) for name, m in _watched_modules(model).items()]
    try:
        per_step = [measure()]
        for step in range(steps):
            x, y = batches[step % len(batches)]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"coord_check: loss is {loss.item()} at width {width}, step {step + 1}; "
                    "lower the learning rate"
                )
            loss.backward()
            optimizer.step()
            per_step.append(measure())
    finally:
        for h in hooks:
            h.remove()
    return per_step
