"""The transfer sweep: grid parsing, analysis on synthetic losses, plots, and a tiny sweep."""

from __future__ import annotations

import json
import math

import pytest

from available_data import TEXT_DATA
from everyscale.scale.plots import plot_transfer
from everyscale.scale.transfer import (
    SweepConfig,
    analyse,
    parse_lr_grid,
    parse_lr_grids,
    parse_sizes,
    sweep,
)


def test_parse_lr_grid_forms():
    assert parse_lr_grid("2^-3:2^-1") == [0.125, 0.25, 0.5]
    assert parse_lr_grid("2^-6:2^-2:2") == [2**-6, 2**-4, 2**-2]
    assert parse_lr_grid("0.01, 0.001,0.01") == [0.001, 0.01]
    assert parse_lr_grid("2^-14:2^-1") == [2.0**e for e in range(-14, 0)]
    assert parse_lr_grid("10^-3,2^-4") == pytest.approx([0.001, 0.0625])


@pytest.mark.parametrize(
    "text", ["", " ", ",", "0", "-0.1", "2^-3:3^-1", "2^-1:2^-3", "abc", "nan", "1e999"]
)
def test_parse_lr_grid_rejects_bad_grids(text):
    with pytest.raises(ValueError, match="lr-grid"):
        parse_lr_grid(text)


def test_parse_sizes():
    assert parse_sizes("128,64, 64", "widths") == [64, 128]
    for bad in ("", "64,x", "0,64"):
        with pytest.raises(ValueError, match="widths"):
            parse_sizes(bad, "widths")


def synthetic_records(optimum_of, loss_at_best, lrs, sizes, seeds=(0, 1), diverge_above=None):
    """Parabolic loss in log2(lr) around a known optimum per size; optional divergence."""
    records = []
    for size in sizes:
        for lr in lrs:
            for seed in seeds:
                loss = loss_at_best(size) + 0.1 * (math.log2(lr) - math.log2(optimum_of(size))) ** 2
                loss += 0.001 * seed
                if diverge_above is not None and lr > diverge_above(size):
                    loss = math.nan if seed else math.inf
                records.append(
                    {"optimizer": "opt", "size": size, "lr": lr, "seed": seed, "loss": loss}
                )
    return records


def test_analyse_finds_known_optima_and_shift():
    lrs = [2.0**e for e in range(-10, -1)]
    sizes = [32, 64, 128, 256]
    # Transfers: the optimum sits at 2^-6 for all sizes; loss falls with size.
    records = synthetic_records(lambda s: 2**-6, lambda s: 3.0 - 0.1 * math.log2(s), lrs, sizes)
    out = analyse(records, axis="width", sizes=sizes, lrs=lrs, seeds=[0, 1], optimizers=["opt"])
    entry = out["optimizers"]["opt"]
    assert entry["best_lrs"] == [2**-6] * 4
    assert entry["best_lr_shift_steps"] == 0
    assert entry["best_loss_falls_with_size"] and entry["transfers"]
    assert entry["optimum_inside_grid"]
    assert entry["sizes"]["64"]["best_loss"] == pytest.approx(3.0 - 0.6 + 0.0005)
    # The synthetic loss is exactly quadratic in log2(lr): the parabola finds the optimum
    # between grid points too.
    off_grid = synthetic_records(lambda s: 2**-6.3, lambda s: 3.0, lrs, sizes)
    fine = analyse(off_grid, axis="width", sizes=sizes, lrs=lrs, seeds=[0, 1], optimizers=["opt"])
    assert fine["optimizers"]["opt"]["best_lrs_interpolated"] == pytest.approx([2**-6.3] * 4)
    assert fine["optimizers"]["opt"]["interpolated_shift_log2"] == pytest.approx(0, abs=1e-9)
    # Drifts like SP Adam: the optimum halves with each doubling of width -> 3 grid steps.
    drift = synthetic_records(
        lambda s: 2**-4 * 32 / s, lambda s: 3.0 - 0.1 * math.log2(s), lrs, sizes
    )
    entry = analyse(drift, axis="width", sizes=sizes, lrs=lrs, seeds=[0, 1], optimizers=["opt"])[
        "optimizers"
    ]["opt"]
    assert entry["best_lrs"] == [2**-4, 2**-5, 2**-6, 2**-7]
    assert entry["best_lr_shift_steps"] == 3 and not entry["transfers"]
    assert entry["interpolated_shift_log2"] == pytest.approx(3.0)


