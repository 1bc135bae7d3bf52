"""Benchmark: how well does the ladder's law predict held-out runs, against naive guesses?

Many small ladders (corpora x seeds), each with several held-out targets: more parameters
(>= 4x the largest ladder model's N), more tokens (4x the largest budget), and both. Every
prediction method is scored on every target: the relative error of each law (and counting of
N) and of each naive guess, per corpus, on average and at worst, and the coverage and median
half-width of the 95% intervals (the bootstrap alone, and with run-to-run noise added).

The runs are the ladder's own (``everyscale.ladder``: the sweep on the smallest model, one
WSD trunk per width with a cooldown branched per shorter budget, the held-out runs trained
alone) and are cached under ``--out``: a second call reuses every finished run (the one rule
of ``everyscale.train.run_or_reuse``) and only refits, so methods can be compared at no
training cost; a killed benchmark continues where it stopped.

Corpora: ``stdlib`` (this Python's sources), ``shakespeare`` (tinyshakespeare.txt) and
``docs``: the package documentation installed beside the engine (every ``METADATA``,
``*.md`` and ``*.rst`` file under site-packages, sorted by path, concatenated once into
``OUT/docs.txt``; its size and SHA-256 are printed, since another machine's packages differ).

Size (the default ``--size demo``): per ladder, the ladder of ``make demo`` (widths 32, 48,
64 at depth 2, context 64, batch 16: 1,024 tokens a step, x 256k, 512k, 1M tokens, 256 to
1,024 steps), a 5-point learning-rate sweep (2^-13 .. 2^-9) at width 32 x 256k; four held-out
targets: width 128 (4.0x N) at 1M, width 96 at 2M (2.25x N, 2x D), width 128 at 2M (both),
width 64 at 4M (4x D); 3 corpora x 2 seeds = 6 ladders, 24 held-out targets (each ladder
stage: 9 runs, 0.7x the tokens of training them alone), then width 16 added to every ladder
(a design variant). ``--size short`` is the first, cheaper size (64 to 256 steps). Design
variants scored from the same runs: two seeds per point (their mean, or both as points), two
seeds at the smallest width only, an extra narrow width. ``--no-horizon-lr`` trains every run
at the sweep's learning rate (the old design; it needs its own ``--out``). The CPU time is
printed with the table.

    .venv/bin/python benchmarks/ladder_accuracy.py [--out runs/bench-ladder] [--workers 2]
        [--corpora stdlib,shakespeare,docs] [--seeds 0,1] [--size demo|short]
        [--no-horizon-lr] [--reuse-only] [--markdown PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import multiprocessing
import sysconfig
import time
from pathlib import Path

import numpy as np

from everyscale.ladder import naive
from everyscale.ladder.ladder import (
    choose_lr,
    execute_run,
    ladder_tokens,
    split_trunks,
    train_branch_run,
    train_run,
    train_trunk_run,
)
from everyscale.ladder.noise import residual_sigma
from everyscale.ladder.plan import LadderPlan, RunSpec, format_tokens, make_plan
from everyscale.laws.fit import planned_extrapolation
from everyscale.train.checkpoint import atomic_write_json

SIZES = {
    # The ladder of `make demo` (`everyscale ladder --budget small`): 256 to 1,024 steps.
    "demo": dict(
        widths=(32, 48, 64),
        tokens=(262_144, 524_288, 1_048_576),
        targets=((128, 1_048_576), (96, 2_097_152), (128, 2_097_152), (64, 4_194_304)),
        # Trained after the held-out runs with the sweep's learning rate, for the design
        # variants that add a narrower width to the ladder (DESIGNS).
        extra_widths=(16,),
        depth=2,
        context=64,
        batch_size=16,
        val_windows=256,
        lr_steps=(-1, 0, 1, 2, 3),
    ),
    # Shorter runs (64 to 256 steps) on narrower models: the first benchmark's size.
    "short": dict(
        widths=(16, 32, 48, 64),
        tokens=(16_384, 32_768, 65_536),
        targets=((128, 65_536), (128, 131_072), (64, 262_144), (128, 262_144)),
        depth=2,
        context=32,
        batch_size=8,
        val_windows=256,
        lr_steps=(-1, 0, 1, 2, 3),
    ),
}
LEVEL = 0.95
BOOTSTRAP = 200


# ----------------------------------------------------------------------------- corpora


def docs_corpus(out: Path) -> Path:
    """The installed packages' documentation as one text file (made once, then reused)."""
    path = out / "docs.txt"
    if path.exists():
        return path
    root = Path(sysconfig.get_paths()["purelib"])
    files = sorted(
        p
        for pattern in ("*.dist-info/METADATA", "**/*.md", "**/*.rst")
        for p in root.glob(pattern)
        if p.is_file()
    )
    data = b"\n".join(p.read_bytes() for p in files)
    if len(data) < 200_000:
        raise ValueError(f"--corpora docs: only {len(data):,} bytes of docs under {root}")
    out.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path


