"""Prediction intervals that include a new run's own noise, not only the fit's uncertainty.

The bootstrap (resampling whole runs) says how well the ladder's points pin the law down; a
held-out run also carries its own run-to-run noise (seed, data order) and whatever the law's
form misses. Both show in the fit's residuals at the ladder's own points, so the noise model
is a log-normal with the residuals' spread,

    sigma^2 = sum_i r_i^2 / (n - p),    r_i = log L_i - log L_hat(N_i, D_i),

(``n`` points, ``p`` fitted parameters: the usual unbiased variance of regression
residuals), and the interval is the percentile interval of ``L_hat_b(N, D) exp(sigma z)``
over the bootstrap fits ``b`` and standard normal draws ``z``: the bootstrap's spread and the
noise combined. With several seeds per point the seeds' spread can stand in for ``sigma``
(``benchmarks/ladder_accuracy.py`` compares both on held-out runs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["noisy_interval", "residual_sigma"]

NOISE_DRAWS = 16  # normal draws per bootstrap fit


def residual_sigma(fit, points: Mapping[str, np.ndarray]) -> float:
    """The spread of the fit's log residuals at ``points`` (``N``, ``D``, ``loss``)."""
    n, d = np.asarray(points["N"], float), np.asarray(points["D"], float)
    loss = np.asarray(points["loss"], float)
    residuals = np.log(loss) - np.log(np.asarray(fit.predict(N=n, D=d), float))
    dof = len(loss) - len(fit.params)
    if dof < 1:
        raise ValueError(
            f"residual_sigma: {len(loss)} points cannot estimate the noise of a law with "
            f"{len(fit.params)} parameters; add ladder runs (--widths/--tokens)"
        )
    return float(math.sqrt(float(np.sum(residuals**2)) / dof))


def noisy_interval(
    fit, sigma: float, level: float = 0.95, seed: int = 0, **inputs: float
) -> tuple[float, float]:
    """The ``level`` interval of a new run's loss at ``inputs`` (e.g. ``N=..., D=...``).

    Uses the fit's bootstrap predictions when it has them (else its point prediction alone),
    each times ``exp(sigma z)``.
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    try:
        samples = np.asarray(fit.prediction_samples(**inputs), float).ravel()
    except ValueError:  # no bootstrap
        samples = np.asarray([float(fit.predict(**inputs))])
    z = np.random.default_rng(seed).standard_normal((NOISE_DRAWS, samples.size))
    noisy = samples[None, :] * np.exp(sigma * z)
    lo, hi = np.quantile(noisy, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
