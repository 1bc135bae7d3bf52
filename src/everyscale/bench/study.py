"""The tuning harness: one Optuna study per (workload, optimizer, repetition), same budget for all.

Each study draws its trials with Optuna's ``QMCSampler`` (a scrambled Sobol sequence, seeded
per study: repetition ``k`` uses seed ``plan.seed + k``) over the optimizer's search space
(``space.py``). Optuna draws the first trial of a study with the sampler's seeded independent
sampler, then follows the Sobol sequence. The trial's value is its time to target in seconds
(``inf`` for a miss), which the study minimizes.

Studies live in Optuna's RDB storage: by default a SQLite file ``OUT/studies.db``, so that a
killed bench resumes where it stopped (``resume=True``: finished trials are read back, and a
trial that this machine was running when it died is rerun with the parameters it had drawn);
a database server URL (``postgresql://...``, ``mysql://...``) lets several machines share the
same studies, each running trials until a study holds its budget. The output folder is locked
(one bench writes it at a time); the storage is not.

Trials run in an interleaved order (for each study repetition and trial index, every optimizer
in turn), so that a machine that slows down during the run slows every optimizer alike.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from everyscale.bench.optimizers import Contender, get_contender
from everyscale.bench.space import Range, check_space
from everyscale.bench.trial import TrialResult, run_trial
from everyscale.bench.workloads import Workload, check_target
from everyscale.train.checkpoint import atomic_write_json

__all__ = ["BenchPlan", "Harness", "open_storage", "study_name"]

STORAGE_NAME = "studies.db"
LOCK_NAME = ".bench.lock"
PLAN_NAME = "plan.json"


@dataclass
class BenchPlan:
    """What a bench measures: workloads x optimizers x ``studies`` studies of ``trials`` trials.

    ``options[optimizer]`` fixes optimizer options (a key of the search space, such as ``lr``,
    is then fixed instead of tuned); ``spaces[optimizer]`` replaces ranges of its space.
    """

    workloads: list[Workload]
    optimizers: list[str]
    trials: int = 8
    studies: int = 3
    seed: int = 0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    spaces: dict[str, dict[str, Range]] = field(default_factory=dict)
    budget: str | None = None

    def check(self) -> None:
        for name, value, low in (("trials", self.trials, 1), ("studies", self.studies, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"--{name} must be an integer >= {low}, got {value!r}")
        if not self.optimizers:
            raise ValueError("--optimizers is empty: name at least one optimizer")
        if not self.workloads:
            raise ValueError("--workloads is empty: name at least one workload")
        for name in self.optimizers:
            get_contender(name)
        for group, flag in ((self.options, "--option"), (self.spaces, "--space")):
            for name in group:
                if name not in self.optimizers:
                    raise ValueError(
                        f"{flag} {name}.KEY: {name!r} is not among --optimizers "
                        + ",".join(self.optimizers)
                    )
        for name in self.optimizers:
            check_space(name, *self.space_of(name))
        for workload in self.workloads:
            check_target(workload)

    def _fixed(self, name: str) -> dict[str, Any]:
        base = get_contender(name).space()
        return {k: v for k, v in self.options.get(name, {}).items() if k in base}

    def space_of(self, name: str) -> tuple[dict[str, Range], dict[str, Any]]:
        """``(ranges to tune, values fixed by --option)`` of optimizer ``name``."""
        space = {**get_contender(name).space(), **self.spaces.get(name, {})}
        fixed = self._fixed(name)
        return {k: r for k, r in space.items() if k not in fixed}, fixed

    def passthrough_options(self, name: str) -> dict[str, Any]:
        """The options that are not hyperparameters of the space (given to the optimizer)."""
        fixed = self._fixed(name)
        return {k: v for k, v in self.options.get(name, {}).items() if k not in fixed}

    def fingerprint(self) -> dict[str, Any]:
        """What must match for ``--resume`` to continue these studies: the trial budget and
        seed, each workload's target and budget, each optimizer's options and space."""
        return {
            "trials": self.trials,
            "seed": self.seed,
            "workloads": {
                w.name: {
                    "target": w.target,
                    "metric": w.metric,
                    "steps": w.steps,
                    "data": w.config.data,
                }
                for w in self.workloads
            },
            "optimizers": {
                name: {
                    "options": json.loads(json.dumps(self.options.get(name, {}), default=str)),
                    "space": {k: [r.low, r.high, r.log] for k, r in self.space_of(name)[0].items()},
                }
                for name in self.optimizers
            },
        }


def study_name(workload: str, optimizer: str, repetition: int) -> str:
    return f"{workload}.{optimizer}.study{repetition}"


def open_storage(url: str):
    """Optuna's RDB storage at ``url`` (``ValueError`` naming ``--storage`` if it cannot open)."""
    import optuna

    try:
        storage = optuna.storages.RDBStorage(url)
    except Exception as err:  # SQLAlchemy raises many kinds; all mean the same to the user
        raise ValueError(
            f"--storage {url}: cannot open this Optuna storage ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); give a database URL such as "
            "sqlite:///runs/bench/studies.db or postgresql://user@host/db"
        ) from None
    if url.startswith("sqlite"):
        _fast_sqlite(storage)
    return storage