def test_diverged_runs_count_as_inf_and_are_never_the_best():
    lrs = [2.0**e for e in range(-8, -1)]
    sizes = [32, 64]
    # The smooth optimum would be 2^-3, but everything above 2^-5 diverges (one seed inf,
    # the other nan): the best must move to 2^-5 and the divergences must be counted.
    records = synthetic_records(
        lambda s: 2**-3, lambda s: 2.0 - 0.01 * s, lrs, sizes, diverge_above=lambda s: 2**-5
    )
    out = analyse(records, axis="width", sizes=sizes, lrs=lrs, seeds=[0, 1], optimizers=["opt"])
    size = out["optimizers"]["opt"]["sizes"]["32"]
    assert size["best_lr"] == 2**-5
    assert size["diverged_runs"] == 2 * 3  # lrs 2^-4, 2^-3, 2^-2, two seeds each
    assert size["mean_loss"][-1] == math.inf
    # One diverged seed makes the whole grid point inf.
    records[0]["loss"] = math.inf
    out = analyse(records, axis="width", sizes=sizes, lrs=lrs, seeds=[0, 1], optimizers=["opt"])
    assert out["optimizers"]["opt"]["sizes"]["32"]["mean_loss"][0] == math.inf


def test_analyse_flags_missing_runs_and_grid_edges():
    lrs = [0.1, 0.2, 0.4]
    records = synthetic_records(lambda s: 0.4, lambda s: 1.0 / s, lrs, [1, 2])
    out = analyse(records, axis="depth", sizes=[1, 2], lrs=lrs, seeds=[0, 1], optimizers=["opt"])
    assert out["optimizers"]["opt"]["sizes"]["1"]["best_at_grid_edge"]
    assert out["optimizers"]["opt"]["sizes"]["1"]["best_lr_interpolated"] is None
    assert not out["optimizers"]["opt"]["optimum_inside_grid"]
    with pytest.raises(ValueError, match="no run for"):
        analyse(records[1:], axis="depth", sizes=[1, 2], lrs=lrs, seeds=[0, 1], optimizers=["opt"])


def test_plot_transfer_writes_a_png_even_with_diverged_points(tmp_path):
    lrs = [2.0**e for e in range(-8, -1)]
    records = synthetic_records(
        lambda s: 2**-5, lambda s: 2.0 - 0.01 * s, lrs, [32, 64], diverge_above=lambda s: 2**-3
    )
    out = analyse(records, axis="width", sizes=[32, 64], lrs=lrs, seeds=[0, 1], optimizers=["opt"])
    json.dumps(out)  # the result is JSON serializable as it stands
    path = plot_transfer(out, tmp_path / "transfer.png")
    assert path.stat().st_size > 5000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def tiny_sweep(out) -> SweepConfig:
    return SweepConfig(
        model="gpt",
        data=TEXT_DATA,
        widths=[16, 32],
        depth=1,
        optimizers=["scion", "adamw"],
        lrs={"scion": [2**-10, 2**-9], "adamw": [2**-8, 2**-7]},
        seeds=1,
        steps=3,
        batch_size=4,
        context=16,
        val_windows=8,
        coord_steps=2,
        out=str(out),
    )


def test_tiny_sweep_end_to_end_and_resume(tmp_path):
    config = tiny_sweep(tmp_path / "sweep")
    result = sweep(config, progress=False)
    assert result["runs_trained"] == 8 and result["runs_reused"] == 0
    for name in ("transfer.json", "transfer.png", "coord.json", "coord.png"):
        assert (tmp_path / "sweep" / name).stat().st_size > 0, name
    stored = json.loads((tmp_path / "sweep" / "transfer.json").read_text())
    assert stored["axis"] == "width" and stored["sizes"] == [16, 32]
    for opt in ("scion", "adamw"):
        entry = stored["optimizers"][opt]
        assert entry["best_lrs"][0] in config.lrs[opt]
        for size in entry["sizes"].values():
            assert len(size["losses"]) == 2 and all(math.isfinite(v[0]) for v in size["losses"])
    assert set(stored["coord_max_spread"]) == {"scion", "adamw"}
    # Each run wrote its own files through everyscale.train.
    run_dir = config.run_dir("scion", 32, 2**-9, 0)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"

    # Resume: nothing is retrained and the numbers are the same.
    config.coord_steps = 0  # checked above; skipping it keeps the test fast
    again = sweep(config, progress=False)
    assert again["runs_trained"] == 0 and again["runs_reused"] == 8
    assert again["optimizers"] == result["optimizers"]

    # A run recorded as diverged counts as inf, and its grid point can no longer be the best.
    summary_path = config.run_dir("adamw", 16, 2**-8, 0) / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["status"] = "diverged"
    summary_path.write_text(json.dumps(summary))
    third = sweep(config, progress=False)
    entry = third["optimizers"]["adamw"]["sizes"]["16"]
    assert entry["mean_loss"][0] == math.inf and entry["diverged_runs"] == 1
    assert entry["best_lr"] == 2**-7

    # Other settings in the same directory are refused rather than silently reused: those a
    # run's config.json records, and the sweep's own (initialization, width rule, alpha).
    config.width_rule = "mup"
    with pytest.raises(ValueError, match="width_rule='none'"):
        sweep(config, progress=False)
    config.width_rule, config.init = "none", "default"
    with pytest.raises(ValueError, match=r"init=1\.0"):
        sweep(config, progress=False)
    config.init = 1.0
    config.steps = 4
    with pytest.raises(ValueError, match="other settings"):
        sweep(config, progress=False)


