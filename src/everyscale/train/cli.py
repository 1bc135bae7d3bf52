"""``everyscale train``: parse flags into a TrainConfig, run it, say where the results went."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from everyscale.cli import parse_value
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


def _parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``, VALUE read by :func:`everyscale.cli.parse_value`."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(
            f"--optimizer-option expects KEY=VALUE (e.g. weight_decay=0.1), got {text!r}"
        )
    return key, parse_value(value)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one model (GPT, MLP, CNN) on offline data",
        description=(
            "Train one model and write config.json, metrics.jsonl, summary.json and a "
            "checkpoint under --out. Example: everyscale train --model gpt --data stdlib "
            "--width 128 --depth 4 --heads 4 --optimizer scion --lr 0.01 --steps 500 "
            "--batch-size 32 --context 128 --schedule wsd --out runs/NAME"
        ),
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
    parser.add_argument(
        "--optimizer-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="extra keyword for the optimizer preset (repeatable), e.g. weight_decay=0.1",
    )
    parser.set_defaults(func=main)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags describe: ``--config`` file (if any), then the flags given."""
    values = TrainConfig.from_json(args.config).to_dict() if args.config else {}
    for field in dataclasses.fields(TrainConfig):
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
    if args.optimizer_option:
        options = dict(values.get("optimizer_options", {}))
        options.update(_parse_option(text) for text in args.optimizer_option)
        values["optimizer_options"] = options
    return TrainConfig.from_dict(values)


def main(args: argparse.Namespace) -> int:
    from everyscale.train.loop import NonFiniteLossError, TrainingInterrupted, run

    config = config_from_args(args)
    try:
        summary = run(config)
    except NonFiniteLossError as err:
        print(f"everyscale train: diverged: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"everyscale train: {err}", file=sys.stderr)
        return 130
    print(
        f"{summary['status']}: {summary['steps']} steps, {summary['tokens']:,} "
        f"{'tokens' if config.model == 'gpt' else 'images'}, "
        f"final validation loss {summary['final_val_loss']:.4f} "
        f"(best {summary['best_val_loss']:.4f}) in {summary['wall_seconds']:.1f} s"
    )
    print(f"metrics: {config.out}/metrics.jsonl  summary: {config.out}/summary.json")
    return 0
