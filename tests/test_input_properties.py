"""Property tests: arbitrary input to the value parser, the option parser and the TrainConfig
validator gives a result or one clean ValueError (FileNotFoundError for a missing file), never
another exception."""

from __future__ import annotations

import dataclasses
import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from everyscale.cli import main as main_cli  # noqa: E402
from everyscale.cli import parse_value  # noqa: E402
from everyscale.cliargs import parse_option  # noqa: E402
from everyscale.train.config import TrainConfig  # noqa: E402

FAST = settings(max_examples=150, deadline=None)

# Text that looks like what people type: literals, brackets, quotes, numbers, odd unicode.
LITERALISH = st.text(
    alphabet=st.sampled_from(list("[]{}()'\",:.=-+eE0123456789 TrueFalsNn_xab\\\x00é∞")),
    max_size=40,
)
ANY_TEXT = st.one_of(st.text(max_size=60), LITERALISH)


@FAST
@given(ANY_TEXT)
def test_parse_value_never_raises(raw):
    value = parse_value(raw)
    if isinstance(value, str) and value != raw:
        # A string result other than the raw text is a parsed literal (JSON or Python).
        assert json.loads(json.dumps(value)) == value


@FAST
@given(ANY_TEXT)
def test_parse_option_gives_a_pair_or_a_value_error_naming_the_flag(text):
    try:
        key, _ = parse_option(text, "--option")
    except ValueError as err:
        assert "--option expects KEY=VALUE" in str(err)
    else:
        assert key and "=" in text and key == text.partition("=")[0].strip()


def test_parse_value_examples():
    assert parse_value("0.1") == 0.1
    assert parse_value("[0.9, 0.95]") == [0.9, 0.95]
    assert parse_value("(0.9, 0.95)") == (0.9, 0.95)
    assert parse_value("True") is True
    assert parse_value("match_rms_adamw") == "match_rms_adamw"
    assert parse_value("{[]: 1}") == "{[]: 1}"  # unhashable key: the text itself
    assert parse_value("[" * 10_000) == "[" * 10_000  # nested too deep: the text itself


# Values a JSON config file can hold, for every field.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


@FAST
@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6))
def test_train_config_validator_accepts_or_raises_value_error(values):
    try:
        config = TrainConfig.from_dict(values)
        config.validate(check_optimizer=True)
    except ValueError as err:
        assert str(err)  # a message, not an empty error
        return
    json.dumps(config.fingerprint())  # a valid config is always JSON-able
    assert all(isinstance(getattr(config, f), bool) for f in ("tied", "resume", "quiet"))
    assert all(isinstance(getattr(config, f), str) for f in ("model", "data", "out"))


def test_config_kinds_are_checked():
    for values, flag in (
        ({"tied": "no"}, "--tied"),
        ({"out": 5}, "--out"),
        ({"threads": True}, "--threads"),
        ({"optimizer_options": {"momentum": float("nan")}}, "--option momentum"),
        ({"optimizer_options": {"lr": 0.1}}, "--lr"),
    ):
        with pytest.raises(ValueError, match=flag):
            TrainConfig.from_dict(values).validate()


@FAST
@given(st.text(max_size=300))
def test_train_config_from_json_text_or_path(text):
    try:
        TrainConfig.from_json(text)
    except (ValueError, FileNotFoundError) as err:
        assert str(err)


@FAST
@given(
    st.sampled_from(["width", "depth", "lr", "warmup", "cooldown", "clip", "steps"]),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_non_finite_numbers_are_refused_by_name(field, value):
    try:
        TrainConfig(**{field: value}).validate(check_optimizer=False)
    except ValueError as err:
        assert field in str(err) or "fraction" in str(err) or "warmup" in str(err)


@FAST
@given(st.lists(ANY_TEXT, max_size=4))
def test_per_optimizer_options_give_a_dict_or_a_value_error(items):
    from everyscale.scale.cli import parse_options

    try:
        options = parse_options(items, ["scion", "adamw"])
    except ValueError as err:
        assert "--option" in str(err)
    else:
        assert set(options) <= {"scion", "adamw"}


def _preset_option_names() -> list[str]:
    from everyscale.optim.registry import COMMON_OPTIONS, PRESETS, get_preset

    names = {k for preset in PRESETS for k in get_preset(preset).option_names()}
    return sorted(names | COMMON_OPTIONS | {"lr"})


OPTION_VALUES = st.one_of(
    st.sampled_from(["abc", "-1", "0", "2", "nan", "1e400", "[0.9]", "[1,2,3]", "True", "None"]),
    st.sampled_from(["{}", "(1,)", "[[1]]", '{"a": 1}', "adamw", "muon", "svd", "bfloat16"]),
    LITERALISH,
)


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["sgd", "signum", "lion", "adamw", "muon", "scion", "clipped_scion"]),
    st.sampled_from(_preset_option_names()),
    OPTION_VALUES,
)
def test_describe_with_any_option_value_exits_zero_or_two(preset, key, value):
    import contextlib
    import io
    import warnings

    argv = ["describe", "--model", "gpt", "--width", "16", "--depth", "1", "--shape", "heads=2"]
    argv += ["--optimizer", preset, "--option", f"{key}={value}"]
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()) as err,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        code = main_cli(argv)
    assert code in (0, 2)
    if code == 2:
        assert "everyscale describe: error:" in err.getvalue()


def test_a_config_path_the_os_refuses_is_a_value_error():
    # Found by the property test above: a 300-character name made pathlib raise OSError.
    with pytest.raises(ValueError, match="cannot be read: File name too long"):
        TrainConfig.from_json("x" * 300)
