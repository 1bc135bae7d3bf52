"""The `everyscale` command: a thin layer over the library.

Each capability keeps its own subcommands in `everyscale/<capability>/cli.py`,
which exposes `register(subparsers)`; every subcommand sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from everyscale import __version__
from everyscale.cliargs import parse_value  # noqa: F401  (everyscale.cli.parse_value)

# The modules that contribute subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "everyscale.ladder.cli",  # ladder: the main job
    "everyscale.train.cli",  # train
    "everyscale.optim.cli",  # describe
    "everyscale.scale.cli",  # transfer
    "everyscale.laws.cli",  # fit, predict, allocate
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="everyscale",
        description="Train neural networks at any scale: optimizers, scale transfer, scaling laws.",
        epilog=(
            "example:\n  everyscale ladder --budget small --out runs/ladder\n"
            "  everyscale COMMAND --help   (each command's flags and an example)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"everyscale {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings for CLI users: one line, no source location."""
    from everyscale.cliargs import EveryscaleDeprecationWarning

    if issubclass(category, EveryscaleDeprecationWarning):
        return ""  # the deprecated flag already printed its own line
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    previous_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = previous_format


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:
        # Bad input: one clear line, no traceback.
        print(f"everyscale {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
