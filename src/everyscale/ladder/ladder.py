"""Run a scaling ladder: tune small, train the ladder, fit, predict big, then check.

``run_ladder(plan, out)`` is everyscale's main job (``everyscale ladder``, ``make demo``):

1. **tune**: sweep the learning rate of the preset on the smallest model;
2. **transfer**: train every (width, token budget) of the ladder with that learning rate and
   a warmup-stable-decay schedule (each run ends annealed);
3. **fit**: the Chinchilla law ``L(N, D) = E + A/N^alpha + B/D^beta`` (Hoffmann et al. 2022
   [H], fitted as in Besiroglu et al. 2024 [B]) and the over-training law of Gadre et al. 2024
   [Ga], with bootstrap intervals resampled by run;
4. **predict** the held-out model's validation loss with an interval and write it to
   ``prediction.json`` *before* the model is trained;
5. **check**: train the held-out model and report the relative error, whether the truth fell
   inside the interval, and the two naive predictions (:mod:`everyscale.ladder.naive`).

Every run keeps its own directory ``OUT/runs/NAME`` with the training engine's
``config.json``, ``metrics.jsonl`` and ``summary.json``; with ``resume=True`` a finished run
is reused when its recorded config and optimizer settings match
(:func:`everyscale.train.reusable_summary`; one with other settings is refused), so a killed
ladder continues where it stopped. A run that diverges in the ladder or the held-out stage
stops the ladder with a :class:`LadderError`; the finished runs are kept and ``ladder.json``
records the failure (``status: "failed"``) with no fit reported.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from everyscale.ladder import naive, noise
from everyscale.ladder.plan import LadderPlan, RunSpec
from everyscale.laws.fit import planned_extrapolation
from everyscale.train.checkpoint import atomic_write_json, atomic_write_text

# The law the prediction comes from, and the one reported beside it.
PRIMARY_LAW = "chinchilla"
SECONDARY_LAW = "overtrain"
INTERVAL_LEVEL = 0.95  # the prediction interval's coverage (bootstrap percentiles)


class LadderError(ValueError):
    """The ladder cannot go on (a diverged run, an unidentifiable fit); finished runs are kept."""


# A training function: (spec, plan, run_dir, resume) -> the run's summary dict.
TrainFn = Callable[[RunSpec, LadderPlan, Path, bool], dict]


def run_ladder(
    plan: LadderPlan,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    workers: int = 2,
    train_fn: TrainFn | None = None,
    check: bool = True,
) -> dict:
    """Run the whole ladder under ``out`` and return what ``ladder.json`` holds.

    ``check=False`` stops after the prediction is written (``status`` "predicted"): the
    held-out model is not trained, and a later call with ``resume=True`` trains it and checks
    the prediction already written.

    ``workers`` runs of a stage train at once, each in its own process on one thread: on a
    few CPU cores, small models use two single-threaded processes far better than one process
    with two threads (and two threads per process on a busy machine are much slower still).
    The numbers do not depend on ``workers``. ``train_fn`` replaces the training engine (tests
    use it; it must be a module-level function when ``workers > 1``); by default each run is
    ``everyscale.train.run`` on the plan's GPT.
    Raises :class:`LadderError` (a ``ValueError``) when a run diverges or the law cannot be
    fitted; ``ladder.json`` and ``report.md`` then describe the failure. ``out`` is locked for
    the ladder's life (:class:`everyscale.train.rundir.RunLock`): a second ladder on it is
    refused (:class:`~everyscale.train.rundir.RunFolderLocked`, a ``ValueError``).
    """
    from everyscale.train.rundir import RunLock

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers: must be a positive integer, got {workers!r}")
    out = Path(out)
    with RunLock(out, flag="--out"):  # one ladder per folder; each of its runs locks its own
        return _run_stages(plan, out, resume, progress, workers, train_fn, check)


def _run_stages(
    plan: LadderPlan,
    out: Path,
    resume: bool,
    progress: bool,
    workers: int,
    train_fn: TrainFn | None,
    check: bool = True,
) -> dict:
    """:func:`run_ladder`'s stages, with ``out`` locked."""
    from everyscale.ladder import report

    _prepare_out(out, plan, resume)
    train_fn = train_fn or train_run
    result: dict = {"status": "running", "plan": plan.to_json(), "runs": []}
    started = time.time()

    specs = [*plan.sweep_runs(), *plan.ladder_runs(), *([plan.target_run()] if check else [])]
    bar = tqdm(
        total=sum(_cost_units(plan, s) for s in specs),
        disable=not progress,
        desc="ladder",
        unit="run/10",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}",
    )
    pool = None
    if workers > 1:
        # spawn, not fork: a forked child of a process that already ran torch can deadlock.
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context)

    def train(
        stage_specs: list[RunSpec],
        *,
        may_diverge: bool,
        fn: TrainFn = train_fn,
        phase: str | None = None,
    ) -> list[dict]:
        """Train a stage's runs (in parallel when there is a pool); records in spec order."""
        if not stage_specs:
            return []
        bar.set_postfix_str(f"{phase or stage_specs[0].stage}: {len(stage_specs)} runs")
        args = [(spec, plan, out, resume, fn) for spec in stage_specs]
        records: dict[str, dict] = {}
        if pool is None or len(stage_specs) == 1:
            completed = (execute_run(*a) for a in args)
        else:
            futures = [pool.submit(execute_run, *a) for a in args]
            completed = (f.result() for f in concurrent.futures.as_completed(futures))
        for record in completed:
            if phase is not None:
                record["phase"] = phase
            records[record["name"]] = record
            bar.update(_cost_units(plan, _spec_of(stage_specs, record["name"])))
            if record["status"] == "diverged" and not may_diverge:
                # Keep the records of the runs that finished, then stop.
                result["runs"].extend(records.values())
                raise LadderError(
                    f"run {record['name']} (width {record['width']}, {record['D']:,} tokens, "
                    f"lr {record['lr']:g}) diverged: {record.get('error', 'non-finite loss')}. "
                    f"The finished runs are kept in {out / 'runs'} and no law was fitted; lower "
                    f"the learning-rate grid (--lr-grid) and run the ladder again with a new --out"
                )
        ordered = [records[spec.name] for spec in stage_specs]
        result["runs"].extend(ordered)
        return ordered

    try:
        # 1. tune: a sweep on the smallest model; diverged learning rates are data, not errors.
        sweep = train(plan.sweep_runs(), may_diverge=True)
        lr, lr_note = choose_lr(sweep)
        result["lr"] = {"chosen": lr, "note": lr_note, "grid": list(plan.lr_grid)}

        # 2. transfer: the ladder with the chosen learning rate (trunks, then their branches).
        if plan.branches and train_fn is train_run:
            trunks, shorter = split_trunks(plan.ladder_runs(lr), plan)
            done = train(trunks, may_diverge=False, fn=train_trunk_run, phase="trunk")
            done += train(shorter, may_diverge=False, fn=train_branch_run, phase="branch")
            by_name = {r["name"]: r for r in done}
            ladder = [by_name[spec.name] for spec in plan.ladder_runs(lr)]
        else:
            ladder = train(plan.ladder_runs(lr), may_diverge=False)
        result["ladder_tokens"] = ladder_tokens(plan)

        # 3-4. fit and predict, written down before the held-out model is trained.
        target_spec = plan.target_run(lr)
        target_info = describe_run(target_spec, plan)
        fit_cpu = time.process_time()
        prediction = _load_or_make_prediction(out, plan, ladder, target_info, resume)
        result["fit_cpu_seconds"] = time.process_time() - fit_cpu
        result["fits"] = prediction.pop("fits")
        result.update(prediction)

        if not check:
            result["status"] = "predicted"
            return result
        # 5. check.
        (target,) = train([target_spec], may_diverge=False)
        result["actual"] = target["final_val_loss"]
        result.update(compare(prediction, target["final_val_loss"]))
        result["status"] = "done"
    except KeyboardInterrupt:
        result["status"] = "interrupted"
        result["error"] = f"interrupted; continue with --resume --out {out}"
        raise
    except Exception as err:
        # The report leads with the failure; no verdict is drawn from a ladder that stopped.
        result["status"] = "failed"
        result["error"] = (
            str(err) if isinstance(err, LadderError) else f"{type(err).__name__}: {err}"
        )
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        result["wall_seconds"] = time.time() - started
        result["workers"] = workers
        result["idle_wall_estimate_seconds"] = idle_wall_estimate(result, workers)
        report.write_all(out, plan, result)
    return result


