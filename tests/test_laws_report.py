"""The Markdown summary and the plots, for laws of different shapes."""

from __future__ import annotations

import numpy as np

from everyscale.laws import fit, isoflop, load_points
from everyscale.laws.allocate import allocate, optimal_allocation
from everyscale.laws.plots import save_plots
from everyscale.laws.synthetic import BESIROGLU, sample_law


def isoflop_points():
    E, A, B, alpha, beta = (BESIROGLU[k] for k in ("E", "A", "B", "alpha", "beta"))
    rows = []
    for C in (1e18, 1e19, 1e20):
        n_opt = optimal_allocation(A, B, E, alpha, beta, C)["N"]
        for N in np.geomspace(n_opt / 4, n_opt * 4, 7):
            loss = E + A / N**alpha + B / (C / (6 * N)) ** beta
            rows.append({"N": N, "C": C, "loss": loss, "run": f"{C:g}-{N:.0f}"})
    return load_points(rows, embeddings=True)


def test_summary_and_plots_for_chinchilla_with_isoflop(tmp_path):
    points = isoflop_points()
    grid = {"a": [5.0, 10.0], "b": [5.0, 10.0], "e": [0.5], "alpha": [0.5], "beta": [0.5]}
    result = fit(points, start_grid=grid, bootstrap=20)
    iso = isoflop(points)
    text = result.summary()
    assert "N includes embedding parameters" in text and "D computed as C / (6 N)" in text
    from everyscale.laws.report import summary

    full = summary(result, allocation=allocate(result, [1e21, 1e22]), iso=iso)
    assert "| 1e+21 |" in full and "IsoFLOP (Chinchilla Approach 2)" in full
    paths = save_plots(result, points, tmp_path, iso=iso)
    assert [p.name for p in paths] == [
        "loss_vs_compute.png",
        "residuals.png",
        "bootstrap.png",
        "isoflop.png",
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_plots_for_a_compute_law_and_a_downstream_law(tmp_path):
    C = np.geomspace(1e17, 1e21, 30)
    compute_points = sample_law(
        "compute", {"a": 8.0, "e": 0.5, "alpha": 0.15}, {"C": C}, noise=0.005
    )
    result = fit(compute_points, "compute", bootstrap=20)
    assert len(save_plots(result, compute_points, tmp_path / "c")) == 3
    loss = np.linspace(2.0, 4.5, 30)
    params = {"eps": 0.9, "k": 8.0, "gamma": 1.5}
    downstream = sample_law("downstream_exp", params, {"loss": loss}, noise=0.005)
    result = fit(downstream, "downstream_exp")
    assert "| gamma |" in result.summary()
    assert len(save_plots(result, downstream, tmp_path / "d")) == 2
