"""Loading data points and refusing bad input with a message that names the column and rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from everyscale.laws import fit, load_points

ROWS = [
    {"N": 1e8, "D": 2e9, "loss": 3.1, "run": "a"},
    {"N": 1e8, "D": 4e9, "loss": 3.0, "run": "a"},
    {"N": 4e8, "D": 8e9, "loss": 2.8, "run": "b"},
]


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_csv_jsonl_and_parquet_give_the_same_points(tmp_path):
    csv_path = write_csv(tmp_path / "p.csv", ["N", "D", "loss", "run"], [r.values() for r in ROWS])
    jsonl_path = tmp_path / "p.jsonl"
    jsonl_path.write_text("\n".join(json.dumps(r) for r in ROWS))
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    parquet_path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet_path)
    loaded = [load_points(p) for p in (csv_path, jsonl_path, parquet_path)] + [load_points(ROWS)]
    for points in loaded:
        np.testing.assert_array_equal(points["N"], [1e8, 1e8, 4e8])
        np.testing.assert_array_equal(points["C"], 6 * points["N"] * points["D"])
        assert list(points.run) == ["a", "a", "b"] and points.has_runs


def test_tokens_from_flops_when_d_is_absent():
    points = load_points([{"N": 1e8, "C": 6e17, "loss": 3.0}, {"N": 2e8, "C": 6e18, "loss": 2.9}])
    np.testing.assert_allclose(points["D"], [1e9, 5e9])
    assert any("D computed as C / (6 N)" in n for n in points.notes)


def test_a_flop_count_other_than_6nd_is_noted():
    points = load_points([{"N": 1e8, "D": 1e9, "C": 7.2e17, "loss": 3.0}])
    assert any("1.2-1.2 x 6 N D" in n for n in points.notes)
    assert not load_points([{"N": 1e8, "D": 1e9, "C": 6e17, "loss": 3.0}]).notes


def test_best_learning_rate_is_kept_and_said():
    rows = [
        {"N": 1e8, "D": 2e9, "loss": 3.3, "lr": 1e-3},
        {"N": 1e8, "D": 2e9, "loss": 3.1, "lr": 3e-3},
        {"N": 1e8, "D": 2e9, "loss": 3.6, "lr": 1e-2},
        {"N": 2e8, "D": 2e9, "loss": 3.0, "lr": 3e-3},
    ]
    points = load_points(rows)
    assert len(points) == 2
    np.testing.assert_array_equal(points["loss"], [3.1, 3.0])
    assert any("2 of 4 rows dropped" in n for n in points.notes)


def test_embeddings_flag_is_recorded():
    assert load_points(ROWS, embeddings=False).parameter_count() == "N excludes embeddings"
    flagged = [{**r, "embeddings": "true"} for r in ROWS]
    assert load_points(flagged).embeddings is True
    with pytest.raises(ValueError, match="says True but --no-embeddings"):
        load_points(flagged, embeddings=False)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"N": 1e8, "D": 1e9, "loss": 3.0}, {"N": -1, "D": 1e9, "loss": 3.0}],
         r"column 'N' .* must be positive; non-positive values in rows \[1\]"),
        ([{"N": 1e8, "D": 1e9, "loss": 3.0}, {"N": 1e8, "D": 1e9, "loss": float("nan")}],
         r"column 'loss' .* non-finite values in rows \[1\]"),
        ([{"N": 1e8, "D": 1e9, "loss": float("inf")}], r"column 'loss' .* non-finite"),
        ([{"N": 1e8, "D": 1e9, "loss": "abc"}], r"'loss' .* non-numeric values in rows \[0\]"),
        ([{"N": 1e8, "D": 1e9, "loss": 3.0, "U": 0.0}], r"column 'U' .* rows \[0\]"),
        ([], "no data points"),
    ],
)  # fmt: skip
def test_bad_values_name_the_column_and_rows(rows, message):
    with pytest.raises(ValueError, match=message):
        load_points(rows)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_points(tmp_path / "nope.csv")
    bad = tmp_path / "p.xlsx"
    bad.write_text("N,D,loss\n")
    with pytest.raises(ValueError, match=r"unknown file type '\.xlsx'"):
        load_points(bad)
    header_only = tmp_path / "p.txt"
    header_only.write_text("N,D,loss\n")
    with pytest.raises(ValueError, match=r"has a header .* but no data rows"):
        load_points(header_only)
    broken = tmp_path / "p.jsonl"
    broken.write_text('{"N": 1}\n{oops\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_points(broken)
    empty_cell = write_csv(
        tmp_path / "e.csv", ["N", "D", "loss"], [[1e8, 1e9, 3.0], [1e8, "", 2.9]]
    )
    with pytest.raises(ValueError, match=r"column 'D' .* rows \[1\]"):
        load_points(empty_cell)


def test_law_specific_input_errors():
    rows = [{"N": 1e8 * (i + 1), "D": 1e9 * (i + 2), "loss": 3.0 - 0.1 * i} for i in range(8)]
    with pytest.raises(ValueError, match=r"law 'data_constrained' needs column\(s\) \['U'\]"):
        fit(rows, "data_constrained")
    with pytest.raises(ValueError, match="5 parameters but records has only 4 points"):
        fit(rows[:4], "chinchilla")
    with pytest.raises(ValueError, match=r"needs column\(s\) \['error'\]"):
        fit(rows, "downstream_exp")
    with pytest.raises(ValueError, match=r"law 'chinchilla' needs column\(s\) \['loss'\]"):
        fit([{"N": r["N"], "D": r["D"]} for r in rows], "chinchilla")
    with pytest.raises(ValueError, match="needs column 'D'"):
        fit([{"N": r["N"], "loss": r["loss"]} for r in rows], "chinchilla")
    with pytest.raises(ValueError, match="huber_delta must be a positive"):
        fit(rows, "kaplan_n", huber_delta=0.0)
    with pytest.raises(ValueError, match="loss must be 'huber' or 'lsq'"):
        fit(rows, "kaplan_n", loss="l1")
    with pytest.raises(ValueError, match=r"start_grid\['alpha_N'\] must be a non-empty list"):
        fit(rows, "kaplan_n", start_grid={"alpha_N": []})
