"""IsoFLOP analysis (Chinchilla Approach 2) and the extrapolation check.

IsoFLOP (Hoffmann et al. 2022, §3.2): for each fixed compute budget C, several model sizes are
trained; a parabola in log N is fitted to the final losses and its vertex is the budget's optimal
size N*(C). A vertex outside the sampled sizes (or a sampled minimum at the first or last size)
means the budget did not bracket its optimum, and the estimate would be an extrapolation: we
refuse it. Then log N* is regressed on log C: N* ~ C^a, and D* = C / (6 N*) ~ C^(1 - a).

Extrapolation check (as Hoffmann et al. 2022 and Gadre et al. 2024 validate their laws): a law
is validated by predicting runs it has not seen, larger than those it was fitted on, not by
its fit statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from everyscale.laws.fit import FitResult, fit
from everyscale.laws.forms import Law
from everyscale.laws.io import Points, load_points


@dataclass
class IsoFlopResult:
    """Per-budget optima and the power law N*(C) = k C^a fitted through them."""

    budgets: list[dict]
    a: float
    log_k: float
    notes: list[str] = field(default_factory=list)

    @property
    def b(self) -> float:
        """Exponent of D*(C) = C / (6 N*(C)) ~ C^(1 - a)."""
        return 1.0 - self.a

    def optimal_N(self, compute) -> np.ndarray:
        return np.exp(self.log_k + self.a * np.log(np.asarray(compute, dtype=float)))

    def optimal_D(self, compute) -> np.ndarray:
        compute = np.asarray(compute, dtype=float)
        return compute / (6.0 * self.optimal_N(compute))

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "log_k": self.log_k,
            "budgets": self.budgets,
            "notes": self.notes,
        }


def group_budgets(compute: np.ndarray, rel_tol: float) -> np.ndarray:
    """Label points whose compute agrees within `rel_tol` (relative, chained) with one group id."""
    order = np.argsort(compute)
    log_c = np.log(compute[order])
    new_group = np.concatenate([[True], np.diff(log_c) > np.log1p(rel_tol)])
    labels = np.empty(len(compute), dtype=int)
    labels[order] = np.cumsum(new_group) - 1
    return labels


def isoflop(
    points: Points | str | list,
    *,
    rel_tol: float = 0.02,
    min_points: int = 3,
    on_edge: str = "raise",
) -> IsoFlopResult:
    """Chinchilla Approach 2 on points grouped into compute budgets (C agreeing within rel_tol).

    Budgets with fewer than `min_points` model sizes are skipped (and noted). A budget whose
    minimum sits at the edge of its sizes raises ValueError (`on_edge="raise"`), or is dropped
    and noted (`on_edge="drop"`).
    """
    if on_edge not in ("raise", "drop"):
        raise ValueError(f"on_edge must be 'raise' or 'drop', got {on_edge!r}")
    if not isinstance(points, Points):
        points = load_points(points)
    points.require(["N", "C", "loss"], "IsoFLOP analysis")
    C, N, loss = points["C"], points["N"], points["loss"]
    labels = group_budgets(C, rel_tol)
    budgets, notes = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        budget = float(np.exp(np.mean(np.log(C[members]))))
        log_n = np.log(N[members])
        if len(np.unique(log_n)) < min_points:
            sizes = len(np.unique(log_n))
            notes.append(f"budget C={budget:.3g}: {sizes} sizes < {min_points}, skipped")
            continue
        c2, c1, c0 = np.polyfit(log_n, loss[members], 2)
        vertex = -c1 / (2.0 * c2) if c2 > 0 else np.nan
        argmin = log_n[np.argmin(loss[members])]
        interior = (
            c2 > 0 and log_n.min() < vertex < log_n.max() and log_n.min() < argmin < log_n.max()
        )
        if not interior:
            message = (
                f"IsoFLOP budget C={budget:.4g}: the loss minimum is at the edge of the sampled "
                f"sizes N in [{np.exp(log_n.min()):.3g}, {np.exp(log_n.max()):.3g}] "
                f"(lowest loss at N={np.exp(argmin):.3g}); train smaller/larger models for "
                "this budget so that it brackets its optimum"
            )
            if on_edge == "raise":
                raise ValueError(message)
            notes.append(message + " (dropped)")
            continue
        n_opt = float(np.exp(vertex))
        budgets.append(
            {
                "C": budget,
                "N_opt": n_opt,
                "D_opt": budget / (6.0 * n_opt),
                "loss_opt": float(c0 + c1 * vertex + c2 * vertex**2),
                "n_points": len(members),
                "parabola": [float(c2), float(c1), float(c0)],
            }
        )
    if len(budgets) < 2:
        raise ValueError(
            f"IsoFLOP needs at least 2 budgets with an interior minimum, found {len(budgets)}; "
            f"give points at several compute budgets (C = 6 N D) with >= {min_points} sizes each"
        )
    log_c = np.log([b["C"] for b in budgets])
    log_n_opt = np.log([b["N_opt"] for b in budgets])
    a, log_k = np.polyfit(log_c, log_n_opt, 1)
    return IsoFlopResult(budgets=budgets, a=float(a), log_k=float(log_k), notes=notes)


@dataclass
class ExtrapolationCheck:
    """Relative errors of a law fitted without the largest runs, on those runs.

    `held_out` has one row per held-out point; `held_out_runs` names the runs they belong to.
    """

    fit: FitResult
    held_out: list[dict]
    held_out_runs: list[str]
    mean_abs_rel_error: float
    max_abs_rel_error: float
    coverage: float | None = None

    def to_dict(self) -> dict:
        return {
            "held_out": self.held_out,
            "held_out_runs": self.held_out_runs,
            "mean_abs_rel_error": self.mean_abs_rel_error,
            "max_abs_rel_error": self.max_abs_rel_error,
            "coverage": self.coverage,
            "fit": self.fit.to_dict(),
        }


def extrapolation_check(
    points: Points | str | list, holdout: int = 1, law: str | Law = "chinchilla", **fit_kwargs
) -> ExtrapolationCheck:
    """Fit without the `holdout` largest runs (by compute), predict them, report relative errors.

    Runs (the `run` column) are held out whole. With `bootstrap=` in `fit_kwargs`, `coverage` is
    the share of held-out points inside their prediction interval.
    """
    if not isinstance(points, Points):
        points = load_points(points)
    points.require(["C"], "the extrapolation check (it holds out the largest-compute runs)")
    runs, run_index = np.unique(points.run, return_inverse=True)
    run_index = run_index.ravel()
    if not isinstance(holdout, int) or not 1 <= holdout < len(runs):
        raise ValueError(
            f"holdout must be an integer in [1, {len(runs) - 1}] (runs), got {holdout!r}"
        )
    run_compute = np.zeros(len(runs))
    np.maximum.at(run_compute, run_index, points["C"])
    held_runs = np.argsort(run_compute)[-holdout:]
    test = np.isin(run_index, held_runs)
    result = fit(points.subset(~test), law, **fit_kwargs)
    law_obj = result.get_law()
    held = points.subset(test)
    inputs = {name: held[name] for name in law_obj.inputs}
    predicted = np.atleast_1d(result.predict(**inputs))
    actual = held[law_obj.target]
    rel = (predicted - actual) / actual
    rows = [
        {**{k: float(v[i]) for k, v in inputs.items()}, "actual": float(actual[i]),
         "predicted": float(predicted[i]), "rel_error": float(rel[i])}
        for i in range(len(actual))
    ]  # fmt: skip
    coverage = None
    if result.bootstrap_samples is not None:
        lo, hi = result.interval(**inputs)
        inside = (np.atleast_1d(lo) <= actual) & (actual <= np.atleast_1d(hi))
        for row, lo_i, hi_i in zip(rows, np.atleast_1d(lo), np.atleast_1d(hi)):
            row["interval"] = [float(lo_i), float(hi_i)]
        coverage = float(np.mean(inside))
    return ExtrapolationCheck(
        fit=result,
        held_out=rows,
        held_out_runs=[str(r) for r in runs[np.sort(held_runs)]],
        mean_abs_rel_error=float(np.mean(np.abs(rel))),
        max_abs_rel_error=float(np.max(np.abs(rel))),
        coverage=coverage,
    )
