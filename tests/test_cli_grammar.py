"""One grammar across train, describe, ladder and transfer, and one line for each user error."""

from __future__ import annotations

import numpy as np
import pytest

from everyscale import cli
from everyscale.cliargs import EveryscaleDeprecationWarning


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", [[], ["train"], ["describe"], ["ladder"], ["transfer"]])
def test_every_help_ends_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([*command, "--help"])
    assert stop.value.code == 0
    tail = capsys.readouterr().out.rstrip().splitlines()
    example = max(i for i, line in enumerate(tail) if line.startswith("example"))
    assert all(line.strip().startswith("everyscale ") for line in tail[example + 1 :])


def test_describe_takes_optimizer_and_option_and_the_old_spellings(capsys):
    assert cli.main(["describe", "--model", "mlp", "--optimizer", "sgd", "--option",
                     "momentum=0.5"]) == 0  # fmt: skip
    new = capsys.readouterr().out
    with pytest.warns(EveryscaleDeprecationWarning, match="is deprecated"):
        assert cli.main(["describe", "--model", "mlp", "--preset", "sgd", "--set",
                         "momentum=0.5"]) == 0  # fmt: skip
    assert capsys.readouterr().out == new  # the same table


def test_train_option_and_its_old_spelling():
    from everyscale.train.cli import config_from_args

    parser = cli.build_parser()
    new = config_from_args(parser.parse_args(["train", "--option", "weight_decay=0.1"]))
    with pytest.warns(EveryscaleDeprecationWarning, match="use --option"):
        old = parser.parse_args(["train", "--optimizer-option", "weight_decay=0.1"])
    assert config_from_args(old).optimizer_options == new.optimizer_options == {"weight_decay": 0.1}


def test_ladder_optimizer_and_embeddings_pair():
    parser = cli.build_parser()
    args = parser.parse_args(["ladder", "--optimizer", "muon", "--no-embeddings"])
    assert (args.optimizer, args.embeddings) == ("muon", False)
    assert parser.parse_args(["ladder", "--embeddings"]).embeddings is True
    with pytest.warns(EveryscaleDeprecationWarning):
        assert parser.parse_args(["ladder", "--preset", "adamw"]).optimizer == "adamw"


@pytest.mark.parametrize(
    "argv, words",
    [
        (
            ["describe", "--model", "mlp", "--option", "radius=abc"],
            "option radius must be a number",
        ),
        (["describe", "--model", "mlp", "--option", "nesterov=maybe"], "True or False"),
        (["describe", "--model", "mlp", "--option", "radius"], "--option expects KEY=VALUE"),
        (["describe", "--shape", "tied=no", "--width", "16", "--shape", "heads=2"], "tied must"),
        (["describe", "--model", "mlp", "--shape", "input_shape=abc"], "input_shape must"),
        (["describe", "--model", "mlp", "--option", "roles=abc"], "roles must map"),
        (["describe", "--model", "mlp", "--option", "example_input=3"], "example_input must"),
        (["train", "--steps", "1", "--option", "lr=0.1", "--out", "unused"], "(--lr)"),
    ],
)
def test_bad_values_are_one_line(argv, words, capsys):
    assert cli.main(argv) == 2
    assert words in _one_error_line(capsys.readouterr().err)


def test_a_tied_model_needs_a_boolean():
    from everyscale.train.models import build_model

    with pytest.raises(ValueError, match="tied must be True or False"):
        build_model("gpt", width=16, heads=2, depth=1, tied="no")
    assert build_model("gpt", width=16, heads=2, depth=1, tied=False).tied is False


def test_a_text_file_named_npy_is_not_called_a_pickle(tmp_path):
    from everyscale.train.data import load_dataset

    text = tmp_path / "tokens.npy"
    text.write_text("hello, not numpy\n")
    with pytest.raises(ValueError, match="not a NumPy file") as info:
        load_dataset(str(text))
    assert "allow_pickle" not in str(info.value)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled Python objects") as info:
        load_dataset(str(objects))
    assert "allow_pickle" not in str(info.value)
    ids = tmp_path / "ids.npy"
    np.save(ids, np.arange(300) % 7)
    assert load_dataset(str(ids), context=8).vocab_size == 7


def test_messages_for_cli_users_speak_in_flags():
    with pytest.warns(UserWarning, match="--option spectral_for=all"):
        assert cli.main(["describe", "--model", "cnn", "--depth", "1", "--optimizer", "muon"]) == 0
    assert cli._format_warning("careful", UserWarning, "x.py", 3) == "warning: careful\n"
    assert cli._format_warning("old", EveryscaleDeprecationWarning, "x.py", 3) == ""  # printed


def test_transfer_option_for_every_optimizer_or_one():
    from everyscale.scale.cli import config_from_args

    args = cli.build_parser().parse_args(
        ["transfer", "--optimizers", "scion,adamw", "--option", "weight_decay=0",
         "--option", "scion.radius=1", "--out", "unused"]
    )  # fmt: skip
    assert config_from_args(args).options == {
        "scion": {"weight_decay": 0, "radius": 1},
        "adamw": {"weight_decay": 0},
    }


@pytest.mark.parametrize("command", ["train", "describe", "ladder", "transfer"])
def test_every_help_example_parses(command, capsys):
    import shlex

    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    tail = capsys.readouterr().out.rstrip().splitlines()
    start = max(i for i, line in enumerate(tail) if line.startswith("example"))
    parser = cli.build_parser()
    for line in tail[start + 1 :]:
        argv = shlex.split(line)[1:]  # without "everyscale"
        args = parser.parse_args(argv)
        assert args.command == command
        if command == "train":
            from everyscale.train.cli import config_from_args

            config_from_args(args).validate()