def idle_wall_estimate(result: dict, workers: int) -> float | None:
    """The ladder's wall time on ``workers`` idle cores, from the CPU time each run used.

    On a shared machine wall time says little; the CPU seconds of each run (one thread each)
    do not depend on the neighbours as much. Each stage's runs are packed onto ``workers``
    cores longest first (the makespan of that greedy schedule), stages run one after another,
    and the fit's CPU time is added. ``None`` when some run was reused (its CPU time is not
    known in this session).
    """
    runs = result.get("runs", [])
    if not runs or any(r.get("cpu_seconds") is None for r in runs if r["status"] == "ok"):
        return None
    total = result.get("fit_cpu_seconds", 0.0)
    for stage in ("sweep", "trunk", "branch", "ladder", "target"):  # one after another
        loads = [0.0] * workers
        for cpu in sorted(
            (r.get("cpu_seconds") or 0.0 for r in runs if r.get("phase", r["stage"]) == stage),
            reverse=True,
        ):
            loads[loads.index(min(loads))] += cpu
        total += max(loads)
    return total


def _spec_of(specs: list[RunSpec], name: str) -> RunSpec:
    return next(spec for spec in specs if spec.name == name)


# ----------------------------------------------------------------------------- runs


def _cost_units(plan: LadderPlan, spec: RunSpec) -> int:
    """A run's cost for the progress bar in whole tenths (integers add up exactly)."""
    return max(1, round(10 * _run_cost(plan, spec)))


