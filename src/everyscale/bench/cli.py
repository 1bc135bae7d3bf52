"""``everyscale bench``: which optimizer reaches the target first (AlgoPerf at CPU scale)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from everyscale.cliargs import (
    STDOUT,
    add_json_option,
    add_option_flag,
    check_output_file,
    example_epilog,
    help_formatter,
)

BUDGET_NAMES = ("tiny", "small", "medium")
HEAVYBALL = ("heavyball_soap", "heavyball_psgd")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time to target per optimizer, tuned alike, scored as AlgoPerf scores",
        formatter_class=help_formatter(),
        description=(
            "Tune every optimizer on every workload with the same budget of quasi-random "
            "(scrambled Sobol) trials, repeated in --studies studies with different seeds; a "
            "trial stops when it reaches the workload's validation target. Scores each "
            "optimizer by its fastest trial (median over studies), then across workloads by "
            "the performance ratio r = t / t_best, the profile rho(tau) and the score B "
            "(r_max = 4; Dahl et al. 2023). Writes bench.json, report.md and profile.png "
            "under --out; the studies live in Optuna storage (--storage, default "
            "OUT/studies.db), so --resume continues a killed bench."
        ),
        epilog=example_epilog(
            "everyscale bench --budget tiny --out runs/bench-tiny",
            "everyscale bench --workloads gpt,fashion --optimizers scion,muon,adamw,sfadamw,"
            "heavyball_soap --trials 8 --studies 3 --out runs/bench",
            "everyscale bench --budget small --storage postgresql://me@db/bench --out runs/b1",
        ),
    )
    p.add_argument(
        "--budget",
        choices=BUDGET_NAMES,
        default="small",
        help="tiny: digits, 2 optimizers, seconds (tests); small: gpt, fashion, digits, every "
        "default optimizer, 8 trials x 3 studies (at most an hour on 2 cores); medium: 16 trials",
    )
    p.add_argument("--workloads", help="comma list: gpt, fashion, digits, or MODULE:ATTRIBUTE")
    p.add_argument(
        "--optimizers",
        help="comma list of our presets (scion, muon, adamw, ...) and peers (torch_adamw, "
        "torch_muon, sfadamw, heavyball_soap, heavyball_psgd); default: the budget's",
    )
    p.add_argument("--trials", type=int, help="trials per study (default: the budget's)")
    p.add_argument("--studies", type=int, help="studies per optimizer and workload, >= 3 advised")
    p.add_argument("--seed", type=int, default=0, help="seed of study 0 (study k: seed + k)")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="WORKLOAD=VALUE",
        help="replace a workload's validation target (repeatable)",
    )
    p.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="PRESET.KEY=LOW:HIGH[:log]",
        help="replace one range of an optimizer's search space (repeatable)",
    )
    add_option_flag(p, per_optimizer=True)
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="let heavyball compile its kernels (torch.compile; compile time is reported apart)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial (default 1)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/studies.db)")
    p.add_argument("--out", default="runs/bench", help="output folder (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the bench in --out")
    add_json_option(p, "bench.json's contents")
    p.add_argument("--markdown", metavar="PATH", help="also write the report to PATH")
    p.add_argument(
        "--reference",
        action="store_true",
        help="only run the reference runs that set the workloads' targets, and print them",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def _names(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"{flag} is empty: give a comma list of names")
    return names


def parse_targets(items: list[str]) -> dict[str, float]:
    targets = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            targets[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"--target: write WORKLOAD=VALUE, e.g. gpt=2.3; got {item!r}")
    return targets


def parse_per_optimizer(items: list[str], flag: str, optimizers: list[str]) -> dict[str, dict]:
    """``PRESET.KEY=VALUE`` (or ``KEY=VALUE`` for every optimizer) into per-optimizer dicts."""
    from everyscale.cliargs import parse_value

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        preset, dot, name = key.rpartition(".") if "." in key else ("", "", key)
        if not sep or not name:
            raise ValueError(f"{flag}: write PRESET.KEY=VALUE, e.g. adamw.eps=1e-10; got {item!r}")
        targets = [preset] if dot else optimizers
        for target in targets:
            if target not in optimizers:
                raise ValueError(
                    f"{flag} {item}: {target!r} is not among --optimizers {','.join(optimizers)}"
                )
            out.setdefault(target, {})[name] = value if flag == "--space" else parse_value(value)
    return out


def plan_from_args(args: argparse.Namespace):
    from everyscale.bench.run import BUDGETS, default_optimizers, resolve_workloads
    from everyscale.bench.space import parse_range
    from everyscale.bench.study import BenchPlan

    budget = BUDGETS[args.budget]
    optimizers = _names(args.optimizers, "--optimizers") or list(
        budget["optimizers"] or default_optimizers()
    )
    names = _names(args.workloads, "--workloads") or list(budget["workloads"])
    workloads, skipped = resolve_workloads(
        names, parse_targets(args.target), for_reference=args.reference
    )
    options = parse_per_optimizer(args.options, "--option", optimizers)
    if args.compile:
        for name in HEAVYBALL:
            if name in optimizers:
                options.setdefault(name, {})["compile"] = True
    spaces = {
        o: {k: parse_range(v, f"{o}.{k}") for k, v in ranges.items()}
        for o, ranges in parse_per_optimizer(args.space, "--space", optimizers).items()
    }
    plan = BenchPlan(
        workloads=workloads,
        optimizers=optimizers,
        trials=args.trials if args.trials is not None else budget["trials"],
        studies=args.studies if args.studies is not None else budget["studies"],
        seed=args.seed,
        options=options,
        spaces=spaces,
        budget=args.budget,
    )
    return plan, skipped


def _reference(plan) -> int:
    from everyscale.bench.workloads import (
        REFERENCE,
        reference_hparams,
        reference_values,
        target_from_reference,
    )

    print(
        f"reference: {REFERENCE['optimizer']} for half the step budget, seeds {REFERENCE['seeds']}"
    )
    for workload in plan.workloads:
        print(f"{workload.name}: {reference_hparams(workload.name)}")
        values = reference_values(workload, progress=True)
        print(
            f"{workload.name} on {workload.config.data}: {workload.metric} "
            f"{', '.join(f'{v:.4f}' for v in values)} -> target {target_from_reference(values)}"
        )
    return 0


def main(args: argparse.Namespace) -> int:
    from everyscale.bench.run import run_bench

    check_output_file("--json", args.json_out)
    check_output_file("--markdown", args.markdown)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    plan, skipped = plan_from_args(args)
    for name, why in skipped.items():
        print(f"skipping workload {name}: {why}", file=sys.stderr)
    if args.reference:
        return _reference(plan)
    command = "everyscale " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    result = run_bench(
        plan,
        args.out,
        storage=args.storage,
        resume=args.resume,
        progress=not args.quiet,
        threads=args.threads,
        skipped=skipped,
        command=command,
    )
    from everyscale.bench.report import markdown
    from everyscale.train.checkpoint import atomic_write_bytes, atomic_write_json

    if args.markdown:
        atomic_write_bytes(Path(args.markdown), markdown(result, command).encode())
    if args.json_out == STDOUT:
        print(json.dumps(result, indent=2))
    else:
        if args.json_out:
            atomic_write_json(Path(args.json_out), result)
        print(_summary_lines(result))
        print(f"wrote {args.out}/bench.json, report.md, profile.png")
    return 0


def _summary_lines(result: dict) -> str:
    base = result["baseline"]
    lines = []
    for o in result["optimizers"]:
        vs = result["vs_baseline"][o]
        cells = ", ".join(f"{w} {'miss' if v is None else f'{v:.2f}x'}" for w, v in vs.items())
        lines.append(f"{o:<16} B = {result['scores'].get(o, 0.0):.3f}   t/t_{base}: {cells}")
    o = result["overhead"]
    if o.get("trials"):
        lines.append(
            f"harness overhead: {100 * o['overhead_share']:.1f}% of trial time "
            f"(worst trial {100 * o['overhead_share_max']:.1f}%; evaluation "
            f"{100 * o['eval_share']:.1f}%, compilation {100 * o['compile_share']:.1f}%)"
        )
    return "\n".join(lines)
