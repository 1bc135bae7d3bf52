"""The bench's results: ``bench.json``, a Markdown report and the performance-profile plot.

The report leads with each optimizer's time to target as a ratio against tuned AdamW measured
in the same run (``t / t_AdamW``: below 1 is faster; when AdamW missed a workload the report
says so instead of a ratio), then the AlgoPerf performance ratios and score ``B``
(``scoring.py``). In ``bench.json`` a miss is ``null`` (JSON has no infinity).
"""

from __future__ import annotations

import io
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from everyscale.bench.scoring import (
    R_MAX,
    benchmark_scores,
    performance_profile,
    performance_ratios,
    study_time,
    workload_time,
)
from everyscale.train.checkpoint import atomic_write_bytes

__all__ = ["machine", "markdown", "plot_profiles", "summarize"]

BASELINES = ("torch_adamw", "adamw")


def machine() -> dict[str, Any]:
    """The CPU and torch this ran on (torch.optim.Muon's bf16 speed depends on the CPU)."""
    flags: set[str] = set()
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": name,
        "cores": os.cpu_count(),
        "bf16_instructions": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def _json_time(t: float) -> float | None:
    return t if math.isfinite(t) else None


def _best_trial(trials) -> dict[str, Any] | None:
    hits = [t for t in trials if math.isfinite(t.value)]
    if not hits:
        return None
    best = min(hits, key=lambda t: t.value)
    return {"number": best.number, "seconds": best.value, **best.result}


def _median_steps(studies: list[dict[str, Any]]) -> float | None:
    """The median over studies of the best trial's steps to target (a miss counts as none)."""
    values = sorted(
        math.inf if s["best"] is None else s["best"]["steps_to_target"] for s in studies
    )
    middle = float(np.median(values)) if values else math.inf
    return middle if math.isfinite(middle) else None


def stored_overhead(collected) -> dict[str, Any]:
    """Harness overhead of every scored trial from the storage's timestamps (ask to tell):
    the share of that time spent outside training, evaluation and compilation."""
    out: dict[str, Any] = {}
    for workload, by_optimizer in collected.items():
        wall = inside = 0.0
        count = 0
        for studies in by_optimizer.values():
            for t in (t for trials in studies for t in trials if t.wall_seconds):
                r = t.result
                wall += t.wall_seconds
                inside += r["train_seconds"] + r["eval_seconds"] + r["compile_seconds"]
                count += 1
        if count:
            out[workload] = {
                "trials": count,
                "mean_trial_seconds": wall / count,
                "overhead_share": max(0.0, wall - inside) / wall,
            }
    return out


def summarize(collected, plan, *, skipped: dict[str, str], overhead: dict, contenders) -> dict:
    """Scores and the records behind them, ready for ``bench.json``."""
    optimizers = list(plan.optimizers)
    workloads = [w for w in plan.workloads if w.name in collected]
    studies: dict[str, dict[str, list]] = {}
    times: dict[str, dict[str, float]] = {o: {} for o in optimizers}
    for w in workloads:
        studies[w.name] = {}
        for o in optimizers:
            per_study = [study_time(t.value for t in trials) for trials in collected[w.name][o]]
            times[o][w.name] = workload_time(per_study)
            studies[w.name][o] = [
                {
                    "seed": plan.seed + k,
                    "trials": len(trials),
                    "hits": sum(math.isfinite(t.value) for t in trials),
                    "diverged": sum(bool(t.result.get("diverged")) for t in trials),
                    "seconds": _json_time(per_study[k]),
                    "best": _best_trial(trials),
                }
                for k, trials in enumerate(collected[w.name][o])
            ]
    steps = {o: {w.name: _median_steps(studies[w.name][o]) for w in workloads} for o in optimizers}
    ratios = performance_ratios(times) if workloads else {o: {} for o in optimizers}
    scores = benchmark_scores(ratios) if workloads else {}
    baseline = next((b for b in BASELINES if b in optimizers), None)
    vs_baseline = {
        o: {
            w.name: (
                times[o][w.name] / times[baseline][w.name]
                if baseline
                and math.isfinite(times[baseline][w.name])
                and math.isfinite(times[o][w.name])
                else None
            )
            for w in workloads
        }
        for o in optimizers
    }
    return {
        "format": 1,
        "budget": plan.budget,
        "trials": plan.trials,
        "studies": plan.studies,
        "seed": plan.seed,
        "machine": machine(),
        "r_max": R_MAX,
        "baseline": baseline,
        "workloads": {
            w.name: {
                "data": w.config.data,
                "model": w.config.model if w.model_factory is None else "custom",
                "metric": w.metric,
                "target": w.target,
                "step_budget": w.steps,
                "eval_every": w.eval_every,
                "reference": list(w.reference),
            }
            for w in workloads
        },
        "skipped": skipped,
        "optimizers": {
            o: {
                "source": contenders[o].source,
                "peer": contenders[o].peer,
                "space": {
                    k: [r.low, r.high, "log" if r.log else "uniform"]
                    for k, r in plan.space_of(o)[0].items()
                },
                "fixed": plan.space_of(o)[1],
                "options": plan.passthrough_options(o),
            }
            for o in optimizers
        },
        "seconds_to_target": {
            o: {w: _json_time(t) for w, t in row.items()} for o, row in times.items()
        },
        "steps_to_target": steps,
        "ratios": {o: {w: _json_time(r) for w, r in row.items()} for o, row in ratios.items()},
        "vs_baseline": vs_baseline,
        "scores": scores,
        "studies_detail": studies,
        "overhead": overhead,
        "overhead_from_storage": stored_overhead(collected),
    }


