"""Write what a ladder found: ``ladder.json``, ``report.md`` and three plots.

- ``ladder.json``: the plan, every run (N, D, C = 6ND, final validation loss, status), the chosen
  learning rate, the fitted laws, the prediction with its interval, the actual loss,
  ``relative_error``, ``inside_interval`` and ``naive`` (each naive prediction with its error);
- ``report.md``: the same for people, with the plots inline;
- ``loss_curves.png`` (every run's training and validation loss against tokens),
  ``loss_vs_compute.png`` (final loss against compute with the fitted law, its band and the
  held-out point), ``lr_sweep.png`` (final loss against learning rate).

Plotting never hides the ladder's own outcome: a plot that fails is named in the report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from everyscale.ladder.plan import LadderPlan, format_tokens
from everyscale.laws.fit import planned_extrapolation
from everyscale.train.checkpoint import atomic_save_figure, atomic_write_text

PLOTS = ("loss_curves.png", "loss_vs_compute.png", "lr_sweep.png")


def write_all(out: Path, plan: LadderPlan, result: dict) -> None:
    """Write the plots, ``ladder.json`` and ``report.md`` (in that order) under ``out``."""
    out = Path(out)
    plot_errors = {}
    for name, draw in (
        ("loss_curves.png", plot_loss_curves),
        ("loss_vs_compute.png", plot_loss_vs_compute),
        ("lr_sweep.png", plot_lr_sweep),
    ):
        try:
            if draw(out, result):
                result.setdefault("plots", [])
                if name not in result["plots"]:
                    result["plots"].append(name)
        except Exception as err:  # a broken plot must not mask the ladder's result
            plot_errors[name] = f"{type(err).__name__}: {err}"
    if plot_errors:
        result["plot_errors"] = plot_errors
    atomic_write_text(out / "ladder.json", json.dumps(_finite(result), indent=2) + "\n")
    atomic_write_text(out / "report.md", render_markdown(plan, result))


def _finite(value):
    """JSON without NaN/Infinity (not valid JSON): non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ----------------------------------------------------------------------------- markdown


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}g}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _timing_line(result: dict) -> str:
    """Measured wall time, and the estimate on idle cores from each run's CPU time."""
    workers = result.get("workers", 1)
    line = (
        f"- wall time: {result.get('wall_seconds', math.nan):.0f} s ({workers} runs side by side)"
    )
    estimate = result.get("idle_wall_estimate_seconds")
    if estimate is not None:
        line += (
            f"; from the CPU time of each run, about {estimate:.0f} s on {workers} idle cores "
            f"(the machine may have been shared)"
        )
    tokens = result.get("ladder_tokens")
    if tokens:
        line += (
            f"\n- ladder stage: {tokens['trained']:,} tokens trained, {tokens['alone']:,} if every "
            f"run were trained alone ({tokens['ratio']:.3f}x; WSD branches: "
            f"{'yes' if tokens['ratio'] < 1 else 'no'})"
        )
    return line


def _lr_label(lr: float) -> str:
    """'2^-11 = 0.0004883' for powers of two, else the number."""
    k = math.log2(lr)
    return f"2^{round(k)} = {lr:.4g}" if abs(k - round(k)) < 1e-9 else f"{lr:.4g}"


def _horizon_line(plan: LadderPlan) -> str:
    if not plan.horizon_decay:
        return "- every run keeps the sweep's learning rate until its cooldown (`--no-horizon-lr`)"
    return (
        f"- horizon learning rate: after the stable phase of the sweep's budget "
        f"({format_tokens(min(plan.tokens))} tokens) the rate decays as (step / S0)^-"
        f"{plan.horizon_decay:g}, so a run of D tokens ends its stable phase at "
        f"lr x (D / {format_tokens(min(plan.tokens))})^-{plan.horizon_decay:g} (Scion's horizon "
        "exponent at a fixed batch size, Filatov et al. 2025) and every run still branches "
        "from its width's trunk"
    )


