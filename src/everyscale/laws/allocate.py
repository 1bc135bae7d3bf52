"""Compute-optimal allocation of a FLOP budget between parameters and tokens.

For L(N, D) = E + A / N^alpha + B / D^beta under C = 6 N D, minimizing L gives
(Hoffmann et al. 2022, eq. 4 and Appendix D.2):

    N*(C) = G (C/6)^a,   D*(C) = G^-1 (C/6)^b,
    a = beta / (alpha + beta),   b = alpha / (alpha + beta),
    G = (alpha A / (beta B))^(1 / (alpha + beta))

so the tokens per parameter D*/N* = G^-2 (C/6)^(b - a). With the bootstrap samples of a fit,
every quantity gets a percentile interval (on N*(C) and D/N, not only on A and B).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from everyscale.laws.fit import FitResult, percentile_interval

ALLOCATABLE_LAWS = ("chinchilla", "overtrain", "data_constrained")


def chinchilla_coefficients(law: str, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """(A, B, E, alpha, beta) of the Chinchilla form equivalent to a fitted law.

    The over-training law of Gadre et al. 2024 expands to
    E + a 6^eta D^(2 eta) + b 6^eta N^(2 eta), i.e. A = b 6^eta, B = a 6^eta,
    alpha = beta = -2 eta. The data-constrained law reduces to Chinchilla when every token is
    unique (Muennighoff et al. 2023), which is the regime an allocation plans for.
    """
    if law in ("chinchilla", "data_constrained"):
        return (
            np.exp(params["a"]),
            np.exp(params["b"]),
            np.exp(params["e"]),
            np.asarray(params["alpha"]),
            np.asarray(params["beta"]),
        )
    if law == "overtrain":
        eta = np.asarray(params["eta"])
        six_eta = 6.0**eta
        return (
            np.exp(params["log_b"]) * six_eta,
            np.exp(params["log_a"]) * six_eta,
            np.exp(params["e"]),
            -2.0 * eta,
            -2.0 * eta,
        )
    raise ValueError(
        f"allocate needs a law of N and D ({', '.join(ALLOCATABLE_LAWS)}); this fit uses {law!r}"
    )


def optimal_allocation(A, B, E, alpha, beta, compute) -> dict[str, np.ndarray]:
    """N*, D*, D*/N* and the loss there, for broadcastable coefficient and compute arrays."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
        N = G * (compute / 6.0) ** (beta / (alpha + beta))
        D = compute / (6.0 * N)
        loss = E + A / N**alpha + B / D**beta
    return {"N": N, "D": D, "tokens_per_param": D / N, "loss": loss}


@dataclass
class Allocation:
    """Compute-optimal N, D, tokens per parameter and loss for each compute budget.

    `intervals[name]` is `(lo, hi)` (arrays like `compute`) when the fit has a bootstrap.
    """

    compute: np.ndarray
    N: np.ndarray
    D: np.ndarray
    tokens_per_param: np.ndarray
    loss: np.ndarray
    intervals: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    level: float = 0.95

    def to_dict(self) -> dict:
        def plain(x):
            x = np.asarray(x, dtype=float)
            return float(x) if x.ndim == 0 else x.tolist()

        return {
            "compute": plain(self.compute),
            "N": plain(self.N),
            "D": plain(self.D),
            "tokens_per_param": plain(self.tokens_per_param),
            "loss": plain(self.loss),
            "level": self.level,
            "intervals": {k: [plain(lo), plain(hi)] for k, (lo, hi) in self.intervals.items()},
        }


def allocate(fit: FitResult, compute, *, level: float | None = None) -> Allocation:
    """Compute-optimal allocation of `compute` FLOPs (scalar or array) under a fitted law."""
    C = np.asarray(compute, dtype=float)
    if C.size == 0 or not np.all(np.isfinite(C)) or np.any(C <= 0):
        raise ValueError(f"compute must be positive finite FLOPs (e.g. 1e21), got {compute!r}")
    A, B, E, alpha, beta = chinchilla_coefficients(fit.law, fit.params)
    point = optimal_allocation(A, B, E, alpha, beta, C)
    level = fit.ci_level if level is None else level
    intervals = {}
    if fit.bootstrap_samples is not None:
        names = fit.get_law().param_names
        samples = {n: fit.bootstrap_samples[:, j] for j, n in enumerate(names)}
        coeffs = chinchilla_coefficients(fit.law, samples)
        coeffs = [c.reshape((-1,) + (1,) * C.ndim) for c in coeffs]
        per_sample = optimal_allocation(*coeffs, C[None])
        for name, values in per_sample.items():
            intervals[name] = percentile_interval(values, level)
    return Allocation(
        compute=C,
        N=point["N"],
        D=point["D"],
        tokens_per_param=point["tokens_per_param"],
        loss=point["loss"],
        intervals=intervals,
        level=level,
    )
