"""One grammar for every ``everyscale`` subcommand: the shared flag spellings.

Each idea has one spelling, used by every command that has the idea:

==========================  ==================================================================
``--optimizer NAME``        the optimizer preset of a one-optimizer command (train, describe,
                            ladder)
``--optimizers A,B,...``    the presets of a command that compares several (transfer, bench)
``--option KEY=VALUE``      an optimizer option, repeatable; commands with several optimizers
                            also take ``--option PRESET.KEY=VALUE`` for one preset only
``--json [PATH]``           machine-readable output: to PATH, or to stdout when PATH is omitted
``--markdown PATH``         the human-readable report, to PATH
``--out DIR``               the run folder a command writes; ``--resume`` continues it
``--embeddings`` / ``--no-embeddings``   a yes/no choice is a flag pair, never ``yes|no``
==========================  ==================================================================

Older spellings stay for one release as deprecated aliases (``add_deprecated_alias``): they
work, and print one warning naming the new flag. Every command's ``--help`` ends with an
example (``example_epilog``).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STDOUT = "-"


class EveryscaleDeprecationWarning(FutureWarning):
    """A deprecated flag spelling was used (shown to users by default, as FutureWarning is)."""


class _DeprecatedAlias(argparse.Action):
    """Stores like the action it stands for, after a warning that names the new flag."""

    def __init__(self, option_strings, dest, new_flag: str, inner: type[argparse.Action], **kw):
        self._new_flag = new_flag
        self._inner = inner(option_strings, dest, **kw)
        super().__init__(
            option_strings,
            dest,
            nargs=self._inner.nargs,
            const=self._inner.const,
            default=argparse.SUPPRESS,
            type=self._inner.type,
            choices=self._inner.choices,
            help=argparse.SUPPRESS,
            metavar=self._inner.metavar,
        )

    def __call__(self, parser, namespace, values, option_string=None):
        message = (
            f"{option_string} is deprecated and will be removed in the next release; "
            f"use {self._new_flag}"
        )
        warnings.warn(message, EveryscaleDeprecationWarning, stacklevel=2)
        print(f"warning: {message}", file=sys.stderr)
        self._inner(parser, namespace, values, option_string)


def add_deprecated_alias(
    parser: argparse.ArgumentParser,
    old_flag: str,
    new_flag: str,
    *,
    dest: str,
    action: type[argparse.Action] | str = "store",
    **kwargs: Any,
) -> None:
    """Register ``old_flag`` as a hidden alias of ``new_flag`` writing the same ``dest``.

    ``action`` is the alias's own behaviour: ``"store"`` (default), ``"append"``,
    ``"store_true"``, or an ``argparse.Action`` subclass. A ``type=`` converts the value as
    the new flag would (e.g. ``yes|no`` to a bool for an old ``--embeddings yes``).
    """
    inner = parser._registry_get("action", action, action)  # the class argparse itself uses
    parser.add_argument(
        old_flag, dest=dest, action=_DeprecatedAlias, new_flag=new_flag, inner=inner, **kwargs
    )


def yes_no(text: str) -> bool:
    """Read the old ``yes|no`` values (for deprecated aliases of a flag pair)."""
    value = text.strip().lower()
    if value in ("yes", "y", "true", "1", "on"):
        return True
    if value in ("no", "n", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def add_json_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json [PATH]``: write ``what`` as JSON to PATH, or to stdout without a PATH."""
    parser.add_argument(
        "--json",
        dest="json_out",
        nargs="?",
        const=STDOUT,
        default=None,
        metavar="PATH",
        help=f"write {what} as JSON to PATH (to stdout when PATH is omitted)",
    )


def add_option_flag(parser: argparse.ArgumentParser, *, per_optimizer: bool = False) -> None:
    """``--option KEY=VALUE`` (repeatable); ``PRESET.KEY=VALUE`` too when ``per_optimizer``."""
    form = "[PRESET.]KEY=VALUE" if per_optimizer else "KEY=VALUE"
    parser.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar=form,
        help="an optimizer option in its torch.optim name (e.g. weight_decay=0.1, "
        "betas=[0.9,0.95]); repeat for several"
        + ("; PRESET.KEY=VALUE applies to one optimizer only" if per_optimizer else ""),
    )


def parse_value(raw: str) -> Any:
    """The VALUE of a ``KEY=VALUE`` option, read the same way by every subcommand.

    JSON first (``0.1``, ``true``, ``[0.9, 0.95]``), then a Python literal (``True``,
    ``(0.9, 0.95)``), else the text itself (a bare word such as ``match_rms_adamw``).
    """
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return raw  # not a literal (``{[]: 1}``, nested too deep, ...): the text itself


def parse_option(text: str, flag: str = "--option") -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(KEY, value)``, the value read by :func:`parse_value`.

    Raises ``ValueError`` naming ``flag`` when the ``=`` or the key is missing.
    """
    key, sep, raw = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{flag} expects KEY=VALUE (e.g. {flag} weight_decay=0.1), got {text!r}")
    return key, parse_value(raw.strip())


def parse_options(items: Sequence[str] | None, flag: str = "--option") -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` flags as one dict (a later KEY wins)."""
    return dict(parse_option(item, flag) for item in items or ())


def example_epilog(*lines: str) -> str:
    """The ``--help`` footer of a command: its examples, one per line."""
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def help_formatter() -> type[argparse.HelpFormatter]:
    """Keeps the example epilog's line breaks."""
    return argparse.RawDescriptionHelpFormatter


def refuse_overwriting_inputs(
    outputs: dict[str, str | Path | None], inputs: Sequence[str | Path]
) -> None:
    """Raise ``ValueError`` when an output flag names one of the command's input files.

    ``outputs`` maps a flag (``"--json"``) to the path it was given (``None`` or ``"-"``:
    not a file). Paths are compared after resolving, so ``./runs.csv`` and ``runs.csv`` match.
    """
    resolved_inputs = {Path(p).expanduser().resolve(): str(p) for p in inputs}
    for flag, path in outputs.items():
        if path is None or str(path) == STDOUT:
            continue
        hit = resolved_inputs.get(Path(path).expanduser().resolve())
        if hit is not None:
            raise ValueError(
                f"{flag} {path} is the input file {hit}; writing there would destroy the "
                f"data. Name another file for {flag}"
            )


def check_output_file(flag: str, path: str | Path | None) -> None:
    """Fail before any work when an output file cannot be written where ``flag`` says.

    A missing parent folder, a parent that is a file, or a path that is a folder is refused
    with what to do. ``None`` and ``"-"`` (stdout) pass.
    """
    if path is None or str(path) == STDOUT:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {target / 'out'}")
    parent = target.parent
    if not parent.exists():
        raise ValueError(
            f"{flag} {path}: the folder {parent} does not exist; create it first "
            f"(mkdir -p {parent}) or name a file in an existing folder"
        )
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
