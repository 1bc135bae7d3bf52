"""The transfer check: sweep the learning rate at several widths (or depths) and compare optima.

muP's standard experiment [Y, Figure 1], sized for a CPU (BRIEF §2): for each optimizer, train
the same architecture at several sizes over a grid of learning rates (powers of 2), same data
and steps, a few seeds. A parametrization *transfers* when

1. the best learning rate moves at most one grid step across the sizes, and
2. at the best learning rate, the bigger model is better (the best loss falls with size).

Diverged runs count as loss ``inf``: they are never dropped, so a learning rate at which any
seed diverges cannot be the best. :func:`analyse` turns run records into the ``transfer.json``
dictionary; :func:`sweep` trains the grid (resumable: a run whose ``summary.json`` exists is
read back, not retrained).

Reference: [Y] Yang et al., *Tensor Programs V* (2022).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence

_POWER = re.compile(r"^\s*([0-9.]+)\s*\^\s*(-?[0-9.]+)\s*$")


def _parse_number(text: str) -> float:
    text = text.strip()
    match = _POWER.match(text)
    try:
        value = float(match.group(1)) ** float(match.group(2)) if match else float(text)
    except (ValueError, OverflowError):
        raise ValueError(
            f"lr-grid: cannot read {text!r}; write numbers (0.01), powers (2^-7), a range of "
            "powers (2^-14:2^-1, optionally :STEP in the exponent) or a comma list of those"
        ) from None
    return value


def parse_lr_grid(text: str) -> list[float]:
    """Read a learning-rate grid: ``"2^-14:2^-1"`` (every power of 2 between, both included),
    ``"2^-10:2^-2:2"`` (exponent step 2), ``"0.001,0.003,0.01"``, or a comma list of these.

    Returns the sorted distinct positive values; an empty grid, a non-positive or non-finite
    value is a ``ValueError``.
    """
    if not text or not text.strip():
        raise ValueError("lr-grid: the grid is empty; give e.g. 2^-10:2^-3 or 0.001,0.01")
    values: list[float] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) == 1:
            values.append(_parse_number(parts[0]))
            continue
        if len(parts) > 3:
            raise ValueError(f"lr-grid: a range is START:END[:STEP], got {item!r}")
        start, end = (_POWER.match(p) for p in parts[:2])
        if not start or not end or start.group(1) != end.group(1):
            raise ValueError(
                f"lr-grid: a range needs two powers of the same base, like 2^-14:2^-1; got {item!r}"
            )
        step = _parse_number(parts[2]) if len(parts) == 3 else 1.0
        if step <= 0:
            raise ValueError(f"lr-grid: the exponent step must be > 0, got {step}")
        base = float(start.group(1))
        low, high = float(start.group(2)), float(end.group(2))
        if low > high:
            low, high = high, low
        count = math.floor((high - low) / step + 1e-9) + 1
        values.extend(base ** (low + i * step) for i in range(count))
    if not values:
        raise ValueError("lr-grid: the grid is empty; give e.g. 2^-10:2^-3 or 0.001,0.01")
    for value in values:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"lr-grid: every learning rate must be finite and > 0, got {value}")
    return sorted(set(values))


def parse_sizes(text: str, name: str) -> list[int]:
    """Read a comma list of positive whole numbers (``--widths 64,128,256``), sorted, distinct."""
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{name}: give whole numbers separated by commas, got {text!r}") from None
    if not sizes:
        raise ValueError(f"{name}: the list is empty; give e.g. 64,128,256")
    if any(s < 1 for s in sizes):
        raise ValueError(f"{name}: every entry must be >= 1, got {text!r}")
    return sorted(set(sizes))


def analyse(
    records: Sequence[dict],
    *,
    axis: str,
    sizes: Sequence[int],
    lrs: Sequence[float],
    seeds: Sequence[int],
    optimizers: Sequence[str],
) -> dict:
    """Summarize a sweep: per optimizer and size, the loss at every learning rate and seed,
    the best learning rate, its shift across sizes, and whether the best loss falls with size.

    Args:
        records: one dict per run with keys ``optimizer, size, lr, seed, loss`` (``loss`` is
            the final validation loss; ``inf`` or ``nan`` for a diverged run).
        axis: ``"width"`` or ``"depth"`` (names the sizes).
        sizes, lrs, seeds, optimizers: the grid; a grid point without a record is an error.

    The mean over seeds is ``inf`` if any seed diverged. ``best_lr_shift_steps`` is the
    largest minus the smallest grid index of the best learning rate over the sizes (with a
    power-of-2 grid, one step is a factor of 2); ``best_at_grid_edge`` flags an optimum on
    the grid's edge, where the true optimum may lie outside the grid.
    """
    lrs = sorted(lrs)
    table: dict[tuple[str, int, float, int], float] = {}
    for r in records:
        loss = float(r["loss"])
        table[(r["optimizer"], int(r["size"]), float(r["lr"]), int(r["seed"]))] = (
            loss if math.isfinite(loss) else math.inf
        )
    out: dict = {
        "axis": axis,
        "sizes": list(sizes),
        "lrs": lrs,
        "seeds": list(seeds),
        "optimizers": {},
    }
    for opt in optimizers:
        per_size: dict[str, dict] = {}
        for size in sizes:
            losses, means = [], []
            for lr in lrs:
                row = []
                for seed in seeds:
                    key = (opt, int(size), float(lr), int(seed))
                    if key not in table:
                        raise ValueError(
                            f"records: no run for optimizer={opt} {axis}={size} lr={lr:g} "
                            f"seed={seed}; train the full grid before analysing it"
                        )
                    row.append(table[key])
                losses.append(row)
                means.append(math.inf if any(math.isinf(v) for v in row) else sum(row) / len(row))
            finite = [i for i, m in enumerate(means) if math.isfinite(m)]
            best = min(finite, key=lambda i: means[i]) if finite else None
            per_size[str(size)] = {
                "lrs": lrs,
                "losses": losses,
                "mean_loss": means,
                "diverged_runs": sum(math.isinf(v) for row in losses for v in row),
                "best_lr_index": best,
                "best_lr": lrs[best] if best is not None else None,
                "best_loss": means[best] if best is not None else math.inf,
                "best_at_grid_edge": best in (0, len(lrs) - 1) if best is not None else None,
            }
        indices = [e["best_lr_index"] for e in per_size.values()]
        best_losses = [e["best_loss"] for e in per_size.values()]
        all_found = all(i is not None for i in indices)
        shift = max(indices) - min(indices) if all_found else None
        falls = all_found and all(b < a for a, b in itertools.pairwise(best_losses))
        out["optimizers"][opt] = {
            "sizes": per_size,
            "best_lrs": [e["best_lr"] for e in per_size.values()],
            "best_losses": best_losses,
            "best_lr_shift_steps": shift,
            "best_loss_falls_with_size": bool(falls),
            "optimum_inside_grid": all_found
            and not any(e["best_at_grid_edge"] for e in per_size.values()),
            "transfers": bool(all_found and shift <= 1 and falls),
        }
    return out
