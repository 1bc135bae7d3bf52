"""``run_bench``: tune every optimizer on every workload, score, and write the report.

Files under ``out``: ``studies.db`` (Optuna's SQLite storage, unless another storage is
given), ``plan.json`` (what ``--resume`` must match), ``bench.json``, ``report.md`` and
``profile.png``.

Budgets (the ladder's names):

- ``tiny``: ``digits``, ``adamw`` and ``torch_adamw``, 2 trials x 3 studies: seconds (tests);
- ``small``: ``gpt``, ``fashion`` and ``digits``, every default optimizer, 8 trials x 3
  studies (the acceptance run: at most an hour on 2 cores);
- ``medium``: the same workloads, 16 trials x 3 studies.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from everyscale.bench.optimizers import PEERS, get_contender
from everyscale.bench.report import markdown, plot_profiles, summarize
from everyscale.bench.study import (
    STORAGE_NAME,
    BenchPlan,
    Harness,
    lock_folder,
    open_storage,
    overhead_summary,
    write_plan,
)
from everyscale.bench.workloads import (
    BUILTIN,
    Workload,
    builtin_workload,
    fashion_mnist_missing,
)
from everyscale.train.checkpoint import atomic_write_bytes, atomic_write_json

__all__ = ["BUDGETS", "DEFAULT_OPTIMIZERS", "default_optimizers", "resolve_workloads", "run_bench"]

#: our presets and the peers compared by default; presets that land later (the adaptive
#: ``soap``, ``shampoo``, ``normuon``) join when ``everyscale.optim.PRESETS`` has them
DEFAULT_OPTIMIZERS = ("scion", "muon", "adamw", *PEERS)
LATER_PRESETS = ("soap", "shampoo", "normuon")

BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "workloads": ("digits",),
        "optimizers": ("adamw", "torch_adamw"),
        "trials": 2,
        "studies": 3,
    },
    "small": {"workloads": BUILTIN, "optimizers": None, "trials": 8, "studies": 3},
    "medium": {"workloads": BUILTIN, "optimizers": None, "trials": 16, "studies": 3},
}


def default_optimizers() -> tuple[str, ...]:
    """``DEFAULT_OPTIMIZERS`` plus the later presets this install has."""
    from everyscale.optim import PRESETS

    later = tuple(name for name in LATER_PRESETS if name in PRESETS)
    return (*DEFAULT_OPTIMIZERS[:3], *later, *DEFAULT_OPTIMIZERS[3:])


def _import_workload(spec: str) -> Workload:
    module_name, _, attribute = spec.partition(":")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"--workloads {spec}: cannot import it ({err}); write MODULE:ATTRIBUTE naming a "
            "Workload (or a function that returns one) on the Python path"
        ) from None
    workload = value() if callable(value) and not isinstance(value, Workload) else value
    if not isinstance(workload, Workload):
        raise ValueError(f"--workloads {spec}: {type(workload).__name__} is not a Workload")
    return workload


def resolve_workloads(
    names: Sequence[str | Workload],
    targets: dict[str, float] | None = None,
    *,
    for_reference: bool = False,
) -> tuple[list[Workload], dict[str, str]]:
    """``(workloads that can run here, {skipped name: why})``.

    ``names``: built-in names, ``MODULE:ATTRIBUTE`` specs, or ``Workload`` objects;
    ``targets`` overrides the targets by workload name (``--target NAME=VALUE``).
    """
    targets = dict(targets or {})
    workloads, skipped = [], {}
    for item in names:
        if isinstance(item, Workload):
            workload = item
        elif ":" in item:
            workload = _import_workload(item)
        elif item == "fashion" and (why := fashion_mnist_missing()):
            skipped[item] = why
            targets.pop(item, None)
            continue
        else:
            workload = builtin_workload(item, targets.get(item), for_reference=for_reference)
        if workload.name in targets:
            workload = workload.with_target(targets.pop(workload.name))
        workloads.append(workload)
    if targets:
        raise ValueError(
            f"--target {', '.join(targets)}: not among --workloads "
            + ",".join(w.name for w in workloads)
        )
    names_seen = [w.name for w in workloads]
    if len(set(names_seen)) != len(names_seen):
        raise ValueError(f"--workloads names a workload twice: {','.join(names_seen)}")
    return workloads, skipped


def run_bench(
    plan: BenchPlan,
    out: str | Path,
    *,
    storage: str | None = None,
    resume: bool = False,
    progress: bool = True,
    threads: int | None = 1,
    skipped: dict[str, str] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or continue) the plan's studies, score them, write the files; return bench.json.

    Raises:
        ValueError: a bad plan (unknown optimizer, empty range, unreached target), an
            output folder in use or holding an earlier bench without ``resume``, a storage
            that cannot be opened, or a resumed bench with other settings.
    """
    plan.check()
    out = Path(out)
    url = storage or f"sqlite:///{out / STORAGE_NAME}"
    previous_threads = torch.get_num_threads()
    with lock_folder(out):
        if not resume and any(
            (out / n).exists() for n in ("bench.json", "plan.json", STORAGE_NAME)
        ):
            raise ValueError(
                f"--out {out} holds an earlier bench: pass --resume to continue it, or choose "
                "another --out (nothing there is overwritten)"
            )
        write_plan(out, plan, resume)
        harness = Harness(plan, open_storage(url), progress=progress)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            harness.run()
        finally:
            torch.set_num_threads(previous_threads)
        collected = harness.collect()
        contenders = {o: get_contender(o) for o in plan.optimizers}
        result = summarize(
            collected,
            plan,
            skipped=dict(skipped or {}),
            overhead=overhead_summary(harness.overheads),
            contenders=contenders,
        )
        result["storage"] = url
        result["machine"]["torch_threads"] = threads if threads is not None else previous_threads
        atomic_write_json(out / "bench.json", result)
        atomic_write_bytes(out / "report.md", markdown(result, command).encode())
        plot_profiles(result, out / "profile.png")
    return result
