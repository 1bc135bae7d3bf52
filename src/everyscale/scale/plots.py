"""Figures of the transfer check: loss against learning rate per width, and the coordinate check."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen first
import numpy as np

from everyscale.scale.coord import CoordResult


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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_coord(result: CoordResult, path: str | Path, title: str = "") -> Path:
    """One panel per step (0 = initialization): each layer's output RMS against width."""
    steps = list(range(result.steps + 1))
    fig, axes = plt.subplots(
        1, len(steps), figsize=(3.2 * len(steps), 3.4), squeeze=False, sharey=True
    )
    layers = result.layers
    cmap = plt.get_cmap("tab20")
    for ax, step in zip(axes[0], steps):
        for i, layer in enumerate(layers):
            values = [result.rms[w][step][layer] for w in result.widths]
            ax.plot(result.widths, values, "-o", ms=3, color=cmap(i % 20), label=layer)
        spread = max(result.spread(step).values())
        ax.set_title(f"step {step}  (max spread {spread:.2f}x)", fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("output RMS")
    if len(layers) <= 20:
        axes[0][-1].legend(fontsize=5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