def test_depth_sweep_sets_the_residual_multiplier():
    config = SweepConfig(depths=[2, 8], width=32, alpha=1.0, optimizers=["scion"])
    assert config.axis == "depth" and config.sizes == [2, 8]
    assert config.shape(2)["residual_multiplier"] == 1.0
    assert config.shape(8)["residual_multiplier"] == pytest.approx(0.25)
    assert config.shape(8)["width"] == 32 and config.shape(8)["heads"] == 2
    half = SweepConfig(depths=[2, 8], alpha=0.5)
    assert half.shape(8)["residual_multiplier"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--widths", "64,100"], "head-dim"),
        (["--widths", "64,128", "--heads", "3"], "heads=3"),
        (["--widths", "64"], "at least two"),
        (["--widths", ""], "widths"),
        (["--lr-grid", ""], "lr-grid"),
        (["--lr-grid", "adamw=2^-8:2^-6"], "no grid for scion"),
        (["--optimizers", "scion,adam"], "unknown preset"),
        (["--init", "-1"], "init"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tmp_path, capsys, argv, message):
    from everyscale.cli import main

    code = main(["transfer", "--out", str(tmp_path), "--steps", "2", *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before any training


def test_parse_lr_grids_per_optimizer():
    grids = parse_lr_grids(["2^-3:2^-2", "adamw=0.001"], ["scion", "adamw"])
    assert grids == {"scion": [0.125, 0.25], "adamw": [0.001]}
    with pytest.raises(ValueError, match="not among"):
        parse_lr_grids(["sgd=0.1", "0.2"], ["scion"])


def test_markdown_and_text_reports_mark_the_best_learning_rate():
    from everyscale.scale.cli import markdown, report

    lrs = [2.0**e for e in range(-6, -2)]
    records = synthetic_records(lambda s: 2**-4, lambda s: 2.0 - 0.01 * s, lrs, [32, 64])
    out = analyse(records, axis="width", sizes=[32, 64], lrs=lrs, seeds=[0, 1], optimizers=["opt"])
    table = markdown(out)
    assert "| 32 | " in table and "**" in table and "| 2^-4 |" in table
    assert table.count("2^-4 |") == 3  # the header and the best lr of both widths
    assert "optimum moves 0 grid step(s)" in table
    assert "transfers: True" in report(out)


def test_cli_options_are_parsed_per_preset():
    from everyscale.scale.cli import parse_options

    got = parse_options(["scion.radius=1.0", "scion.ns_steps=7", "scion.nesterov=true"], ["scion"])
    assert got == {"scion": {"radius": 1.0, "ns_steps": 7, "nesterov": True}}
    both = parse_options(["weight_decay=0", "adamw.eps=1e-6"], ["scion", "adamw"])
    assert both == {"scion": {"weight_decay": 0}, "adamw": {"weight_decay": 0, "eps": 1e-6}}
    with pytest.raises(ValueError, match=r"PRESET\.KEY=VALUE"):
        parse_options([".radius=1"], ["scion"])
    with pytest.raises(ValueError, match=r"--option expects KEY=VALUE"):
        parse_options(["scion.radius"], ["scion"])
    with pytest.raises(ValueError, match="not among --optimizers"):
        parse_options(["adamw.eps=1e-8"], ["scion"])