def corpus_data(name: str, out: Path) -> str:
    return str(docs_corpus(out)) if name == "docs" else name


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass
class Ladder:
    corpus: str
    seed: int
    plan: LadderPlan
    out: Path
    runs: dict = dataclasses.field(default_factory=dict)  # name -> record
    lr: float | None = None

    @property
    def label(self) -> str:
        return f"{self.corpus}-s{self.seed}"


def make_ladders(
    size: str, corpora: list[str], seeds: list[int], out: Path, horizon_lr: bool = True
) -> list[Ladder]:
    cfg = SIZES[size]
    ladders = []
    for corpus in corpora:
        data = corpus_data(corpus, out)
        for seed in seeds:
            plan = make_plan(
                "tiny",
                data=data,
                seed=seed,
                widths=cfg["widths"],
                tokens=cfg["tokens"],
                target_width=max(w for w, _ in cfg["targets"]),
                target_tokens=max(t for _, t in cfg["targets"]),
                depth=cfg["depth"],
                context=cfg["context"],
                batch_size=cfg["batch_size"],
                val_windows=cfg["val_windows"],
                lr_steps=cfg["lr_steps"],
                bootstrap=BOOTSTRAP,
                horizon_lr=horizon_lr,
            )
            ladders.append(Ladder(corpus, seed, plan, out / f"{corpus}-s{seed}"))
    return ladders


def target_specs(size: str, lr: float) -> list[RunSpec]:
    return [
        RunSpec(f"target-w{w}-t{format_tokens(t)}", "target", w, t, lr)
        for w, t in SIZES[size]["targets"]
    ]


def _finished(ladder: Ladder, spec: RunSpec) -> bool:
    path = ladder.out / "runs" / spec.name / "summary.json"
    return path.exists() and json.loads(path.read_text()).get("status") == "completed"


def train_phase(
    pool, jobs: list[tuple[Ladder, RunSpec, object]], reuse_only: bool, plans: dict | None = None
) -> None:
    """Train (or reuse) every (ladder, spec, train_fn) job; records go into ladder.runs.
    ``reuse_only``: only the finished runs are read back (the rest are left out). ``plans``:
    a plan per ladder label in place of the ladder's own (the extra widths)."""
    futures = {}
    for ladder, spec, fn in jobs:
        if reuse_only and not _finished(ladder, spec):
            continue
        (ladder.out / "runs").mkdir(parents=True, exist_ok=True)
        plan = (plans or {}).get(ladder.label, ladder.plan)
        args = (spec, plan, ladder.out, True, fn)
        submit = pool is not None and not reuse_only
        futures[pool.submit(execute_run, *args) if submit else _now(execute_run, *args)] = ladder
    for future in concurrent.futures.as_completed(futures):
        record = future.result()
        futures[future].runs[record["name"]] = record
        print(
            f"  {futures[future].label} {record['name']}: {record['status']} "
            f"{record.get('final_val_loss') or float('nan'):.4f}"
            f"{' (reused)' if record['reused'] else ''}",
            flush=True,
        )


def _now(fn, *args) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(fn(*args))
    return future


def train_all(ladders: list[Ladder], size: str, workers: int, reuse_only: bool = False) -> None:
    context = multiprocessing.get_context("spawn")
    pool = (
        concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context)
        if workers > 1 and not reuse_only
        else None
    )
    try:
        print("sweep", flush=True)
        train_phase(
            pool, [(la, s, train_run) for la in ladders for s in la.plan.sweep_runs()], reuse_only
        )
        for la in ladders:
            la.lr, _ = choose_lr([la.runs[s.name] for s in la.plan.sweep_runs()])
        trunks = {la.label: split_trunks(la.plan.ladder_runs(la.lr), la.plan) for la in ladders}
        print("trunks", flush=True)
        train_phase(
            pool,
            [(la, s, train_trunk_run) for la in ladders for s in trunks[la.label][0]],
            reuse_only,
        )
        print("branches and held-out targets", flush=True)
        jobs = [(la, s, train_branch_run) for la in ladders for s in trunks[la.label][1]]
        jobs += [(la, s, train_run) for la in ladders for s in target_specs(size, la.lr)]
        train_phase(pool, jobs, reuse_only)
        extra = SIZES[size].get("extra_widths", ())
        if extra:
            print(f"extra widths {list(extra)}: trunks, then branches", flush=True)
            plans = {la.label: dataclasses.replace(la.plan, widths=tuple(extra)) for la in ladders}
            split = {la.label: split_trunks(plans[la.label].ladder_runs(la.lr), plans[la.label])
                     for la in ladders}  # fmt: skip
            for part, fn in ((0, train_trunk_run), (1, train_branch_run)):
                jobs = [(la, s, fn) for la in ladders for s in split[la.label][part]]
                train_phase(pool, jobs, reuse_only, plans)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    for la in ladders:
        bad = [r["name"] for r in la.runs.values() if r["status"] != "ok" and r["stage"] != "sweep"]
        if reuse_only:
            continue
        if bad:
            raise SystemExit(f"{la.label}: runs {bad} diverged; lower the sweep's grid")


