"""Synthetic data drawn from a law with known parameters: for tests, benchmarks and demos.

Noise is multiplicative, `y = law(x) * exp(noise * z)` with z standard normal, i.e. additive
Gaussian noise of standard deviation `noise` on the log scale the fitter works in.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from everyscale.laws.forms import Law, get_law
from everyscale.laws.io import Points, load_points

# Besiroglu et al. 2024, Table 1 (their replication of Hoffmann et al. 2022 Approach 3).
BESIROGLU = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
# Hoffmann et al. 2022 eq. 10, with the digits Besiroglu et al. 2024 report for it (Table 1).
HOFFMANN = {"E": 1.6934, "A": 406.4, "B": 410.7, "alpha": 0.3392, "beta": 0.2849}


def chinchilla_params(E: float, A: float, B: float, alpha: float, beta: float) -> dict[str, float]:
    """Published (E, A, B, alpha, beta) as the fitter's (a, b, e, alpha, beta)."""
    return {
        "a": float(np.log(A)),
        "b": float(np.log(B)),
        "e": float(np.log(E)),
        "alpha": alpha,
        "beta": beta,
    }


def sample_law(
    law: str | Law,
    params: Mapping[str, float],
    inputs: Mapping[str, np.ndarray],
    *,
    noise: float = 0.01,
    seed: int = 0,
    run: np.ndarray | None = None,
) -> Points:
    """Points with the given inputs and the law's target drawn with log-normal noise."""
    law = get_law(law)
    theta = np.array([[params[p] for p in law.param_names]], dtype=float)
    X = {k: np.asarray(v, dtype=float) for k, v in inputs.items()}
    clean = law.predict(theta, X)[0]
    rng = np.random.default_rng(seed)
    y = clean * np.exp(noise * rng.standard_normal(len(clean)))
    records = [
        {**{k: float(v[i]) for k, v in X.items()}, law.target: float(y[i])} for i in range(len(y))
    ]
    if run is not None:
        for r, run_id in zip(records, run):
            r["run"] = str(run_id)
    return load_points(records)


def chinchilla_points(
    n: int = 240,
    *,
    params: Mapping[str, float] | None = None,
    noise: float = 0.01,
    seed: int = 0,
    n_range: tuple[float, float] = (1e7, 1e10),
    tokens_per_param: tuple[float, float] = (2.0, 200.0),
) -> Points:
    """A Chinchilla-shaped data set: log-uniform N and tokens per parameter, noisy loss."""
    rng = np.random.default_rng(seed + 1_000_003)
    N = np.exp(rng.uniform(*np.log(n_range), n))
    D = N * np.exp(rng.uniform(*np.log(tokens_per_param), n))
    params = chinchilla_params(**BESIROGLU) if params is None else params
    return sample_law("chinchilla", params, {"N": N, "D": D}, noise=noise, seed=seed)