def _run_cost(plan: LadderPlan, spec: RunSpec) -> float:
    """A run's relative cost for the progress bar: tokens trained x (width^2 + a per-token
    overhead); a branch trains its cooldown only."""
    overhead = 64**2  # embedding, head and Python overhead dominate the smallest models
    tokens = spec.tokens
    if spec.stage == "ladder" and plan.branches and spec.tokens != max(plan.tokens):
        tokens = branch_tokens(plan, spec.tokens)
    return tokens * (spec.width**2 + overhead) / (min(plan.tokens) * min(plan.widths) ** 2)


# ----------------------------------------------------------------------------- WSD branches


def split_trunks(specs: list[RunSpec], plan: LadderPlan) -> tuple[list[RunSpec], list[RunSpec]]:
    """The ladder's trunks (each width's largest budget, widest first: the longest runs start
    first) and the branches of their shorter budgets."""
    trunks = [s for s in specs if s.name == plan.trunk_of(s.width, s.replicate)]
    branches = [s for s in specs if s.name != plan.trunk_of(s.width, s.replicate)]
    return sorted(trunks, key=lambda s: -s.width), branches


def branch_tokens(plan: LadderPlan, tokens: int) -> int:
    """The tokens a branch trains: its cooldown, from its trunk's snapshot to its end."""
    from everyscale.train.extend import cooldown_start

    config = train_config(RunSpec("", "ladder", min(plan.widths), tokens, 1.0), plan, Path(), False)
    return (config.steps - cooldown_start(config)) * plan.tokens_per_step


