"""Plots of a fit: loss against compute with the law and its band, residuals, bootstrap
distributions, IsoFLOP curves. matplotlib with the Agg backend, saved as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from everyscale.laws.allocate import ALLOCATABLE_LAWS, allocate
from everyscale.laws.fit import FitResult, percentile_interval
from everyscale.laws.io import Points
from everyscale.laws.isoflop import IsoFlopResult


def _inputs(fit: FitResult, points: Points) -> dict[str, np.ndarray]:
    return {name: points[name] for name in fit.get_law().inputs}


def plot_loss_vs_compute(fit: FitResult, points: Points, path: str | Path) -> Path:
    """Observed loss against C = 6 N D, coloured by N; the law along each model size's token
    range; and, for laws in N and D, the compute-optimal frontier L(N*(C), D*(C)) with its
    bootstrap band."""
    fig, ax = plt.subplots(figsize=(7, 5))
    target = fit.get_law().target
    if "C" in points:
        x, xlabel = points["C"], "compute C = 6 N D (FLOPs)"
    else:
        first = fit.get_law().inputs[0]
        x, xlabel = points[first], first
    colour = np.log10(points["N"]) if "N" in points else None
    style = {"c": colour, "cmap": "viridis"} if colour is not None else {"color": "C0"}
    sc = ax.scatter(x, points[target], s=14, label="runs", zorder=3, **style)
    if colour is not None:
        fig.colorbar(sc, ax=ax, label="log10 N")
    if fit.law in ALLOCATABLE_LAWS and "C" in points:
        grid = np.geomspace(x.min() / 2, x.max() * 20, 120)
        sizes = np.unique(points["N"])
        for N in sizes if len(sizes) <= 12 else []:  # the law along each model size's runs
            own = points["C"][points["N"] == N]
            C = np.geomspace(own.min() / 2, own.max() * 2, 50)
            ax.plot(C, fit.predict(N=np.full_like(C, N), C=C), color="0.75", lw=0.8, zorder=1)
        alloc = allocate(fit, grid)
        ax.plot(grid, alloc.loss, color="C3", label="compute-optimal L(N*(C), D*(C))")
        if "loss" in alloc.intervals:
            lo, hi = alloc.intervals["loss"]
            ax.fill_between(grid, lo, hi, color="C3", alpha=0.2, label=f"{fit.ci_level:.0%} band")
    elif "C" in points and fit.get_law().inputs == ("C",):
        grid = np.geomspace(x.min() / 2, x.max() * 20, 120)
        ax.plot(grid, fit.predict(C=grid), color="C3", label="fitted law")
        if fit.bootstrap_samples is not None:
            lo, hi = fit.interval(C=grid)
            ax.fill_between(grid, lo, hi, color="C3", alpha=0.2, label=f"{fit.ci_level:.0%} band")
    else:
        order = np.argsort(x)
        pred = np.asarray(fit.predict(**_inputs(fit, points)))
        ax.plot(x[order], pred[order], color="C3", marker=".", lw=0.8, label="fitted law")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(target)
    ax.set_title(f"{fit.law}: {fit.data.get('formula', '')}", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_residuals(fit: FitResult, points: Points, path: str | Path) -> Path:
    """log(observed) - log(predicted) against the first input (compute when available)."""
    target = fit.get_law().target
    pred = np.asarray(fit.predict(**_inputs(fit, points)))
    resid = np.log(points[target]) - np.log(pred)
    x = points["C"] if "C" in points else points[fit.get_law().inputs[0]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axhline(0, color="0.5", lw=0.8)
    if fit.loss == "huber":
        for s in (-fit.huber_delta, fit.huber_delta):
            ax.axhline(s, color="C1", lw=0.6, ls="--")
    ax.scatter(x, resid, s=12)
    ax.set_xscale("log")
    ax.set_xlabel("compute C (FLOPs)" if "C" in points else fit.get_law().inputs[0])
    ax.set_ylabel(f"log {target} - log prediction")
    ax.set_title(f"residuals (RMS {np.sqrt(np.mean(resid**2)):.3g})", fontsize=9)
    return _save(fig, path)


def plot_bootstrap(fit: FitResult, path: str | Path) -> Path:
    """Histogram of each parameter over the bootstrap resamples, with the fit and interval."""
    if fit.bootstrap_samples is None:
        raise ValueError(
            "this fit has no bootstrap samples; refit with --bootstrap 4000 "
            "(Python: fit(..., bootstrap=4000))"
        )
    names = list(fit.params)
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3), squeeze=False)
    for ax, j, name in zip(axes[0], range(len(names)), names):
        values = fit.bootstrap_samples[:, j]
        values = values[np.isfinite(values)]
        spread = np.ptp(values) > 1e-9 * max(1.0, float(np.max(np.abs(values))))
        ax.hist(values, bins=40 if spread else 1, color="C0", alpha=0.7)  # 1 bin: all equal
        ax.axvline(fit.params[name], color="C3", label="fit")
        lo, hi = percentile_interval(values, fit.ci_level)
        for v in (lo, hi):
            ax.axvline(v, color="k", ls="--", lw=0.8)
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"{len(fit.bootstrap_samples)} bootstrap resamples", fontsize=9)
    return _save(fig, path)


def plot_isoflop(iso: IsoFlopResult, points: Points, path: str | Path) -> Path:
    """Loss against N per compute budget, each with its fitted parabola and vertex."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for k, budget in enumerate(iso.budgets):
        near = np.abs(np.log(points["C"] / budget["C"])) < 0.05
        N, loss = points["N"][near], points["loss"][near]
        ax.scatter(N, loss, s=12, color=f"C{k % 10}", label=f"C = {budget['C']:.2g}")
        grid = np.linspace(np.log(N.min()), np.log(N.max()), 100)
        ax.plot(np.exp(grid), np.polyval(budget["parabola"], grid), color=f"C{k % 10}", lw=0.8)
        ax.scatter([budget["N_opt"]], [budget["loss_opt"]], marker="*", s=80, color=f"C{k % 10}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss")
    ax.set_title(f"IsoFLOP profiles: N* ~ C^{iso.a:.3f}", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def save_plots(
    fit: FitResult, points: Points, out_dir: str | Path, iso: IsoFlopResult | None = None
) -> list[Path]:
    """All plots that apply to this fit, as PNG files in `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_loss_vs_compute(fit, points, out / "loss_vs_compute.png"),
        plot_residuals(fit, points, out / "residuals.png"),
    ]
    if fit.bootstrap_samples is not None:
        paths.append(plot_bootstrap(fit, out / "bootstrap.png"))
    if iso is not None:
        paths.append(plot_isoflop(iso, points, out / "isoflop.png"))
    return paths


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
