"""Figures of the transfer check: loss against learning rate per width, and the coordinate check."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen first
import numpy as np

from everyscale.scale.coord import CoordResult
from everyscale.train.checkpoint import atomic_save_figure


def plot_transfer(result: dict, path: str | Path) -> Path:
    """muP's figure: validation loss against learning rate, one curve per size, one panel per
    optimizer. ``result`` is the ``transfer.json`` dictionary of
    :func:`everyscale.scale.transfer.analyse`. Diverged runs (loss ``inf``) are drawn as
    crosses along the top edge, so they stay visible."""
    axis = result["axis"]
    optimizers = list(result["optimizers"])
    fig, axes = plt.subplots(
        1, len(optimizers), figsize=(4.2 * len(optimizers), 3.6), squeeze=False, sharey=True
    )
    finite = [
        loss
        for opt in optimizers
        for size in result["optimizers"][opt]["sizes"].values()
        for loss in size["mean_loss"]
        if math.isfinite(loss)
    ]
    if finite:
        low, high = min(finite), min(max(finite), min(finite) + 2.0)
        pad = 0.05 * (high - low or 1.0)
        ylim = (low - pad, high + 3 * pad)
    else:
        ylim = (0.0, 1.0)
    cmap = plt.get_cmap("viridis")
    for ax, opt in zip(axes[0], optimizers):
        sizes = result["optimizers"][opt]["sizes"]
        for i, (size, entry) in enumerate(sizes.items()):
            color = cmap(i / max(1, len(sizes) - 1))
            lrs = np.asarray(entry["lrs"], dtype=float)
            loss = np.asarray(entry["mean_loss"], dtype=float)
            ok = np.isfinite(loss)
            ax.plot(lrs[ok], loss[ok], "-o", ms=3, color=color, label=f"{axis} {size}")
            if (~ok).any():
                ax.plot(lrs[~ok], np.full((~ok).sum(), ylim[1]), "x", color=color, clip_on=False)
            if entry["best_lr"] is not None:
                ax.plot(entry["best_lr"], entry["best_loss"], "*", ms=11, color=color, mec="k")
        shift = result["optimizers"][opt]["best_lr_shift_steps"]
        ax.set_title(f"{opt}  (optimum moves {shift} grid steps)", fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate")
        ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final validation loss")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_coord(results: CoordResult | dict[str, CoordResult], path: str | Path) -> Path:
    """The coordinate check: one row per result (e.g. per optimizer), one panel per step
    (0 = initialization), each layer's output RMS against width (flat = transfers)."""
    if isinstance(results, CoordResult):
        results = {results.label or "": results}
    columns = max(r.steps for r in results.values()) + 1
    fig, axes = plt.subplots(
        len(results), columns, figsize=(3.0 * columns + 1.5, 2.8 * len(results)), squeeze=False
    )
    cmap = plt.get_cmap("tab20")
    for row, (name, result) in zip(axes, results.items()):
        for step, ax in enumerate(row[: result.steps + 1]):
            for i, layer in enumerate(result.layers):
                values = [result.rms[w][step][layer] for w in result.widths]
                ax.plot(result.widths, values, "-o", ms=2, lw=1, color=cmap(i % 20), label=layer)
            spread = max(result.spread(step).values())
            ax.set_title(f"{result.label or name}: step {step} (spread {spread:.2f}x)", fontsize=8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        row[0].set_ylabel("output RMS")
        if len(result.layers) <= 24:
            row[-1].legend(fontsize=5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for ax in axes[-1]:
        ax.set_xlabel("width")
    # Fixed margins: tight_layout on many log-scaled panels costs seconds.
    fig.subplots_adjust(left=0.06, right=0.86, bottom=0.08, top=0.93, wspace=0.3, hspace=0.45)
    path = Path(path)
    atomic_save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