def ladder_tokens(plan: LadderPlan) -> dict:
    """Tokens the ladder stage trains, with branches and with every run trained alone."""
    trunks = sum(plan.seeds_at(w) for w in plan.widths)  # one per width and seed
    alone = sum(plan.steps_for(t) * plan.tokens_per_step for t in plan.tokens) * trunks
    if not plan.branches:
        return {"trained": alone, "alone": alone, "ratio": 1.0}
    longest = plan.steps_for(max(plan.tokens)) * plan.tokens_per_step
    cooldowns = sum(branch_tokens(plan, t) for t in plan.tokens if t != max(plan.tokens))
    trained = (longest + cooldowns) * trunks
    return {"trained": trained, "alone": alone, "ratio": trained / alone}


def _branch_start(spec: RunSpec, plan: LadderPlan) -> int:
    from everyscale.train.extend import cooldown_start

    return cooldown_start(train_config(spec, plan, Path(), False))


def train_trunk_run(spec: RunSpec, plan: LadderPlan, run_dir: Path, resume: bool) -> dict:
    """Train a width's trunk, keeping a snapshot where each shorter budget's cooldown starts."""
    from everyscale.train.branch import train_trunk

    shorter = [RunSpec("", "ladder", spec.width, t, spec.lr, spec.replicate) for t in plan.tokens]
    steps = [_branch_start(s, plan) for s in shorter if s.tokens != spec.tokens]
    return train_trunk(
        train_config(spec, plan, run_dir, resume),
        steps,
        optimizer_factory=optimizer_factory(spec, plan),
        fingerprint=optimizer_fingerprint(spec, plan),
    )


def train_branch_run(spec: RunSpec, plan: LadderPlan, run_dir: Path, resume: bool) -> dict:
    """Train a shorter budget as a cooldown branched from its width's trunk."""
    from everyscale.train.branch import branch, snapshot_path

    trunk_dir = run_dir.parent / plan.trunk_of(spec.width, spec.replicate)
    return branch(
        snapshot_path(trunk_dir, _branch_start(spec, plan)),
        train_config(spec, plan, run_dir, resume),
        optimizer_factory=optimizer_factory(spec, plan),
        fingerprint=optimizer_fingerprint(spec, plan),
        trunk_metrics=trunk_dir / "metrics.jsonl",
    )


def describe_run(spec: RunSpec, plan: LadderPlan) -> dict:
    """Shape and counts of a run, computed before training: N, D (tokens seen) and C = 6ND."""
    from everyscale.ladder.plan import build_ladder_model

    model = build_ladder_model(plan, spec.width)
    n_total = int(model.num_params(embeddings=True))
    n_nonembedding = int(model.num_params(embeddings=False))
    steps = plan.steps_for(spec.tokens)
    tokens_seen = steps * plan.tokens_per_step
    n = n_total if plan.embeddings else n_nonembedding
    return {
        "name": spec.name,
        "stage": spec.stage,
        "width": spec.width,
        "depth": plan.depth,
        "heads": plan.heads_for(spec.width),
        "lr": spec.lr,
        "seed": plan.seed + spec.replicate,
        "steps": steps,
        "N": n,
        "N_total": n_total,
        "N_nonembedding": n_nonembedding,
        "D": tokens_seen,
        "C": 6.0 * n * tokens_seen,
        "flops_per_token": float(model.flops_per_token()),
    }