def _fmt_seconds(t: float | None) -> str:
    return "miss" if t is None else f"{t:.2f} s"


def _fmt_ratio(r: float | None) -> str:
    return "miss" if r is None else f"{r:.2f}"


def markdown(result: dict, command: str | None = None) -> str:
    """The human-readable report (README-ready tables)."""
    workloads = list(result["workloads"])
    optimizers = list(result["optimizers"])
    baseline = result["baseline"]
    lines = ["# everyscale bench: time to target", ""]
    if command:
        lines += ["```", command, "```", ""]
    m = result["machine"]
    lines.append(
        f"Measured on {m['cpu']} ({m['cores']} cores, bf16 instructions: "
        f"{', '.join(m['bf16_instructions']) or 'none'}), torch {m['torch']}, "
        f"{m['torch_threads']} thread(s); {result['trials']} trials per study, median over "
        f"{result['studies']} studies. Timings on a shared machine are noisy; the ratios "
        "compare optimizers measured in the same run."
    )
    lines.append("")
    if baseline:
        lines += [
            f"## Time to target against tuned {baseline} (t / t_{baseline}; < 1 is faster)",
            "",
        ]
        lines.append("| optimizer | " + " | ".join(workloads) + " | B |")
        lines.append("|---|" + "---|" * (len(workloads) + 1))
        base_times = result["seconds_to_target"][baseline]
        for o in optimizers:
            cells = []
            for w in workloads:
                if base_times[w] is None:
                    cells.append(f"{baseline} missed")
                elif result["vs_baseline"][o][w] is None:
                    cells.append("miss")
                else:
                    cells.append(f"{result['vs_baseline'][o][w]:.2f}")
            score = result["scores"].get(o)
            b = "-" if score is None else f"{score:.3f}"
            lines.append(f"| {o} | " + " | ".join(cells) + f" | {b} |")
        lines.append("")
    lines += [
        "## Seconds to target (median over studies of the fastest trial; its steps)",
        "",
        "| optimizer | " + " | ".join(workloads) + " |",
        "|---|" + "---|" * len(workloads),
    ]
    for o in optimizers:
        row, steps = result["seconds_to_target"][o], result["steps_to_target"][o]
        cells = [
            _fmt_seconds(row[w]) + ("" if steps[w] is None else f" ({steps[w]:g} steps)")
            for w in workloads
        ]
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Performance ratios r = t / t_best and score B (r_max = {result['r_max']:g})",
        "",
    ]
    lines.append("| optimizer | " + " | ".join(workloads) + " | B |")
    lines.append("|---|" + "---|" * (len(workloads) + 1))
    for o in optimizers:
        row = result["ratios"][o]
        score = result["scores"].get(o, 0.0)
        lines.append(
            f"| {o} | " + " | ".join(_fmt_ratio(row[w]) for w in workloads) + f" | {score:.3f} |"
        )
    lines += [
        "",
        "## Workloads",
        "",
        "| workload | model | data | target | step budget |",
        "|---|---|---|---|---|",
    ]
    for w, info in result["workloads"].items():
        lines.append(
            f"| {w} | {info['model']} | {info['data']} | {info['metric']} <= {info['target']:g} "
            f"| {info['step_budget']} |"
        )
    for w, why in result["skipped"].items():
        lines.append(f"\nSkipped {w}: {why}")
    o = result["overhead"]
    if o.get("trials"):
        lines += [
            "",
            f"Harness overhead (trial wall time outside training, evaluation and compilation: "
            f"Optuna, storage, model and optimizer construction): {100 * o['overhead_share']:.1f}% "
            f"of the trials' time over {o['trials']} trials run by this process (worst trial "
            f"{100 * o['overhead_share_max']:.1f}%); evaluation {100 * o['eval_share']:.1f}%, "
            f"one-off compilation {100 * o['compile_share']:.1f}%.",
        ]
    stored = result.get("overhead_from_storage", {})
    if stored:
        shares = ", ".join(
            f"{w} {100 * v['overhead_share']:.1f}% (mean trial {v['mean_trial_seconds']:.1f} s)"
            for w, v in stored.items()
        )
        lines += [
            "",
            f"Harness overhead of every scored trial, from Optuna's timestamps: {shares}.",
        ]
    lines.append("")
    return "\n".join(lines)


def plot_profiles(result: dict, path: str | Path) -> None:
    """The performance profiles ``rho(tau)`` for ``tau`` in ``[1, r_max]``, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r_max = result["r_max"]
    taus = np.linspace(1.0, r_max, 400)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for o, row in result["ratios"].items():
        ratios = [math.inf if r is None else r for r in row.values()]
        if not ratios:
            continue
        rho = performance_profile(ratios, taus)
        ax.step(taus, rho, where="post", label=f"{o} (B = {result['scores'].get(o, 0):.2f})")
    ax.set_xlabel("tau (time within a factor tau of the fastest)")
    ax.set_ylabel("rho(tau): share of workloads")
    ax.set_xlim(1.0, r_max)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Performance profiles (Dahl et al. 2023)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
