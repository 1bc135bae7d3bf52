"""Files people actually have, and the laws commands' grammar and output checks.

Each case is read, or refused with one line that says what was found and what is expected;
outputs never overwrite inputs; bad output places are refused before the fit runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from everyscale.cli import main
from everyscale.laws import FitResult, load_points
from everyscale.laws.cli import register
from everyscale.laws.synthetic import chinchilla_points

ROWS = [(1e8, 2e9, 3.1), (2e8, 4e9, 2.9), (4e8, 8e9, 2.7)]
GRID = '{"a": [5, 10], "b": [5, 10], "e": [0.5], "alpha": [0.5], "beta": [0.5]}'


def write(path, text: str, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def csv_text(sep=",", space="") -> str:
    lines = [sep.join(["N", "D", "loss"])]
    lines += [f"{sep}{space}".join(map(repr, row)) for row in ROWS]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bom.csv", "\ufeff" + csv_text()),
        ("spaces.csv", csv_text(space=" ")),
        ("semicolons.csv", csv_text(sep=";")),
        ("tabs.tsv", csv_text(sep="\t")),
        ("columnar.json", json.dumps({k: [r[i] for r in ROWS] for i, k in enumerate("NDl")})
         .replace('"l"', '"loss"')),
        ("records.json", json.dumps([dict(zip(["N", "D", "loss"], r)) for r in ROWS])),
        ("json-named.csv", "\n".join(json.dumps(dict(zip(["N", "D", "loss"], r))) for r in ROWS)),
    ],
)  # fmt: skip
def test_files_people_have_are_read(tmp_path, name, text):
    points = load_points(write(tmp_path / name, text))
    np.testing.assert_array_equal(points["N"], [r[0] for r in ROWS])
    np.testing.assert_array_equal(points["loss"], [r[2] for r in ROWS])
    if name == "json-named.csv":
        assert any("holds JSON, read as such" in n for n in points.notes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("N,D,loss,N\n1,2,3,4\n", r"column\(s\) \['N'\] appear more than once"),
        ('{"N": 1, "D": 2, "loss": 3, "N": 4}\n', r"duplicated key\(s\) \['N'\]"),
        ("N;D;loss\n1e8;2e9;3,1\n", "'3,1' has a decimal comma"),
        ("N,D,loss\n1e8,2e9\n", "line 2 has 2 field"),
        ("N,D,loss\n", "no data rows"),
        ("", "is empty; expected a CSV with a header line"),
        ('{"N": [1, 2], "loss": [3]}', "lists of one length"),
        ('{"N": 1, "loss": 3}', "keys .* are not lists"),
        ("[1, 2, 3]", "item 0 is a JSON int, not an object"),
        ("name,notes\nx,y\n", "has no numeric column"),
    ],
)
def test_files_that_cannot_be_read_say_what_was_found(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_points(write(tmp_path / "data.csv", text))


def test_not_utf8_and_constant_columns(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("N,D,loss,note\n1,2,3,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_points(latin)
    tokens = [1e9, 2e9, 4e9, 8e9, 1.6e10, 3.2e10]
    rows = "".join(f"1e8,{d},{3 - i * 0.1}\n" for i, d in enumerate(tokens))
    constant = write(tmp_path / "c.csv", "N,D,loss\n" + rows)
    points = load_points(constant)
    assert any("column 'N' is constant" in n for n in points.notes)
    from everyscale.laws import fit

    result = fit(points, "kaplan_n", start_grid={"alpha_N": [0.1], "log_N_c": [30.0]})
    assert any("['N'] hold one value in every row" in w for w in result.diagnostics["warnings"])


# Arbitrary input: a result or one clean ValueError, never another exception.
CELLS = st.one_of(
    st.text(max_size=6),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "-1", "1e400", "0", "3,5", '"', "\ufeff"]),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.lists(st.sampled_from(["N", "D", "C", "loss", "run", "U", "x", ""]), max_size=5),
    rows=st.lists(st.lists(CELLS, max_size=5), max_size=4),
    sep=st.sampled_from([",", ";", "\t", "|"]),
    suffix=st.sampled_from([".csv", ".json", ".jsonl", ".tsv"]),
)
def test_property_csv_reader_gives_points_or_one_value_error(tmp_path, header, rows, sep, suffix):
    text = "\n".join(sep.join(line) for line in [header, *rows])
    _load_or_value_error(write(tmp_path / f"data{suffix}", text))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    doc=st.recursive(
        st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=4)),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.sampled_from(["N", "D", "loss", "run", "C"]), inner, max_size=4),
        ),
        max_leaves=12,
    )
)
def test_property_json_reader_gives_points_or_one_value_error(tmp_path, doc):
    _load_or_value_error(write(tmp_path / "data.json", json.dumps(doc)))
    if isinstance(doc, list):
        with contextlib.suppress(ValueError):
            load_points(doc)


def _load_or_value_error(path):
    try:
        points = load_points(path)
    except ValueError as err:
        assert str(err) and "\n" not in str(err).strip()
        return
    assert len(points) >= 1


# ---------------------------------------------------------------------------------------------
# The commands: outputs, grammar, one-line errors
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    points = chinchilla_points(24, noise=0.01, seed=11)
    path = tmp_path_factory.mktemp("files") / "runs.csv"
    path.write_text("run,N,D,loss\n" + "".join(
        f"r{i},{n!r},{d!r},{loss!r}\n" for i, (n, d, loss) in enumerate(
            zip(points["N"].tolist(), points["D"].tolist(), points["loss"].tolist()))))  # fmt: skip
    return path


def test_fit_outputs_never_overwrite_the_input(data_csv, capsys):
    before = data_csv.read_text()
    for flag in ("--json", "--markdown"):
        assert main(["fit", str(data_csv), flag, str(data_csv)]) == 2
        assert f"{flag} {data_csv} is the input file" in capsys.readouterr().err
    assert data_csv.read_text() == before


def test_bad_output_places_are_refused_before_the_fit(data_csv, tmp_path, capsys):
    a_file = write(tmp_path / "notes.txt", "not a folder\n")
    cases = [
        (["--json", str(tmp_path / "missing/fit.json")], "does not exist; create it first"),
        (["--json", str(tmp_path)], "is a folder; give a file name"),
        (["--markdown", str(tmp_path / "no/such/fit.md")], "does not exist"),
        (["--plots", str(a_file)], "is a file; give a folder"),
        (["--plots", str(a_file / "plots")], "is a file, not a folder"),
    ]
    for extra, message in cases:
        assert main(["fit", str(data_csv), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_predict_refuses_a_folder_and_a_fit_that_does_not_match(data_csv, tmp_path, capsys):
    assert main(["predict", "--fit", str(tmp_path), "--N", "1e9", "--D", "2e10"]) == 2
    assert "is a folder" in capsys.readouterr().err
    fit_json = tmp_path / "fit.json"
    assert main(["fit", str(data_csv), "--start-grid", GRID, "--json", str(fit_json)]) == 0
    capsys.readouterr()
    good = json.loads(fit_json.read_text())
    broken = [
        ({**good, "law": "downstream_exp"}, "do not match law 'downstream_exp'"),
        ({**good, "params": {**good["params"], "zeta": 1.0}}, r"unknown \['zeta'\]"),
        ({**good, "params": {"a": 1.0}}, "missing"),
        ({**good, "law": "nope"}, "'nope', which is not built in"),
        ([1, 2], "holds a JSON list"),
    ]
    for doc, message in broken:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(doc))
        assert main(["predict", "--fit", str(path), "--N", "1e9", "--D", "2e10"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err
        assert __import__("re").search(message, err), err


def test_json_without_a_path_goes_to_stdout(data_csv, tmp_path, capsys):
    assert main(["fit", str(data_csv), "--start-grid", GRID, "--json"]) == 0
    captured = capsys.readouterr()
    fitted = FitResult.from_json(captured.out)  # stdout is the JSON alone
    assert "# Scaling-law fit" in captured.err
    path = tmp_path / "fit.json"
    path.write_text(captured.out)
    for command in (["predict", "--N", "1e9", "--D", "2e10"], ["allocate", "--compute", "1e21"]):
        assert main([command[0], "--fit", str(path), *command[1:], "--json"]) == 0
        json.loads(capsys.readouterr().out)
        out = tmp_path / f"{command[0]}.json"
        assert main([command[0], "--fit", str(path), *command[1:], "--json", str(out)]) == 0
        assert json.loads(out.read_text())
    assert json.loads((tmp_path / "predict.json").read_text())["prediction"] == fitted.predict(
        N=1e9, D=2e10
    )


def test_embeddings_flag_pair_and_deprecated_spellings(data_csv, tmp_path, capsys):
    for argv, expected in [
        (["--embeddings"], "N includes embedding parameters"),
        (["--no-embeddings"], "N excludes embeddings"),
    ]:
        assert main(["fit", str(data_csv), "--start-grid", GRID, *argv]) == 0
        assert expected in capsys.readouterr().out
    assert main(["fit", "--embeddings", str(data_csv), "--start-grid", GRID]) == 0  # flag first
    assert "N includes embedding parameters" in capsys.readouterr().out
    with pytest.warns(FutureWarning, match="--embeddings no is deprecated"):
        assert main(["fit", str(data_csv), "--start-grid", GRID, "--embeddings", "no"]) == 0
    captured = capsys.readouterr()
    assert "N excludes embeddings" in captured.out and "use --no-embeddings" in captured.err
    with pytest.warns(FutureWarning, match="--optimizer is deprecated"):
        argv = ["fit", str(data_csv), "--start-grid", GRID, "--optimizer", "lbfgsb"]
        assert main([*argv, "--json", str(tmp_path / "f.json")]) == 0
    assert FitResult.from_json(tmp_path / "f.json").diagnostics["optimizer"].startswith("L-BFGS")


def test_fix_and_tie_on_the_command_line(data_csv, tmp_path, capsys):
    out = tmp_path / "tied.json"
    argv = ["fit", str(data_csv), "--start-grid", GRID, "--fix", "E=1.8", "--tie", "alpha=beta"]
    assert main([*argv, "--json", str(out)]) == 0
    assert "Held: E = 1.8; alpha = beta" in capsys.readouterr().out
    result = FitResult.from_json(out)
    assert result.params["alpha"] == result.params["beta"] and result.derived["E"] == 1.8
    assert main(["fit", str(data_csv), "--fix", "E"]) == 2
    assert "--fix 'E': write NAME=VALUE" in capsys.readouterr().err
    assert main(["fit", str(data_csv), "--tie", "alpha=zeta"]) == 2
    assert "--tie: law 'chinchilla' has no parameter 'zeta'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["fit", "predict", "allocate"])
def test_every_help_ends_with_an_example(command, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert "example:\n  everyscale " + command in text
    assert text.rstrip().splitlines()[-1].startswith("  everyscale ")