def execute_run(
    spec: RunSpec, plan: LadderPlan, out: Path, resume: bool, train_fn: TrainFn
) -> dict:
    """Train (or reuse) one run and return its record for ladder.json.

    Runs in a worker process when the ladder trains in parallel, so it returns plain data
    (a divergence becomes ``status: "diverged"``, not an exception crossing processes).
    """
    from everyscale.train import reusable_summary

    record = describe_run(spec, plan)
    run_dir = out / "runs" / spec.name
    record["dir"] = str(run_dir.relative_to(out))
    config = train_config(spec, plan, run_dir, resume)
    previous = reusable_summary(config, optimizer_fingerprint(spec, plan))
    record["reused"] = previous is not None
    if record["reused"] and previous["status"] == "diverged":
        # Training is deterministic: the same run would diverge again.
        record.update(status="diverged", final_val_loss=None, error=previous.get("message", ""))
        return record
    cpu_start = time.process_time()  # this process trains one run at a time
    if record["reused"]:
        summary = previous
    else:
        try:
            summary = train_fn(spec, plan, run_dir, resume)
        except Exception as err:
            if not _is_divergence(err):
                raise
            record.update(status="diverged", final_val_loss=None, error=str(err))
            return record
    loss = _final_loss(summary)
    if not math.isfinite(loss):
        record.update(status="diverged", final_val_loss=None, error="non-finite final loss")
        return record
    record.update(
        status="ok",
        final_val_loss=loss,
        wall_seconds=float(summary.get("wall_seconds", math.nan)),
        cpu_seconds=None if record["reused"] else time.process_time() - cpu_start,
    )
    return record


def _final_loss(summary: dict) -> float:
    loss = summary.get("final_val_loss")
    if loss is None:
        raise LadderError(f"summary.json has no final_val_loss (keys: {sorted(summary)})")
    return float(loss)


def _is_divergence(err: Exception) -> bool:
    """Whether ``err`` is a non-finite stop: the engine's loss check or the optimizer's own."""
    from everyscale.optim import NonFiniteGradientError
    from everyscale.train import NonFiniteLossError

    return isinstance(err, (NonFiniteLossError, NonFiniteGradientError))


