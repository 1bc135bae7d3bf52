"""``everyscale describe``: what a preset does with each parameter of a model.

everyscale describe --model gpt --width 128 --depth 4 --optimizer scion
everyscale describe --model cnn --optimizer muon --option adjust_lr_fn=match_rms_adamw
"""

from __future__ import annotations

import argparse
from typing import Any

from everyscale.cliargs import (
    add_deprecated_alias,
    add_option_flag,
    example_epilog,
    help_formatter,
    parse_option,
    parse_options,
)

__all__ = ["register"]


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--shape``, VALUE read by :func:`everyscale.cliargs.parse_value`."""
    try:
        return parse_option(text, "--shape")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``describe`` subcommand."""
    from everyscale.optim.presets import PRESETS

    parser = subparsers.add_parser(
        "describe",
        help="print the norm, radius and effective lr a preset gives each parameter",
        description=(
            "Build a model and print, for every parameter, its role (input, hidden, output, "
            "vector, tied), norm, radius, step and effective learning rate under a preset, "
            "with notes on reading the table (scion family: the step is lr * radius, so with "
            "radius 50 use lr 2^-13..2^-10; muon: which preset takes the non-matrix tensors)."
        ),
        epilog=example_epilog(
            "everyscale describe --model gpt --width 128 --depth 4 --optimizer scion",
            "everyscale describe --model cnn --optimizer muon "
            "--option adjust_lr_fn=match_rms_adamw",
        ),
        formatter_class=help_formatter(),
    )
    parser.add_argument("--model", default="gpt", help="model name: gpt, mlp or cnn")
    parser.add_argument("--width", type=int, default=None, help="model width")
    parser.add_argument("--depth", type=int, default=None, help="model depth")
    parser.add_argument(
        "--shape",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="another model shape argument, e.g. --shape vocab=256 (repeatable)",
    )
    parser.add_argument(
        "--optimizer",
        default="scion",
        choices=PRESETS,
        help="optimizer preset (default: %(default)s)",
    )
    add_deprecated_alias(parser, "--preset", "--optimizer", dest="optimizer", choices=PRESETS)
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default: the preset's DEFAULT_LR, e.g. 0.000244 = 2^-12 for scion)",
    )
    add_option_flag(parser)
    add_deprecated_alias(parser, "--set", "--option", dest="options", action="append")
    parser.add_argument(
        "--base-width",
        type=int,
        default=None,
        help="the proxy's width: show the scale plan (multipliers, lr factors) from it",
    )
    parser.add_argument(
        "--base-depth", type=int, default=None, help="the proxy's depth (with --base-width)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        help="residual-branch exponent of the scale plan: 1 CompleteP, 0.5 depth-muP",
    )
    parser.set_defaults(func=_describe)


def _describe(args: argparse.Namespace) -> int:
    from everyscale.optim.presets import describe

    try:
        from everyscale.train.models import build_model
    except ImportError as err:  # the train package is written alongside this one
        raise ValueError(f"--model needs everyscale.train.models ({err})") from None

    shape: dict[str, Any] = dict(args.shape)
    for key in ("width", "depth"):
        value = getattr(args, key)
        if value is not None:
            if value <= 0:
                raise ValueError(f"--{key} must be a positive integer, got {value}")
            shape[key] = value
    model = build_model(args.model, **shape)
    options = parse_options(args.options)
    if args.lr is not None:
        options["lr"] = args.lr
    if args.base_depth is not None and args.base_width is None:
        raise ValueError("--base-depth needs --base-width (the proxy's width) too")
    if args.base_width is not None:  # the scale plan's table: cli.py may import any layer
        from everyscale.scale import BaseShape, describe_plan

        base = BaseShape(width=args.base_width, depth=args.base_depth)
        width = shape.get("width", getattr(model, "width", None))
        describe_plan(model, args.optimizer, base, width=width, alpha=args.alpha, **options)
        return 0
    describe(model, args.optimizer, **options)
    return 0