def _fast_sqlite(storage) -> None:
    """Write-ahead logging, synced at checkpoints: a third of the per-trial storage time.

    A killed process loses nothing that was committed (only a power cut could lose the last
    commits); every connection opened from now on gets these settings.
    """
    import sqlalchemy

    def pragmas(connection, record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # drop the pooled connections opened without them


@contextlib.contextmanager
def lock_folder(out: Path) -> Iterator[None]:
    """Hold ``OUT/.bench.lock`` (one bench per output folder; the storage stays shareable)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"--out {out} is being written by another everyscale bench (it holds "
                f"{out / LOCK_NAME}); wait for it, or choose another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class TrialRecord:
    """One finished trial as the report reads it back from the storage."""

    number: int
    value: float
    params: dict[str, float]
    result: dict[str, Any]
    wall_seconds: float | None = None  # Optuna's timestamps: from ask to tell


class Harness:
    """Runs the plan's studies in ``storage`` (see the module docstring)."""

    def __init__(self, plan: BenchPlan, storage, *, progress: bool = True):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.plan = plan
        self.storage = storage
        self.progress = progress
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.overheads: list[dict[str, float]] = []  # trials run by this process

    # ---------------------------------------------------------------- studies

    def study(self, workload: Workload, optimizer: str, repetition: int):
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=self.plan.seed + repetition,
                warn_independent_sampling=False,
                warn_asynchronous_seeding=False,
            )
        study = optuna.create_study(
            storage=self.storage,
            study_name=study_name(workload.name, optimizer, repetition),
            direction="minimize",
            sampler=sampler,
            load_if_exists=True,
        )
        setup = {
            "target": workload.target,
            "metric": workload.metric,
            "steps": workload.steps,
            **self.plan.fingerprint()["optimizers"][optimizer],
        }
        recorded = study.user_attrs.get("setup")
        if recorded is None:
            study.set_user_attr("setup", setup)
        elif recorded != json.loads(json.dumps(setup)):
            raise ValueError(
                f"study {study.study_name} in the storage was made with {recorded}, not "
                f"{setup}: use another --storage or --out, or the same settings"
            )
        return study

    def finished(self, study) -> list[TrialRecord]:
        """The study's completed trials, first ``plan.trials`` by number."""
        from optuna.trial import TrialState

        done = sorted(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number
        )
        return [
            TrialRecord(
                t.number,
                float(t.value),
                dict(t.params),
                dict(t.user_attrs.get("result", {})),
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_start and t.datetime_complete
                else None,
            )
            for t in done[: self.plan.trials]
        ]

    def _claim(self, study):
        """A trial of this host whose process died mid-trial (rerun it as drawn), or a new one."""
        import optuna
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self._is_mine_dead(t):
                trial = optuna.trial.Trial(study, t._trial_id)
                trial.set_user_attr("worker", self.worker)
                return trial
        trial = study.ask()
        trial.set_user_attr("worker", self.worker)
        return trial

    def _pending(self, study) -> int:
        """Trials the study still needs: its budget less the finished trials and those
        running elsewhere (another machine sharing the storage, or a live process here)."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.RUNNING)
        busy = [
            t
            for t in study.get_trials(deepcopy=False, states=states)
            if t.state == TrialState.COMPLETE or not self._is_mine_dead(t)
        ]
        return self.plan.trials - len(busy)

    def _is_mine_dead(self, t) -> bool:
        """A running trial left by a process of this host that is no longer alive."""
        worker = str(t.user_attrs.get("worker", ""))
        w_host, _, w_pid = worker.rpartition(":")
        host = self.worker.split(":")[0]
        return w_host == host and w_pid.isdigit() and not _pid_alive(int(w_pid))

    # ---------------------------------------------------------------- one trial

    def run_one(self, study, workload: Workload, contender: Contender, repetition: int) -> bool:
        """Run the study's next trial; ``False`` when it already holds its budget (asked each
        time: a shared storage fills from several machines)."""
        start = time.perf_counter()
        if self._pending(study) <= 0:
            return False
        trial = self._claim(study)
        space, fixed = self.plan.space_of(contender.name)
        hparams = {
            name: trial.suggest_float(name, r.low, r.high, log=r.log) for name, r in space.items()
        }
        hparams.update(fixed)
        seed = 1000 * (self.plan.seed + repetition) + trial.number
        result: TrialResult = run_trial(
            workload,
            contender,
            hparams,
            self.plan.passthrough_options(contender.name),
            seed=seed,
            dataset=workload.load(),
        )
        record = result.to_dict()
        record["seed"] = seed
        record["hparams"] = hparams
        trial.set_user_attr("result", record)
        study.tell(trial, result.time_to_target)
        wall = time.perf_counter() - start
        measured = result.train_seconds + result.compile_seconds + result.eval_seconds
        self.overheads.append(
            {
                "workload": workload.name,
                "optimizer": contender.name,
                "wall_seconds": wall,
                "train_seconds": result.train_seconds,
                "eval_seconds": result.eval_seconds,
                "compile_seconds": result.compile_seconds,
                "setup_seconds": result.setup_seconds,
                "overhead_seconds": max(0.0, wall - measured),
            }
        )
        return True

    # ---------------------------------------------------------------- the plan

    def run(self) -> None:
        """Run every trial the storage does not hold yet (the interleaved order)."""
        plan = self.plan
        studies = {
            (w.name, o, k): self.study(w, o, k)
            for w in plan.workloads
            for k in range(plan.studies)
            for o in plan.optimizers
        }
        total = len(studies) * plan.trials
        bar = tqdm(
            total=total,
            initial=total - sum(max(0, self._pending(s)) for s in studies.values()),
            disable=not self.progress,
            desc="bench",
            unit="trial",
            dynamic_ncols=True,
        )
        contenders = {o: get_contender(o) for o in plan.optimizers}
        self._warm_up(contenders)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Sobol balance notes, experimental features
                for w, k, o in self._order():
                    bar.set_postfix_str(f"{w.name} {o} study {k}", refresh=False)
                    if self.run_one(studies[(w.name, o, k)], w, contenders[o], k):
                        bar.update(1)
        finally:
            bar.close()

    def _order(self) -> Iterator[tuple[Workload, int, str]]:
        """For each workload and study repetition, trial by trial, every optimizer in turn."""
        for w in self.plan.workloads:
            for k in range(self.plan.studies):
                for _ in range(self.plan.trials):
                    for o in self.plan.optimizers:
                        yield w, k, o

    def _warm_up(self, contenders: Mapping[str, Contender]) -> None:
        """Load each workload's data and build each optimizer once before any trial's clock
        starts: first-time imports and caches are not a trial's cost (a bad option fails here,
        before any trial)."""
        for w in self.plan.workloads:
            dataset = w.load()
            for name, contender in contenders.items():
                space, fixed = self.plan.space_of(name)
                middle = {
                    k: (r.low * r.high) ** 0.5 if r.log else (r.low + r.high) / 2
                    for k, r in space.items()
                }
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    contender.build(
                        w.build_model(dataset),
                        {**middle, **fixed},
                        self.plan.passthrough_options(name),
                        w.steps,
                    )

    def collect(self) -> dict[str, dict[str, list[list[TrialRecord]]]]:
        """``{workload: {optimizer: [trials of study 0, study 1, ...]}}`` from the storage."""
        return {
            w.name: {
                o: [self.finished(self.study(w, o, k)) for k in range(self.plan.studies)]
                for o in self.plan.optimizers
            }
            for w in self.plan.workloads
        }


def overhead_summary(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Harness overhead (trial wall time outside training, evaluation and compilation),
    over all trials this process ran and per workload (``by_workload``)."""
    summary = _overhead(rows)
    if rows:
        names = sorted({r["workload"] for r in rows})
        summary["by_workload"] = {
            n: _overhead([r for r in rows if r["workload"] == n]) for n in names
        }
    return summary


