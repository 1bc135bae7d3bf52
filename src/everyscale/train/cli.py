"""``everyscale train``: parse flags into a TrainConfig, run it, say where the results went."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from everyscale.cliargs import (
    add_deprecated_alias,
    add_option_flag,
    example_epilog,
    help_formatter,
    parse_options,
)
from everyscale.train.config import TrainConfig, cli_flag, known_optimizers
from everyscale.train.data import DATASETS
from everyscale.train.models import MODELS
from everyscale.train.schedules import SCHEDULES

# Flag help for each TrainConfig field (the flag is the field name with - for _).
_HELP = {
    "model": f"model: {', '.join(MODELS)}",
    "data": f"{', '.join(DATASETS)}, a text file, a .npy of token ids, or a Fashion-MNIST dir",
    "width": "GPT width / MLP hidden width / CNN channels",
    "depth": "GPT blocks / MLP hidden layers / CNN convolutions",
    "heads": "attention heads (GPT)",
    "context": "tokens per training window (GPT)",
    "tied": "tie the GPT's input embedding and output head",
    "residual_multiplier": "multiplier of each GPT residual branch (depth^-alpha for transfer)",
    "optimizer": "optimizer preset: {optimizers} (`everyscale describe` shows one)",
    "lr": "base learning rate",
    "schedule": f"learning-rate schedule: {', '.join(SCHEDULES)}",
    "warmup": "fraction of the steps in linear warmup",
    "cooldown": "fraction of the steps in the final linear decay, wsd only (default: 0.3)",
    "warmup_steps": "warmup in steps (replaces --warmup; default: from --warmup)",
    "cooldown_steps": "cooldown in steps, wsd only (replaces --cooldown; default: from --cooldown)",
    "cooldown_shape": "wsd cooldown shape: linear or sqrt (1 - sqrt, Hägele et al. 2024)",
    "power_decay": "exponent b of a stable-phase decay (step / --power-decay-from)^-b, "
    "constant and wsd only (0: none)",
    "power_decay_from": "the step where --power-decay starts",
    "steps": "optimizer steps",
    "batch_size": "examples (windows or images) per step",
    "grad_accum": "micro-batches per step (gradient accumulation)",
    "clip": "clip the global gradient norm to this value (default: no clipping)",
    "eval_every": "evaluate every N steps (0: only at the end)",
    "val_windows": "validation windows for text data",
    "checkpoint_every": "checkpoint every N steps (0: only at the end and on SIGINT/SIGTERM)",
    "keep_checkpoint": "keep the checkpoint after a completed run",
    "seed": "seed of the initialization and the data order",
    "threads": "torch CPU threads (default: torch's choice)",
    "device": "torch device for the model and batches (cpu, cuda, cuda:1, mps)",
    "out": "run directory for config.json, metrics.jsonl, summary.json, checkpoint.pt",
    "resume": "continue from the checkpoint in --out; a larger --steps lengthens the run when "
    "its schedule so far stays the same (constant, or wsd before its cooldown, warmup in "
    "--warmup-steps)",
    "quiet": "no progress bar",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one model (GPT, MLP, CNN) on offline data",
        description=(
            "Train one model and write config.json, metrics.jsonl, summary.json and a "
            "checkpoint under --out. One run writes a folder at a time (a second is refused "
            "while the first runs); a rerun keeps the earlier run's files as "
            "NAME.previous-N.EXT."
        ),
        epilog=example_epilog(
            "everyscale train --model gpt --data stdlib --width 128 --depth 4 --heads 4 "
            "--optimizer scion --lr 0.000244 --steps 500 --batch-size 32 --context 128 "
            "--schedule wsd --out runs/NAME",
            "everyscale train --optimizer adamw --option weight_decay=0.1 --out runs/adamw",
        ),
        formatter_class=help_formatter(),
    )
    parser.add_argument("--config", help="a config.json to start from; flags given override it")
    for field in dataclasses.fields(TrainConfig):
        if field.name == "optimizer_options":
            continue
        flag = cli_flag(field.name)
        help_text = _HELP[field.name].format(optimizers=", ".join(known_optimizers()))
        if field.default is not None:  # None's meaning is in the help text itself
            help_text += f" (default: {field.default})"
        kind = field.type if isinstance(field.type, str) else field.type.__name__
        if kind == "bool":
            # Both forms, so a flag can also switch off what a --config file switched on.
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        convert = int if kind.startswith("int") else float if kind.startswith("float") else str
        parser.add_argument(flag, type=convert, default=None, help=help_text)
    add_option_flag(parser)
    add_deprecated_alias(parser, "--optimizer-option", "--option", dest="options", action="append")
    parser.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="train on N local processes (starts torchrun; default: this process alone)",
    )
    parser.add_argument(
        "--parallel",
        choices=("ddp", "fsdp"),
        default=None,
        help="with --nproc or under torchrun: ddp (replicated weights, the default) or fsdp "
        "(FSDP2, weights and optimizer state sharded)",
    )
    parser.set_defaults(func=main)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags describe: ``--config`` file (if any), then the flags given."""
    values = TrainConfig.from_json(args.config).to_dict() if args.config else {}
    for field in dataclasses.fields(TrainConfig):
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
    if args.options:
        options = values.get("optimizer_options") or {}
        if not isinstance(options, dict):
            raise ValueError(
                f"--config {args.config}: optimizer_options must be an object of KEY: VALUE "
                f"pairs, got {options!r}"
            )
        options = dict(options)
        options.update(parse_options(args.options))
        values["optimizer_options"] = options
    return TrainConfig.from_dict(values)


