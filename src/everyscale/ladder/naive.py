"""The two naive predictions every ladder reports beside the scaling law's.

At small scales the final losses of a ladder sit close together, so a naive guess is often
within a few percent of the truth; a fitted law earns its place only by beating these:

- ``best_in_ladder``: the lowest final validation loss among the ladder's runs (the bigger
  model "will be about as good as the best we have");
- ``loglog_compute``: a straight line through ``log L`` against ``log C`` (least squares over
  the ladder's runs, ``C = 6 N D``), evaluated at the target's compute: the pure power law
  ``L = k C^-a`` of Kaplan et al. 2020 [K] without an irreducible term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def relative_error(prediction: float, actual: float) -> float:
    """``|prediction - actual| / actual``."""
    if not (math.isfinite(prediction) and math.isfinite(actual)) or actual <= 0:
        raise ValueError(
            f"relative_error: needs a finite prediction and a positive finite actual loss, "
            f"got prediction={prediction}, actual={actual}"
        )
    return abs(prediction - actual) / actual


def best_in_ladder(losses: Sequence[float]) -> float:
    """The lowest finite loss of the ladder."""
    values = np.asarray(losses, dtype=float)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"best_in_ladder: needs finite losses, got {list(values)}")
    return float(values.min())


def loglog_fit(compute: Sequence[float], losses: Sequence[float]) -> tuple[float, float]:
    """Least-squares line ``log L = intercept + slope log C``; returns ``(slope, intercept)``."""
    c = np.asarray(compute, dtype=float)
    y = np.asarray(losses, dtype=float)
    if c.shape != y.shape or c.size < 2:
        raise ValueError("loglog_fit: needs at least 2 (compute, loss) pairs of equal length")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(y)) and np.all(c > 0) and np.all(y > 0)):
        raise ValueError("loglog_fit: compute and losses must be positive and finite")
    if np.ptp(np.log(c)) == 0:
        raise ValueError("loglog_fit: all runs have the same compute; a line needs two or more")
    slope, intercept = np.polyfit(np.log(c), np.log(y), 1)
    return float(slope), float(intercept)


def loglog_compute(compute: Sequence[float], losses: Sequence[float], target: float) -> float:
    """Predict the loss at compute ``target`` by the log-log line through the ladder."""
    slope, intercept = loglog_fit(compute, losses)
    return float(math.exp(intercept + slope * math.log(target)))


def naive_predictions(
    compute: Sequence[float], losses: Sequence[float], target_compute: float
) -> dict[str, dict[str, float]]:
    """Both naive predictions, keyed by name: ``{"prediction": ...}`` each."""
    return {
        "best_in_ladder": {"prediction": best_in_ladder(losses)},
        "loglog_compute": {"prediction": loglog_compute(compute, losses, target_compute)},
    }