# ----------------------------------------------------------------------------- methods


COUNTINGS = {
    # N as the ladder counts it by default (Kaplan et al. 2020): blocks only.
    "nonemb": lambda r: r["N_nonembedding"],
    # N with the token embedding and the head (Porian et al. 2024 found this matters small).
    "emb": lambda r: r["N_total"],
    # The engine's FLOPs per token / 6 (head and attention included; Porian et al. 2024).
    "flops": lambda r: r["flops_per_token"] / 6.0,
}
LAWS = ("chinchilla", "overtrain", "kaplan_nd")


def methods() -> list[tuple[str, str, str]]:
    found = [(f"{law}/{count}", law, count) for law in LAWS for count in COUNTINGS]
    # One exponent for N and D (Hoffmann et al. 2022 found alpha ~ beta): 4 parameters.
    return [*found, ("chinchilla-tied/nonemb", "chinchilla", "nonemb")]


def ladder_points(runs: list[dict], count: str) -> list[dict]:
    n_of = COUNTINGS[count]
    return [
        {"run": r["name"], "N": float(n_of(r)), "D": float(r["D"]), "loss": r["final_val_loss"]}
        for r in runs
    ]


def fit_law(points: list[dict], law: str, seed: int, tied: bool = False):
    from everyscale import laws

    tie = {"beta": "alpha"} if tied else None
    return laws.fit(points, law=law, bootstrap=BOOTSTRAP, seed=seed, level=LEVEL, tie=tie)


def seed_sigma(ladders: list[Ladder], corpus: str) -> float | None:
    """Run-to-run noise from the seeds: the spread of log losses between two seeds of the
    same ladder point, divided by sqrt(2) (one run's share)."""
    by_seed = [la for la in ladders if la.corpus == corpus]
    if len(by_seed) < 2:
        return None
    a, b = by_seed[0], by_seed[1]
    diffs = [
        math.log(a.runs[n]["final_val_loss"] / b.runs[n]["final_val_loss"])
        for n in a.runs
        if a.runs[n]["stage"] == "ladder" and n in b.runs
    ]
    return float(np.sqrt(np.mean(np.square(diffs)) / 2.0)) if diffs else None


def intervals(samples: np.ndarray, sigmas: dict[str, float], rng) -> dict:
    """The bootstrap's percentile interval, and one per noise model: each bootstrap
    prediction times log-normal run noise of that ``sigma`` (a new run's own noise)."""
    q = [(1 - LEVEL) / 2, (1 + LEVEL) / 2]
    result = {"bootstrap": tuple(float(x) for x in np.quantile(samples, q))}
    z = rng.standard_normal((8, samples.size))
    for name, sigma in sigmas.items():
        noisy = samples[None, :] * np.exp(sigma * z)
        result[name] = tuple(float(x) for x in np.quantile(noisy, q))
    return result


INTERVALS = ("bootstrap", "residual", "residual+seed")


def pooled_runs(ladders: list[Ladder], corpus: str) -> list[dict]:
    """The corpus's ladder points with the loss averaged over its seeds (same N, D)."""
    group = [la for la in ladders if la.corpus == corpus]
    first = group[0]
    pooled = []
    for spec in first.plan.ladder_runs(first.lr):
        record = dict(first.runs[spec.name])
        names = [la.runs[n]["final_val_loss"] for la in group for n in [spec.name] if n in la.runs]
        record["final_val_loss"] = float(np.mean(names))
        pooled.append(record)
    return pooled