def main(args: argparse.Namespace) -> int:
    from everyscale.dist import engine
    from everyscale.train.loop import NonFiniteLossError, TrainingInterrupted, run

    config = config_from_args(args)
    nproc = getattr(args, "nproc", None)
    if nproc is not None and nproc < 1:
        raise ValueError(f"--nproc must be a positive integer, got {nproc}")
    if nproc is not None and nproc > 1 and not engine.under_torchrun():
        return _launch(config, nproc, args.parallel or "ddp")
    if args.parallel is not None and (nproc or 1) == 1 and not engine.under_torchrun():
        raise ValueError(
            f"--parallel {args.parallel} needs several processes: add --nproc N (N > 1), or "
            "start the command with torchrun"
        )
    distributed = engine.from_environment(args.parallel)
    try:
        summary = _run_distributed(run, config, distributed)
    except NonFiniteLossError as err:
        print(f"everyscale train: diverged: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"everyscale train: {err}", file=sys.stderr)
        return 130
    if distributed is not None and not distributed.is_main:
        return 0
    print(
        f"{summary['status']}: {summary['steps']} steps, {summary['tokens']:,} "
        f"{'tokens' if config.model == 'gpt' else 'images'}, "
        f"final validation loss {summary['final_val_loss']:.4f} "
        f"(best {summary['best_val_loss']:.4f}) in {summary['wall_seconds']:.1f} s"
    )
    print(f"metrics: {config.out}/metrics.jsonl  summary: {config.out}/summary.json")
    return 0


def _run_distributed(run, config: TrainConfig, distributed) -> dict[str, Any]:
    """``run(config)`` in this process, as one rank of ``distributed`` when given."""
    if distributed is None:
        return run(config)
    try:
        return run(config, distributed=distributed)
    finally:
        distributed.close()


def _launch(config: TrainConfig, nproc: int, parallel: str) -> int:
    """Start ``nproc`` ranks of this run under torchrun; its exit code is the command's."""
    import tempfile
    from pathlib import Path

    from everyscale.dist import engine

    with tempfile.TemporaryDirectory(prefix="everyscale-launch-") as folder:
        path = Path(folder) / "config.json"
        path.write_text(config.to_json())
        code = engine.launch(path, nproc, parallel)
    if code:
        print(
            f"everyscale train: a rank failed (torchrun exit code {code}); its error is above",
            file=sys.stderr,
        )
    return code
