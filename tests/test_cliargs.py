"""The shared flag grammar: deprecated aliases, --json [PATH], refusing to overwrite inputs."""

import argparse

import pytest

from everyscale.cliargs import (
    EveryscaleDeprecationWarning,
    add_deprecated_alias,
    add_json_option,
    add_option_flag,
    check_output_file,
    refuse_overwriting_inputs,
    yes_no,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--optimizer", default="scion")
    add_deprecated_alias(p, "--preset", "--optimizer", dest="optimizer")
    add_option_flag(p)
    add_deprecated_alias(p, "--set", "--option", dest="options", action="append")
    p.add_argument("--embeddings", action=argparse.BooleanOptionalAction, default=True)
    add_deprecated_alias(p, "--embeddings-yn", "--embeddings", dest="embeddings", type=yes_no)
    add_json_option(p, "the result")
    return p


def test_new_spelling_and_defaults():
    args = _parser().parse_args(["--optimizer", "muon", "--option", "a=1"])
    assert (args.optimizer, args.options, args.json_out) == ("muon", ["a=1"], None)


def test_deprecated_alias_warns_and_stores(capsys):
    with pytest.warns(EveryscaleDeprecationWarning, match="use --optimizer"):
        args = _parser().parse_args(["--preset", "adamw"])
    assert args.optimizer == "adamw"
    assert "--preset is deprecated" in capsys.readouterr().err


def test_deprecated_append_alias_joins_new_flag():
    with pytest.warns(EveryscaleDeprecationWarning):
        args = _parser().parse_args(["--option", "a=1", "--set", "b=2"])
    assert args.options == ["a=1", "b=2"]


def test_deprecated_yes_no_alias_converts():
    with pytest.warns(EveryscaleDeprecationWarning):
        args = _parser().parse_args(["--embeddings-yn", "no"])
    assert args.embeddings is False


def test_json_option_stdout_or_path():
    assert _parser().parse_args(["--json"]).json_out == "-"
    assert _parser().parse_args(["--json", "out.json"]).json_out == "out.json"


def test_refuse_overwriting_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs.csv").write_text("N,D,loss\n")
    with pytest.raises(ValueError, match=r"--json \./runs\.csv is the input file"):
        refuse_overwriting_inputs({"--json": "./runs.csv"}, ["runs.csv"])
    refuse_overwriting_inputs({"--json": "fit.json", "--markdown": None}, ["runs.csv"])


def test_check_output_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist; create it first"):
        check_output_file("--json", tmp_path / "missing" / "fit.json")
    with pytest.raises(ValueError, match="is a folder"):
        check_output_file("--plots", tmp_path)
    check_output_file("--json", tmp_path / "fit.json")
    check_output_file("--json", "-")
