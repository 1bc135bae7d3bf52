"""`everyscale train`: flags become a TrainConfig, the run writes its files, errors are clear."""

import argparse
import json

import pytest

from available_data import TEXT_DATA as TEXT
from everyscale.train import TrainConfig
from everyscale.train import cli as train_cli


def parse(argv):
    parser = argparse.ArgumentParser(prog="everyscale")
    train_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


TINY = f"--model gpt --data {TEXT} --width 16 --depth 1 --heads 2 --context 16 "
TINY += "--batch-size 4 --val-windows 8 --threads 1 --quiet --optimizer adamw --lr 0.01"


def test_flags_map_to_config_fields_and_defaults_stay():
    args = parse([*TINY.split(), "--steps", "7", "--schedule", "wsd", "--no-keep-checkpoint"])
    config = train_cli.config_from_args(args)
    assert config.steps == 7 and config.schedule == "wsd" and config.keep_checkpoint is False
    assert config.width == 16 and config.lr == 0.01 and config.quiet is True
    assert config.seed == TrainConfig().seed and config.clip is None


def test_config_file_then_flags_override_it(tmp_path):
    path = tmp_path / "base.json"
    TrainConfig(width=64, heads=8, lr=0.5, optimizer_options={"momentum": 0.9}).to_json(path)
    args = parse(["--config", str(path), "--lr", "0.25", "--option", "weight_decay=0.1"])
    config = train_cli.config_from_args(args)
    assert config.width == 64 and config.heads == 8 and config.lr == 0.25
    assert config.optimizer_options == {"momentum": 0.9, "weight_decay": 0.1}


def test_bad_optimizer_option_names_the_flag():
    with pytest.raises(ValueError, match="--option expects KEY=VALUE"):
        train_cli.config_from_args(parse(["--option", "0.1"]))


def test_train_writes_its_files_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = parse([*TINY.split(), "--steps", "4", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"{out}/metrics.jsonl" in printed and "completed: 4 steps" in printed
    for name in ("config.json", "metrics.jsonl", "summary.json", "checkpoint.pt"):
        assert (out / name).exists()
    assert json.loads((out / "summary.json").read_text())["steps"] == 4
    args = parse([*TINY.split(), "--steps", "4", "--out", str(out), "--resume"])
    assert args.func(args) == 0  # a completed run resumes to its summary


def test_bad_input_raises_value_error_before_training(tmp_path):
    args = parse([*TINY.split(), "--width", "18", "--heads", "4", "--out", str(tmp_path / "r")])
    with pytest.raises(ValueError, match="not divisible by heads"):
        args.func(args)
    assert not (tmp_path / "r").exists()


def test_help_lists_the_choices_and_says_what_no_value_means(capsys):
    from everyscale.train.config import known_optimizers

    with pytest.raises(SystemExit):
        parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert all(name in text for name in known_optimizers())
    assert "default: None" not in text
    assert "no clipping" in text and "torch's choice" in text
