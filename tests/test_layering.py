"""Library packages import only downward (docs/architecture.md), function-level imports included.

``laws`` and ``optim`` sit at the bottom, then ``train``, ``scale``, ``dist``, ``ladder``,
``bench``.
Each package's ``cli.py``, the top-level ``everyscale/cli.py`` and ``everyscale/__init__.py`` sit
on top and may import anything; ``cliargs`` (the flag grammar) is a leaf below everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "everyscale"

#: lower number = lower layer; a library module may import only strictly lower layers
LAYERS = {
    "cliargs": 0,
    "laws": 1,
    "optim": 1,
    "train": 2,
    "scale": 3,
    "dist": 4,
    "ladder": 5,
    "bench": 6,
}
TOP_FILES = {"__init__.py", "cli.py", "__main__.py"}


def _package_of(relative: Path) -> str | None:
    """``optim`` for ``optim/presets.py``; ``None`` for files on top (they import anything)."""
    if relative.name == "cli.py" or (len(relative.parts) == 1 and relative.name in TOP_FILES):
        return None
    return relative.parts[0].removesuffix(".py")


def _targets(tree: ast.AST, relative: Path) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every everyscale import anywhere in the file."""
    here = ["everyscale", *relative.with_suffix("").parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("everyscale")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = here[: len(here) - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "everyscale":  # from everyscale import optim -> everyscale.optim
                found += [(node.lineno, f"everyscale.{a.name}") for a in node.names]
            elif module.startswith("everyscale."):
                found.append((node.lineno, module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).startswith("everyscale")
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def violations(source: str, relative: Path) -> list[str]:
    """The upward (or sideways) imports of one file, as readable lines."""
    package = _package_of(relative)
    if package is None:
        return []
    if package not in LAYERS:
        return [f"{relative}: package {package!r} has no layer; add it to LAYERS and to "
                "docs/architecture.md"]  # fmt: skip
    bad = []
    for line, module in _targets(ast.parse(source), relative):
        parts = module.split(".")
        target = parts[1] if len(parts) > 1 else "everyscale"
        if target == package and "cli" not in parts[2:]:
            continue
        if "cli" in parts[1:] or target in ("cli", "everyscale", "__main__"):
            bad.append(f"{relative}:{line} imports {module} (a CLI module or the top package)")
        elif target not in LAYERS:
            bad.append(f"{relative}:{line} imports {module}, which has no layer")
        elif LAYERS[target] >= LAYERS[package]:
            bad.append(f"{relative}:{line} imports {module}: {package} may not import {target}")
    return bad


def test_library_packages_import_only_downward():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        problems += violations(path.read_text(encoding="utf-8"), relative)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("def f():\n    from everyscale.scale import plan\n", "optim/presets.py"),
        ("import everyscale.ladder.plan\n", "train/loop.py"),
        ("from ..scale import rules\n", "optim/norms.py"),
        ("from everyscale.laws import fit\n", "optim/norms.py"),  # sideways: both at the bottom
        ("from everyscale.cli import parse_value\n", "scale/rules.py"),
        ("import importlib\nimportlib.import_module('everyscale.scale')\n", "optim/x.py"),
    ],
)
def test_the_check_catches_upward_imports(source, where):
    assert violations(source, Path(where)), f"missed: {source!r} in {where}"


def test_the_check_allows_downward_and_cli_imports():
    assert not violations("from everyscale.optim import optimizer\n", Path("scale/rules.py"))
    assert not violations("from everyscale.scale import plan\n", Path("optim/cli.py"))
    assert not violations("from . import norms\n", Path("optim/presets.py"))