def all_seed_runs(ladders: list[Ladder], corpus: str, widths=None) -> list[dict]:
    """Every seed's ladder runs of the corpus as separate points (two runs per point)."""
    runs = []
    for la in (la for la in ladders if la.corpus == corpus):
        for spec in la.plan.ladder_runs(la.lr):
            if widths is None or spec.width in widths:
                runs.append({**la.runs[spec.name], "name": f"{la.label}/{spec.name}"})
    return runs


def extra_width_runs(la: Ladder, size: str) -> list[dict] | None:
    """The ladder with SIZES[size]["extra_widths"] added, or None before they are trained."""
    extra = SIZES[size].get("extra_widths", ())
    plan = dataclasses.replace(la.plan, widths=tuple(sorted({*extra, *la.plan.widths})))
    names = [s.name for s in plan.ladder_runs(la.lr)]
    if not extra or any(n not in la.runs for n in names):
        return None
    return [la.runs[n] for n in names]


# The methods also scored on the design variants (seeds, an extra width).
VARIANT_METHODS = ("chinchilla/nonemb", "chinchilla-tied/nonemb", "overtrain/nonemb")


def variants(ladders: list[Ladder], la: Ladder, size: str) -> dict[str, list[dict]]:
    """Ladder designs scored beside the plain one: each a list of ladder runs to fit."""
    out = {}
    if any(other.corpus == la.corpus and other is not la for other in ladders):
        out["+seeds"] = pooled_runs(ladders, la.corpus)  # the mean of two seeds per point
        out["+seeds-all"] = all_seed_runs(ladders, la.corpus)  # both seeds as points
        smallest = min(la.plan.widths)
        out["+seeds-smallest"] = [  # two seeds at the smallest width only
            *all_seed_runs(ladders, la.corpus, widths={smallest}),
            *(la.runs[s.name] for s in la.plan.ladder_runs(la.lr) if s.width != smallest),
        ]
    wider = extra_width_runs(la, size)
    if wider is not None:
        out["+w" + ",".join(str(w) for w in SIZES[size]["extra_widths"])] = wider
    return out


def law_rows(la: Ladder, targets, ladder_runs, tag: str, sigma_seed, rng, only=None) -> list[dict]:
    """Every law x counting (or those named in ``only``) fitted to ``ladder_runs``, scored on
    ``la``'s targets."""
    rows = []
    for name, law, count in methods():
        if only is not None and name not in only:
            continue
        points = ladder_points(ladder_runs, count)
        fit = fit_law(points, law, la.seed, tied=name.startswith("chinchilla-tied"))
        sigma_r = residual_sigma(fit, {k: [p[k] for p in points] for k in ("N", "D", "loss")})
        sigmas = {"residual": sigma_r, "residual+seed": math.hypot(sigma_r, sigma_seed or 0.0)}
        for t in targets:
            n, d = float(COUNTINGS[count](t)), float(t["D"])
            prediction = float(fit.predict(N=n, D=d))
            samples = np.asarray(fit.prediction_samples(N=n, D=d), dtype=float)
            rows.append(
                {
                    **_key(la, t, name + tag),
                    "prediction": prediction,
                    "error": naive.relative_error(prediction, t["final_val_loss"]),
                    "sigma_residual": sigma_r,
                    "sigma_seed": sigma_seed,
                    "intervals": intervals(samples, sigmas, rng),
                }
            )
    return rows


def _key(la: Ladder, target: dict, method: str) -> dict:
    return {
        "ladder": la.label,
        "corpus": la.corpus,
        "seed": la.seed,
        "target": target["name"],
        "method": method,
        "actual": target["final_val_loss"],
    }


def naive_rows(la: Ladder, targets, ladder_runs) -> list[dict]:
    losses = [r["final_val_loss"] for r in ladder_runs]
    compute = {
        "6ND": lambda r: 6.0 * r["N_nonembedding"] * r["D"],
        "flops": lambda r: r["flops_per_token"] * r["D"],
    }
    rows = []
    for t in targets:
        guesses = {"naive/best_in_ladder": naive.best_in_ladder(losses)}
        for label, c in compute.items():
            line = naive.loglog_compute([c(r) for r in ladder_runs], losses, c(t))
            guesses[f"naive/loglog_{label}"] = line
        for name, guess in guesses.items():
            rows.append(
                {
                    **_key(la, t, name),
                    "prediction": guess,
                    "error": naive.relative_error(guess, t["final_val_loss"]),
                }
            )
    return rows