def _overhead(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"trials": 0}
    wall = sum(r["wall_seconds"] for r in rows)
    shares = sorted(r["overhead_seconds"] / r["wall_seconds"] for r in rows if r["wall_seconds"])
    return {
        "trials": len(rows),
        "wall_seconds": wall,
        "overhead_share": sum(r["overhead_seconds"] for r in rows) / wall if wall else math.nan,
        "overhead_share_median": shares[len(shares) // 2] if shares else math.nan,
        "overhead_share_max": shares[-1] if shares else math.nan,
        "mean_trial_seconds": wall / len(rows),
        "mean_overhead_seconds": sum(r["overhead_seconds"] for r in rows) / len(rows),
        "mean_setup_seconds": sum(r["setup_seconds"] for r in rows) / len(rows),
        "eval_share": sum(r["eval_seconds"] for r in rows) / wall if wall else math.nan,
        "compile_share": sum(r["compile_seconds"] for r in rows) / wall if wall else math.nan,
    }


def plan_conflicts(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two plan fingerprints on what they share.

    Adding or leaving out workloads, optimizers or studies is no conflict: each study is one
    (workload, optimizer, repetition), and a resumed bench reuses those it shares.
    """
    conflicts = [k for k in ("trials", "seed") if recorded.get(k) != current[k]]
    for group in ("workloads", "optimizers"):
        for name, settings in current[group].items():
            if name in recorded.get(group, {}) and recorded[group][name] != settings:
                conflicts.append(f"{group[:-1]} {name}")
    return conflicts


def write_plan(out: Path, plan: BenchPlan, resume: bool) -> None:
    """Record the plan; on resume, refuse one whose shared studies would not match."""
    path = out / PLAN_NAME
    fingerprint = json.loads(json.dumps(plan.fingerprint()))
    if resume and path.exists():
        recorded = json.loads(path.read_text())
        changed = plan_conflicts(recorded, fingerprint)
        if changed:
            raise ValueError(
                f"--resume: {out} holds a bench with other settings ({', '.join(changed)}); "
                "resume with the same flags, or choose another --out"
            )
        for group in ("workloads", "optimizers"):  # remember everything measured there
            fingerprint[group] = {**recorded.get(group, {}), **fingerprint[group]}
    atomic_write_json(path, fingerprint)
