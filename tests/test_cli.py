"""The top-level command: one grammar for KEY=VALUE options, one-line errors."""

from __future__ import annotations

import pytest

from everyscale.cli import main, parse_value


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("0.1", 0.1),
        ("3", 3),
        ("true", True),  # JSON
        ("True", True),  # Python
        ("[0.9, 0.95]", [0.9, 0.95]),
        ("(0.9, 0.95)", (0.9, 0.95)),
        ("match_rms_adamw", "match_rms_adamw"),  # a bare word stays text
    ],
)
def test_option_values_read_the_same_everywhere(raw, value):
    assert parse_value(raw) == value and type(parse_value(raw)) is type(value)


def test_bad_input_is_one_line_and_exit_code_2(capsys):
    assert main(["train", "--optimizer", "adam", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--optimizer" in err and "adamw" in err