def render_markdown(plan: LadderPlan, result: dict) -> str:
    """The human-readable report of a (finished or failed) ladder."""
    runs = result.get("runs", [])
    lines = [f"# Scaling ladder ({plan.budget}): {result.get('status', 'unknown')}", ""]
    if result.get("status") == "failed":
        lines += [
            f"**The ladder stopped:** {result.get('error', 'unknown error')}",
            "",
            "The runs that finished are listed below and kept in `runs/`; no verdict is drawn.",
            "",
        ]
    lines += [
        "## Setup",
        "",
        f"- preset `{plan.preset}`, data `{plan.data}` (byte-level, vocabulary 256), seed "
        f"{plan.seed}; runs per ladder point: "
        + ", ".join(f"{plan.seeds_at(w)} at width {w}" for w in plan.widths)
        + " (the law is fitted to every run)",
        f"- GPT, depth {plan.depth}, attention heads 16 wide, context {plan.context}, batch "
        f"{plan.batch_size} sequences ({plan.tokens_per_step:,} tokens per step)",
        f"- schedule `{plan.schedule}`: warmup {plan.warmup:.0%}, {plan.cooldown_shape} decay "
        f"to zero over the last {plan.cooldown:.0%} of steps, so every run ends annealed",
        _horizon_line(plan),
        f"- `N` counts parameters **{'with' if plan.embeddings else 'without'}** the token "
        f"embedding and the output head (2 x 256 x width; positions are rotary); `D` = tokens "
        f"seen = steps x {plan.tokens_per_step:,}; compute `C = 6ND` (head and attention "
        f"FLOPs not included; the engine's count per token, both included, is in ladder.json "
        f"as `flops_per_token`)",
        f"- the loss is the final validation loss (nats per byte) on a fixed validation set of "
        f"{plan.val_windows} windows ({plan.val_windows * plan.context:,} tokens)",
        _timing_line(result),
        "",
    ]

    sweep = [r for r in runs if r["stage"] == "sweep"]
    if sweep:
        lines += ["## 1. Learning-rate sweep (smallest model, smallest budget)", ""]
        lines += ["| lr | final val loss | status |", "|---|---|---|"]
        chosen = result.get("lr", {}).get("chosen")
        for r in sorted(sweep, key=lambda r: r["lr"]):
            mark = " **(chosen)**" if r["lr"] == chosen else ""
            lines.append(
                f"| {_lr_label(r['lr'])}{mark} | {_fmt(r.get('final_val_loss'))} | {r['status']} |"
            )
        if "lr" in result:
            lines += ["", f"Chosen lr {chosen:.4g}: {result['lr']['note']}.", ""]
        else:
            lines.append("")

    ladder = [r for r in runs if r["stage"] in ("ladder", "target")]
    if ladder:
        lines += ["## 2. Ladder runs (transferred lr, WSD)", ""]
        lines += [
            "| run | width | N | N with embeddings | D | C = 6ND | final val loss | wall s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in ladder:
            held = " (held out)" if r["stage"] == "target" else ""
            lines.append(
                f"| {r['name']}{held} | {r['width']} | {r['N']:,} | {r['N_total']:,} | "
                f"{r['D']:,} | {r['C']:.3g} | {_fmt(r.get('final_val_loss'))} | "
                f"{_fmt(r.get('wall_seconds'), 3)} |"
            )
        lines.append("")

    fits = result.get("fits", {})
    if fits:
        lines += ["## 3. Fitted laws", ""]
        for law, fit in fits.items():
            if "error" in fit:
                lines += [f"- `{law}`: not fitted: {fit['error']}", ""]
                continue
            lines.append(f"`{law}` ({result.get('interval_level', 0.95):.0%} bootstrap intervals):")
            lines.append("")
            lines += ["| parameter | value | interval |", "|---|---|---|"]
            ci = fit.get("ci", {}) or {}
            shown = {**(fit.get("params") or {}), **(fit.get("derived") or {})}
            for name, value in shown.items():
                lo_hi = ci.get(name)
                interval = f"[{_fmt(lo_hi[0])}, {_fmt(lo_hi[1])}]" if lo_hi else "-"
                lines.append(f"| {name} | {_fmt(value, 6)} | {interval} |")
            lines.append("")
            for warning in (fit.get("diagnostics") or {}).get("warnings", []):
                lines += [f"- fit warning: {warning}"]
            lines.append("")

    if "prediction" in result:
        t = result["target"]
        ladder_runs = [r for r in runs if r["stage"] == "ladder"]
        largest_n = max(r["N"] for r in ladder_runs)
        largest_d = max(r["D"] for r in ladder_runs)
        lo, hi = result["interval"]
        lines += [
            "## 4. Prediction (written to prediction.json before the held-out run was trained)",
            "",
            f"Held-out model: width {t['width']}, N = {t['N']:,} "
            f"({t['N'] / largest_n:.2f}x the largest ladder model), D = {t['D']:,} "
            f"({t['D'] / largest_d:.2f}x the largest budget), C = {t['C']:.3g}. Written at "
            f"{result.get('written_at', '?')}.",
            "",
            f"`{result['law']}` predicts **{result['prediction']:.4f}**, "
            f"{result.get('interval_level', 0.95):.0%} interval [{lo:.4f}, {hi:.4f}] (the "
            "bootstrap's spread and a new run's own noise, from the fit's residuals; the "
            "bootstrap alone: "
            + (
                "[{:.4f}, {:.4f}])".format(*result["interval_bootstrap"])
                if "interval_bootstrap" in result
                else "-)"
            )
            + ".",
            "",
        ]
    if result.get("status") == "predicted":
        lines += [
            "## 5. Check: not yet",
            "",
            "The held-out model was not trained (`--no-check`); the same command with "
            "`--resume` trains it and checks the prediction above, as written.",
            "",
        ]
    if "actual" in result:
        lines += ["## 5. Check against the trained held-out model", ""]
        lines += [
            "| predictor | prediction | relative error |",
            "|---|---|---|",
        ]
        for law, p in result.get("predictions", {}).items():
            lines.append(
                f"| law: {law} | {p['prediction']:.4f} | {_pct(p.get('relative_error'))} |"
            )
        for name, p in result.get("naive", {}).items():
            lines.append(
                f"| naive: {name} | {p['prediction']:.4f} | {_pct(p.get('relative_error'))} |"
            )
        lines += [
            f"| **actual** | **{result['actual']:.4f}** | |",
            "",
            f"- relative error of the law: **{_pct(result['relative_error'])}**; the truth is "
            f"**{'inside' if result['inside_interval'] else 'outside'}** the interval",
            f"- at most half the error of the better naive prediction: "
            f"**{'yes' if result['beats_naive_by_half'] else 'no'}**; within 1.5%: "
            f"**{'yes' if result['relative_error'] <= 0.015 else 'no'}**",
            "",
        ]
    plots = result.get("plots", [])
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    for name, err in result.get("plot_errors", {}).items():
        lines.append(f"- plot {name} failed: {err}")
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: Path) -> list[dict]:
    """The JSON lines the training engine wrote; an empty list when the file is absent."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            rows.append(json.loads(line))
    return rows


def _width_colors(widths):
    plt = _pyplot()
    widths = sorted(set(widths))
    cmap = plt.get_cmap("viridis")
    return {w: cmap(i / max(1, len(widths) - 1) * 0.85) for i, w in enumerate(widths)}


def _smooth(values: np.ndarray, span: int) -> np.ndarray:
    """A bias-corrected exponential moving average (the per-step training loss is noisy)."""
    alpha = 2.0 / (max(span, 1) + 1)
    out = np.empty_like(values)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(values):
        acc = (1 - alpha) * acc + alpha * v
        weight = (1 - alpha) * weight + alpha
        out[i] = acc / weight
    return out


def plot_loss_curves(out: Path, result: dict) -> bool:
    """Training loss (smoothed) and validation loss against tokens, every run."""
    runs = result.get("runs", [])
    if not runs:
        return False
    plt = _pyplot()
    colors = _width_colors(r["width"] for r in runs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, stages, title in (
        (axes[0], ("sweep",), "learning-rate sweep"),
        (axes[1], ("ladder", "target"), "ladder and held-out run"),
    ):
        for r in runs:
            if r["stage"] not in stages:
                continue
            rows = read_metrics(out / r["dir"] / "metrics.jsonl")
            train = [
                (m["tokens"], m["train_loss"]) for m in rows if m.get("train_loss") is not None
            ]
            val = [(m["tokens"], m["val_loss"]) for m in rows if m.get("val_loss") is not None]
            label = r["name"]
            style = "-" if r["stage"] != "target" else "--"
            color = colors[r["width"]] if r["stage"] != "sweep" else None
            if train:
                t, y = np.array(train, dtype=float).T
                finite = np.isfinite(y)
                (line,) = ax.plot(
                    t[finite],
                    _smooth(y[finite], len(y) // 30),
                    style,
                    color=color,
                    lw=1,
                    label=label,
                )
                color = line.get_color()
            if val:
                t, y = np.array(val, dtype=float).T
                ax.plot(t, y, "o", color=color, ms=3)
        ax.set_xscale("log")
        ax.set_xlabel("tokens")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=2)
    axes[0].set_ylabel("loss (nats/byte); line: train (EMA), dots: validation")
    _, top = axes[1].get_ylim()
    finals = [r["final_val_loss"] for r in runs if r.get("final_val_loss") is not None]
    if finals:  # keep the interesting part: from just below the best to the early losses
        axes[1].set_ylim(min(finals) * 0.97, min(top, max(finals) * 1.6))
    fig.tight_layout()
    atomic_save_figure(fig, out / "loss_curves.png", dpi=120)
    plt.close(fig)
    return True


def plot_lr_sweep(out: Path, result: dict) -> bool:
    """Final validation loss against learning rate; diverged runs marked at the top."""
    sweep = sorted(
        (r for r in result.get("runs", []) if r["stage"] == "sweep"), key=lambda r: r["lr"]
    )
    if not sweep:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = [r for r in sweep if r.get("final_val_loss") is not None]
    if ok:
        ax.plot([r["lr"] for r in ok], [r["final_val_loss"] for r in ok], "o-", label="final val")
        top = max(r["final_val_loss"] for r in ok)
    else:
        top = 1.0
    bad = [r for r in sweep if r.get("final_val_loss") is None]
    if bad:
        ax.plot([r["lr"] for r in bad], [top] * len(bad), "rx", ms=10, label="diverged")
    chosen = result.get("lr", {}).get("chosen")
    if chosen is not None:
        ax.axvline(chosen, color="k", ls=":", label=f"chosen {chosen:.3g}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final validation loss (nats/byte)")
    width = sweep[0]["width"]
    ax.set_title(f"lr sweep: width {width}, {format_tokens(sweep[0]['D'])} tokens")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_save_figure(fig, out / "lr_sweep.png", dpi=120)
    plt.close(fig)
    return True


def plot_loss_vs_compute(out: Path, result: dict) -> bool:
    """Ladder points, the fitted law per width with the held-out width's band, the held-out
    prediction (with its interval) and truth, and the naive log-log line."""
    ladder = [
        r for r in result.get("runs", []) if r["stage"] == "ladder" and r.get("final_val_loss")
    ]
    if not ladder:
        return False
    plt = _pyplot()
    target = result.get("target")
    widths = [r["width"] for r in ladder] + ([target["width"]] if target else [])
    colors = _width_colors(widths)
    fig, ax = plt.subplots(figsize=(7, 5))
    for w in sorted({r["width"] for r in ladder}):
        pts = [r for r in ladder if r["width"] == w]
        ax.plot(
            [r["C"] for r in pts],
            [r["final_val_loss"] for r in pts],
            "o",
            color=colors[w],
            label=f"ladder width {w}",
        )

    fit_json = result.get("fits", {}).get(result.get("law", ""))
    d_all = [r["D"] for r in ladder] + ([target["D"]] if target else [])
    d_grid = np.geomspace(min(d_all) / 1.5, max(d_all) * 1.5, 60)
    if fit_json and "error" not in fit_json:
        from everyscale import laws

        fit = laws.FitResult.from_json(json.dumps(fit_json))
        sizes = {r["width"]: r["N"] for r in ladder}
        if target:
            sizes[target["width"]] = target["N"]
        for w, n in sorted(sizes.items()):
            n_arr = np.full_like(d_grid, float(n))
            with planned_extrapolation():  # the held-out width's curve, by design
                loss = np.asarray(fit.predict(N=n_arr, D=d_grid), dtype=float)
            ax.plot(6 * n * d_grid, loss, "-", color=colors[w], lw=1)
        if target:
            n_arr = np.full_like(d_grid, float(target["N"]))
            lo, hi = fit.interval(N=n_arr, D=d_grid, level=result.get("interval_level", 0.95))
            ax.fill_between(
                6 * target["N"] * d_grid,
                np.asarray(lo, float),
                np.asarray(hi, float),
                color=colors[target["width"]],
                alpha=0.2,
                label="law band (held-out width)",
            )
    if target and "prediction" in result:
        lo, hi = result["interval"]
        p = result["prediction"]
        ax.errorbar(
            [target["C"]],
            [p],
            yerr=[[p - lo], [hi - p]],
            fmt="s",
            color="C3",
            capsize=4,
            label=f"prediction {p:.4f}",
        )
        naive_line = result.get("naive", {}).get("loglog_compute")
        if naive_line:
            c = np.array([min(r["C"] for r in ladder), target["C"]])
            cs = [r["C"] for r in ladder]
            ys = [r["final_val_loss"] for r in ladder]
            slope, intercept = np.polyfit(np.log(cs), np.log(ys), 1)
            ax.plot(c, np.exp(intercept + slope * np.log(c)), "k--", lw=0.8, label="naive log-log")
    if result.get("actual") is not None and target:
        ax.plot(
            [target["C"]],
            [result["actual"]],
            "*",
            color="C3",
            ms=14,
            label=f"held-out truth {result['actual']:.4f}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("compute C = 6ND (FLOPs)")
    ax.set_ylabel("final validation loss (nats/byte)")
    ax.set_title("final loss against compute, fitted law per width")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, out / "loss_vs_compute.png", dpi=120)
    plt.close(fig)
    return True
