"""`everyscale fit / predict / allocate` end to end on a temporary CSV."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from everyscale.cli import main
from everyscale.laws import FitResult
from everyscale.laws.cli import register
from everyscale.laws.synthetic import chinchilla_points

GRID = '{"a": [5, 10], "b": [5, 10], "e": [0.5], "alpha": [0.5], "beta": [0.5]}'


def run_laws_cli(argv: list[str]) -> int:
    """Only this package's subcommands: the test does not depend on the other packages."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    points = chinchilla_points(48, noise=0.01, seed=11)
    path = tmp_path_factory.mktemp("laws") / "runs.csv"
    lines = ["run,N,D,loss"] + [
        f"r{i // 2},{n!r},{d!r},{loss!r}"  # two points per run: the bootstrap resamples runs
        for i, (n, d, loss) in enumerate(
            zip(points["N"].tolist(), points["D"].tolist(), points["loss"].tolist())
        )
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_predict_allocate_end_to_end(data_csv, tmp_path, capsys):
    fit_json, plots = tmp_path / "fit.json", tmp_path / "plots"
    argv = ["fit", str(data_csv), "--start-grid", GRID, "--bootstrap", "40", "--json",
            str(fit_json), "--plots", str(plots), "--compute", "1e21", "--embeddings", "no",
            "--markdown", str(tmp_path / "fit.md")]  # fmt: skip
    assert run_laws_cli(argv) == 0
    out = capsys.readouterr().out
    assert "# Scaling-law fit: `chinchilla`" in out and "| alpha |" in out
    assert "Compute-optimal allocation" in out
    saved = FitResult.from_json(fit_json)
    assert saved.bootstrap_info["unit"] == "run" and saved.bootstrap_info["n_runs"] == 24
    assert saved.data["parameter_count"] == "N excludes embeddings"
    assert sorted(p.name for p in plots.iterdir()) == [
        "bootstrap.png",
        "loss_vs_compute.png",
        "residuals.png",
    ]
    assert (tmp_path / "fit.md").read_text().strip() == out.strip()

    assert run_laws_cli(["predict", "--fit", str(fit_json), "--N", "1.4e9", "--D", "2.8e10",
                         "--json"]) == 0  # fmt: skip
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["prediction"] == saved.predict(N=1.4e9, D=2.8e10)
    lo, hi = predicted["interval"]
    assert lo < predicted["prediction"] < hi

    assert run_laws_cli(["predict", "--fit", str(fit_json), "--N", "1.4e9", "--C", "2.352e20"]) == 0
    assert "95% interval" in capsys.readouterr().out

    assert run_laws_cli(["allocate", "--fit", str(fit_json), "--compute", "1e21", "--json"]) == 0
    alloc = json.loads(capsys.readouterr().out)
    assert alloc["N"] * alloc["D"] * 6 == pytest.approx(1e21)
    assert alloc["intervals"]["tokens_per_param"][0] < alloc["tokens_per_param"]
    assert run_laws_cli(["allocate", "--fit", str(fit_json), "--compute", "1e21", "1e23"]) == 0
    assert "tokens per parameter" in capsys.readouterr().out


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("N,D\n1e8,1e9\n")
    assert main(["fit", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "everyscale fit: error:" in err and "'loss'" in err
    assert main(["predict", "--fit", str(tmp_path / "none.json"), "--N", "1e9"]) == 2
    assert "does not exist" in capsys.readouterr().err
    negative = tmp_path / "neg.csv"
    negative.write_text("N,D,loss\n1e8,1e9,3.0\n-2e8,1e9,2.9\n")
    assert main(["fit", str(negative)]) == 2
    assert "rows [1]" in capsys.readouterr().err


def test_predict_without_bootstrap_says_so(data_csv, tmp_path, capsys):
    fit_json = tmp_path / "fit.json"
    argv = ["fit", str(data_csv), "--start-grid", GRID, "--optimizer", "lbfgsb", "--json",
            str(fit_json)]  # fmt: skip
    assert run_laws_cli(argv) == 0
    capsys.readouterr()
    assert FitResult.from_json(fit_json).diagnostics["optimizer"].startswith("L-BFGS-B")
    assert run_laws_cli(["predict", "--fit", str(fit_json), "--N", "1e9", "--D", "2e10"]) == 0
    assert "no interval" in capsys.readouterr().out
    assert run_laws_cli(["fit", str(data_csv), "--start-grid", GRID, "--isoflop"]) == 0
    assert "IsoFLOP analysis skipped" in capsys.readouterr().err  # random sizes: no budgets
    with pytest.raises(ValueError, match="give the inputs"):
        run_laws_cli(["predict", "--fit", str(fit_json)])
    assert np.isfinite(FitResult.from_json(fit_json).objective)