def train_config(spec: RunSpec, plan: LadderPlan, run_dir: Path, resume: bool):
    """The ``everyscale.train.TrainConfig`` of one ladder run.

    Validation runs four times per run (for the loss curves) and at the end; a checkpoint is
    written every quarter so a killed ladder loses at most a quarter of one run, and deleted
    once the run completes (its ``summary.json`` is what the ladder reuses).
    """
    from everyscale.train import TrainConfig

    steps = plan.steps_for(spec.tokens)
    return TrainConfig(
        model="gpt",
        data=plan.data,
        width=spec.width,
        depth=plan.depth,
        heads=plan.heads_for(spec.width),
        context=plan.context,
        optimizer=plan.preset,
        lr=spec.lr,
        schedule=plan.schedule,
        warmup=plan.warmup if not plan.branches else 0.0,
        # Branches share their trunk's warmup step for step: an absolute count, set by the
        # shortest budget.
        warmup_steps=round(plan.warmup * plan.steps_for(min(plan.tokens)))
        if plan.branches and plan.warmup
        else None,
        cooldown=plan.cooldown,
        cooldown_shape=plan.cooldown_shape,
        **_power_decay(spec, plan),
        steps=steps,
        batch_size=plan.batch_size,
        eval_every=max(1, steps // 4),
        val_windows=plan.val_windows,
        checkpoint_every=max(1, steps // 4),
        keep_checkpoint=False,
        seed=plan.seed + spec.replicate,
        threads=plan.threads,
        out=str(run_dir),
        resume=resume,
        quiet=True,
    )


def _power_decay(spec: RunSpec, plan: LadderPlan) -> dict:
    """The power decay of a ladder or target run's stable phase (none for the sweep, which
    runs at the sweep's own horizon): from where a sweep run's cooldown starts."""
    if not plan.horizon_decay or spec.stage == "sweep":
        return {}
    start = _branch_start(plan.sweep_runs()[0], plan)
    return {"power_decay": plan.horizon_decay, "power_decay_from": max(1, start)}


def optimizer_factory(spec: RunSpec, plan: LadderPlan):
    """``model -> optimizer`` through the scale package: the transferred settings.

    Every parameter of a norm-ball preset (scion, ...) starts on its ball at radius
    ``plan.init_radius`` (``everyscale.scale.init_``; 1 by default: at the preset's own radii
    of 50 the GPT's logits start near 1e4, see docs/transfer.md), and the learning rate moves
    from the smallest ladder model (the proxy the sweep tuned) to this width by the
    ``everyscale.scale`` plan (for the Spectral/Sign geometry: unchanged, [S] Lemma C.6).
    Presets without balls (adamw, sgd) keep the model's own initialization.
    """
    from everyscale.scale.transfer import make_optimizer_factory

    return make_optimizer_factory(plan.preset, spec.lr, _proxy(plan), init=_init(plan))


def optimizer_fingerprint(spec: RunSpec, plan: LadderPlan) -> dict:
    """The settings of :func:`optimizer_factory` (what a reused run must have been trained with)."""
    from everyscale.scale.transfer import factory_fingerprint

    return factory_fingerprint(plan.preset, spec.lr, _proxy(plan), init=_init(plan))


def _proxy(plan: LadderPlan) -> dict:
    from everyscale.ladder.plan import build_ladder_model
    from everyscale.scale.parametrization import base_shapes

    return base_shapes(build_ladder_model(plan, min(plan.widths)))


def _init(plan: LadderPlan) -> str | float:
    return "default" if plan.init_radius is None else plan.init_radius


def train_run(spec: RunSpec, plan: LadderPlan, run_dir: Path, resume: bool) -> dict:
    """Train one ladder run with ``everyscale.train.run`` and return its summary."""
    from everyscale.train import run

    config = train_config(spec, plan, run_dir, resume)
    return run(
        config,
        optimizer_factory=optimizer_factory(spec, plan),
        optimizer_fingerprint=optimizer_fingerprint(spec, plan),
    )


def choose_lr(sweep: list[dict]) -> tuple[float, str]:
    """The sweep's best learning rate (lowest final validation loss) and a note on it.

    The note warns when the best sits on the edge of the grid (the true optimum may lie
    outside it). Raises :class:`LadderError` when every learning rate diverged.
    """
    finite = [r for r in sweep if r["status"] == "ok"]
    if not finite:
        raise LadderError(
            "every learning rate of the sweep diverged; lower the grid (e.g. --lr-grid "
            "2^-10:2^-6) or check the data"
        )
    best = min(finite, key=lambda r: r["final_val_loss"])
    lrs = sorted(r["lr"] for r in sweep)
    if len(lrs) > 1 and best["lr"] in (lrs[0], lrs[-1]):
        side = "smallest" if best["lr"] == lrs[0] else "largest"
        note = f"the best learning rate is the {side} of the grid; the optimum may lie outside it"
    else:
        note = "interior optimum of the grid"
    return float(best["lr"]), note


# ----------------------------------------------------------------------------- fit and predict


def write_points(path: Path, runs: list[dict]) -> Path:
    """The ladder as a points file the laws package reads: N, D, C, loss, run."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["run", "N", "D", "C", "loss"])
    for r in runs:
        writer.writerow([r["name"], r["N"], r["D"], repr(r["C"]), repr(r["final_val_loss"])])
    atomic_write_text(path, text.getvalue())
    return path


def fit_and_predict(points_path: Path, plan: LadderPlan, ladder: list[dict], target: dict) -> dict:
    """Fit the laws, predict the target with intervals, and add the naive predictions."""
    from everyscale import laws

    points = laws.load_points(points_path, embeddings=plan.embeddings)
    fits, predictions = {}, {}
    with planned_extrapolation():  # the held-out model is beyond the ladder by design
        for law in (PRIMARY_LAW, SECONDARY_LAW):
            fits[law], entry = _fit_one(law, points, plan, target)
            if entry is not None:
                predictions[law] = entry
    primary = predictions[PRIMARY_LAW]
    return {
        "law": PRIMARY_LAW,
        "target": target,
        "prediction": primary["prediction"],
        "interval": primary["interval"],
        "interval_bootstrap": primary["interval_bootstrap"],
        "interval_level": INTERVAL_LEVEL,
        "interval_model": "bootstrap fits x log-normal noise of the residuals' spread "
        "(everyscale.ladder.noise)",
        "predictions": predictions,
        "naive": naive.naive_predictions(
            [r["C"] for r in ladder], [r["final_val_loss"] for r in ladder], target["C"]
        ),
        "fits": fits,
    }


def _fit_one(law: str, points, plan: LadderPlan, target: dict) -> tuple[dict, dict | None]:
    """Fit ``law`` and predict the target with both intervals: the fit as JSON and the
    prediction entry (None, with the error in the fit, when a secondary law cannot be fitted)."""
    from everyscale import laws

    try:
        fit = laws.fit(
            points, law=law, bootstrap=plan.bootstrap, seed=plan.seed, level=INTERVAL_LEVEL
        )
    except ValueError as err:
        if law == PRIMARY_LAW:
            raise LadderError(f"the {law} law cannot be fitted to this ladder: {err}") from err
        return {"error": str(err)}, None
    inputs = {"N": float(target["N"]), "D": float(target["D"])}
    entry = {"prediction": float(fit.predict(**inputs))}
    if plan.bootstrap:
        lo, hi = fit.interval(**inputs)
        entry["interval_bootstrap"] = [float(lo), float(hi)]
    else:
        entry["interval_bootstrap"] = [entry["prediction"], entry["prediction"]]
    # The interval of a new run: the bootstrap's spread and the run's own noise.
    entry["sigma_residual"] = noise.residual_sigma(fit, points)
    lo, hi = noise.noisy_interval(fit, entry["sigma_residual"], INTERVAL_LEVEL, plan.seed, **inputs)
    entry["interval"] = [lo, hi]
    return json.loads(fit.to_json()), entry


def _load_or_make_prediction(
    out: Path, plan: LadderPlan, ladder: list[dict], target: dict, resume: bool
) -> dict:
    """Fit and predict, and write ``prediction.json`` before the target is trained.

    On resume an existing prediction is kept as written (it predates the target's training).
    """
    path = out / "prediction.json"
    if resume and path.exists():
        return json.loads(path.read_text())
    prediction = fit_and_predict(write_points(out / "points.csv", ladder), plan, ladder, target)
    prediction["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(path, prediction)
    return json.loads(path.read_text())


def compare(prediction: dict, actual: float) -> dict:
    """Relative errors of the law and the naive predictions against the held-out truth."""
    lo, hi = prediction["interval"]
    naive_results = {
        name: {**entry, "relative_error": naive.relative_error(entry["prediction"], actual)}
        for name, entry in prediction["naive"].items()
    }
    rel = naive.relative_error(prediction["prediction"], actual)
    better_naive = min(v["relative_error"] for v in naive_results.values())
    others = {
        law: {**p, "relative_error": naive.relative_error(p["prediction"], actual)}
        for law, p in prediction["predictions"].items()
    }
    return {
        "relative_error": rel,
        "inside_interval": bool(lo <= actual <= hi),
        "naive": naive_results,
        "predictions": others,
        "beats_naive_by_half": bool(rel <= 0.5 * better_naive),
    }


# ----------------------------------------------------------------------------- files


def _prepare_out(out: Path, plan: LadderPlan, resume: bool) -> None:
    """Create ``out`` and record the plan; refuse to mix two different ladders in one folder."""
    plan_path = out / "plan.json"
    if plan_path.exists():
        if not resume:
            raise ValueError(
                f"--out: {out} already holds a ladder; pass --resume to continue (or re-report) "
                f"it, or choose another --out (or delete that folder)"
            )
        # Fields a plan.json predates take their defaults (a new option must not orphan it).
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(LadderPlan)
            if f.default is not dataclasses.MISSING
        }
        old = {**json.loads(json.dumps(defaults)), **json.loads(plan_path.read_text())}
        if old != json.loads(json.dumps(plan.to_json())):
            changed = sorted(k for k in plan.to_json() if old.get(k) != plan.to_json()[k])
            raise ValueError(
                f"--resume: {out} holds a ladder with a different plan (fields {changed} "
                f"differ); use the same options as before or another --out"
            )
    (out / "runs").mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan_path, plan.to_json())