@planned_extrapolation()
def evaluate(ladders: list[Ladder], size: str) -> list[dict]:
    """One row per (ladder, target, method): predictions, errors, intervals."""
    rows = []
    rng = np.random.default_rng(0)
    for la in ladders:
        if any(s.name not in la.runs for s in la.plan.ladder_runs(la.lr)):
            continue  # --reuse-only before the ladder stage finished
        ladder_runs = [la.runs[s.name] for s in la.plan.ladder_runs(la.lr)]
        targets = [la.runs[s.name] for s in target_specs(size, la.lr) if s.name in la.runs]
        sigma_seed = seed_sigma(ladders, la.corpus)
        rows += law_rows(la, targets, ladder_runs, "", sigma_seed, rng)
        for tag, runs in variants(ladders, la, size).items():
            rows += law_rows(la, targets, runs, tag, sigma_seed, rng, only=VARIANT_METHODS)
        rows += naive_rows(la, targets, ladder_runs)
    return rows


# ----------------------------------------------------------------------------- the table


def table(rows: list[dict], corpora: list[str]) -> str:
    names = list(dict.fromkeys(r["method"] for r in rows))
    head = "| method | " + " | ".join(f"{c} mean" for c in corpora) + " | mean | worst |"
    head += "".join(f" 95% {kind}: coverage, median half-width |" for kind in INTERVALS)
    lines = [head, "|" + "---|" * (len(corpora) + 3 + len(INTERVALS))]
    for name in names:
        mine = [r for r in rows if r["method"] == name]
        per = [np.mean([r["error"] for r in mine if r["corpus"] == c]) for c in corpora]
        errors = [r["error"] for r in mine]
        cells = [f"{100 * e:.2f}%" for e in per]
        cells += [f"{100 * np.mean(errors):.2f}%", f"{100 * max(errors):.2f}%"]
        for kind in INTERVALS:
            cells.append(coverage_cell(mine, kind))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def coverage(rows: list[dict], kind: str) -> tuple[float, float] | None:
    with_intervals = [r for r in rows if "intervals" in r]
    if not with_intervals:
        return None
    inside = [r["intervals"][kind][0] <= r["actual"] <= r["intervals"][kind][1] for r in rows]
    half = [(r["intervals"][kind][1] - r["intervals"][kind][0]) / 2 / r["prediction"] for r in rows]
    return float(np.mean(inside)), float(np.median(half))


def coverage_cell(rows: list[dict], kind: str) -> str:
    result = coverage(rows, kind)
    if result is None:
        return "-"
    return f"{100 * result[0]:.0f}% of {len(rows)}, ±{100 * result[1]:.2f}%"


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/bench-ladder", help="run cache (reused)")
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--corpora", default="stdlib,shakespeare,docs")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--horizon-lr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the ladder's horizon learning rate (default; --no-horizon-lr: the sweep's rate for "
        "every run). Each setting needs its own --out",
    )
    parser.add_argument(
        "--reuse-only",
        action="store_true",
        help="train nothing: score the finished runs only (e.g. while a benchmark runs)",
    )
    parser.add_argument("--markdown", help="write the table to this file")
    parser.add_argument("--json", help="write every prediction to this file")
    args = parser.parse_args(argv)
    out = Path(args.out)
    corpora = [c for c in args.corpora.split(",") if c]
    seeds = [int(s) for s in args.seeds.split(",") if s]

    started, cpu = time.time(), time.process_time()
    ladders = make_ladders(args.size, corpora, seeds, out, args.horizon_lr)
    if "docs" in corpora:
        data = docs_corpus(out).read_bytes()
        print(f"docs corpus: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    train_all(ladders, args.size, args.workers, args.reuse_only)
    wall = time.time() - started
    rows = evaluate(ladders, args.size)
    trained_cpu = sum(
        r.get("cpu_seconds") or 0.0 for la in ladders for r in la.runs.values() if not r["reused"]
    )
    tokens = ladder_tokens(ladders[0].plan)
    text = table(rows, corpora)
    summary = (
        f"{len(ladders)} ladders ({', '.join(corpora)} x seeds {seeds}), "
        f"{len({(r['ladder'], r['target']) for r in rows})} held-out targets; wall {wall:.0f} s "
        f"(training CPU this session {trained_cpu:.0f} s: about {trained_cpu / args.workers:.0f} s "
        f"on {args.workers} idle cores; fits {time.process_time() - cpu:.0f} s CPU); ladder "
        f"stage {tokens['trained']:,} tokens per ladder against {tokens['alone']:,} trained alone "
        f"(ratio {tokens['ratio']:.3f})"
    )
    print(summary)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(summary + "\n\n" + text + "\n")
    if args.json:
        atomic_write_json(args.json, {"summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
