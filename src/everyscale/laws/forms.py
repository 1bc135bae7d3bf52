"""The scaling-law forms: each one a formula, its source, its parameters and a start grid.

Every law is fitted in the same way (see `everyscale.laws.fit`): the fitter needs the
*logarithm* of the law's prediction for a batch of parameter vectors, and ideally its Jacobian.
A `Law` therefore carries one function

    log_model(theta, X, jacobian) -> (log_prediction, J)

where `theta` has shape `(S, P)` (S parameter vectors, P parameters, in `param_names` order),
`X` maps each input column name to a 1-D array of length n, `log_prediction` has shape
`(S, n)` and `J` (shape `(S, n, P)`) is d log_prediction / d theta, or None when the law has no
analytic Jacobian (the fitter then uses central differences).

Conventions follow Besiroglu et al. 2024 [B]: lower-case `a, b, e` are the logarithms of the
upper-case coefficients `A, B, E`, which keeps every term positive and lets the log of a sum of
terms be computed stably as a log-sum-exp (LSE).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ObjectiveName = Literal["huber", "lsq"]

# The objective each law is fitted with unless the caller says otherwise, with its source.
HUBER_LOG = (
    "Hoffmann et al. 2022 (App. D.2) and Besiroglu et al. 2024 (§2) fit by Huber, delta 1e-3, "
    "on log residuals"
)
GADRE_LSQ = "Gadre et al. 2024 fit by least squares (scipy curve_fit in their released code)"

LogModel = Callable[
    [np.ndarray, Mapping[str, np.ndarray], bool], tuple[np.ndarray, np.ndarray | None]
]
Bounds = Mapping[str, tuple[float | None, float | None]]


@dataclass(frozen=True)
class Law:
    """A scaling-law form: what it predicts from which inputs, and how to start fitting it.

    `derived(params)` maps a dict of parameter arrays (any shape) to a dict of derived
    quantities of the same shape (e.g. `A = exp(a)` or the allocation exponent
    `beta / (alpha + beta)`); the bootstrap reports percentile intervals on them too.
    `options` holds the constants the law was built with (e.g. the chance error of the sigmoid),
    so that a saved fit can rebuild it with `get_law(name, **options)`.
    `default_loss` is the objective the law is fitted with unless the caller picks another
    (`default_loss_source` says who fits it that way). `log_params` maps a fitted parameter that
    is the logarithm of a published constant to that constant's name (`a` -> `A`), so that
    constants can be given in the units papers print (`natural_to_params`). `domain` says
    where the law's prediction is defined, for the error raised outside it.
    """

    name: str
    formula: str
    source: str
    param_names: tuple[str, ...]
    inputs: tuple[str, ...]
    start_grid: Mapping[str, Sequence[float]]
    log_model: LogModel
    bounds: Bounds = field(default_factory=dict)
    target: str = "loss"
    derived: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    options: Mapping[str, float] = field(default_factory=dict)
    builtin: bool = True
    default_loss: ObjectiveName = "huber"
    default_loss_source: str = HUBER_LOG
    log_params: Mapping[str, str] = field(default_factory=dict)
    domain: str = "the prediction is positive and finite"

    def __post_init__(self) -> None:
        missing = [p for p in self.param_names if p not in self.start_grid]
        if missing:
            raise ValueError(
                f"law {self.name!r}: start_grid has no values for parameters {missing}; "
                f"give a list of starting values for every name in {list(self.param_names)}"
            )
        unknown = [p for p in self.bounds if p not in self.param_names]
        if unknown:
            raise ValueError(
                f"law {self.name!r}: bounds name unknown parameters {unknown}; "
                f"valid names are {list(self.param_names)}"
            )

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def grid(self, start_grid: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
        """All combinations of the start grid, shape `(n_starts, P)` in `param_names` order."""
        grid = dict(self.start_grid)
        if start_grid is not None:
            unknown = [p for p in start_grid if p not in self.param_names]
            if unknown:
                raise ValueError(
                    f"start_grid names unknown parameters {unknown} for law {self.name!r}; "
                    f"valid names are {list(self.param_names)}"
                )
            grid.update(start_grid)
        axes = []
        for name in self.param_names:
            values = np.atleast_1d(np.asarray(grid[name], dtype=float))
            if values.size == 0 or not np.all(np.isfinite(values)):
                raise ValueError(
                    f"start_grid[{name!r}] must be a non-empty list of finite numbers, "
                    f"got {grid[name]!r}"
                )
            axes.append(values)
        return np.array(list(itertools.product(*axes)), dtype=float)

    def bound_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds as arrays (-inf/+inf where unbounded)."""
        lower = np.full(self.n_params, -np.inf)
        upper = np.full(self.n_params, np.inf)
        for i, name in enumerate(self.param_names):
            lo, hi = self.bounds.get(name, (None, None))
            lower[i] = -np.inf if lo is None else lo
            upper[i] = np.inf if hi is None else hi
        return lower, upper

    @property
    def natural_names(self) -> tuple[str, ...]:
        """The parameters in the units papers print (`A` for `a = log A`, ...)."""
        return tuple(self.log_params.get(p, p) for p in self.param_names)

    def natural_to_params(self, values: Mapping[str, float], what: str = "params") -> dict:
        """Constants named either way (`A=406.4` or `a=6.0`) as the fitter's parameters."""
        by_natural = {self.log_params.get(p, p): p for p in self.param_names}
        out: dict[str, float] = {}
        for name, value in values.items():
            value = float(value)
            if name in self.param_names:
                key, internal = name, value
            elif name in by_natural:
                key = by_natural[name]
                if not value > 0:
                    raise ValueError(
                        f"{what}: {name}={value:g} must be positive (the law uses log {name})"
                    )
                internal = float(np.log(value))
            else:
                raise ValueError(
                    f"{what}: law {self.name!r} has no parameter {name!r}; its parameters are "
                    f"{', '.join(self.natural_names)}"
                    + (
                        f" (or, as fitted, {', '.join(self.param_names)})"
                        if self.log_params
                        else ""
                    )
                )
            if key in out:
                raise ValueError(f"{what}: parameter {name!r} is given twice")
            if not np.isfinite(internal):
                raise ValueError(f"{what}: {name}={value!r} must be a finite number")
            out[key] = internal
        return out

    def params_to_natural(self, params: Mapping[str, float]) -> dict[str, float]:
        """The fitted parameters in published units (`a` -> `A = exp(a)`)."""
        return {
            self.log_params.get(p, p): float(np.exp(v)) if p in self.log_params else float(v)
            for p, v in params.items()
        }

    def derived_values(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {} if self.derived is None else self.derived(params)

    def predict(self, theta: np.ndarray, X: Mapping[str, np.ndarray]) -> np.ndarray:
        """The law's prediction (not its log) for a batch of parameter vectors, shape (S, n)."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        log_pred, _ = self.log_model(theta, X, False)
        return np.exp(log_pred)


def _split(theta: np.ndarray) -> list[np.ndarray]:
    """Columns of a (S, P) parameter batch as (S, 1) arrays that broadcast against (n,) data."""
    return [theta[:, i : i + 1] for i in range(theta.shape[1])]


def _lse_with_softmax(terms: list[np.ndarray], jacobian: bool):
    """log(sum_k exp(t_k)) over terms that broadcast to (S, n), and the softmax weights.

    The fitter calls this on (starts x points) arrays hundreds of times, so the common case is
    computed directly: each term is exponentiated at its own shape (a per-row constant such as
    `e` costs S exponentials, not S n). Rows where that under- or overflows (parameters far from
    the data) are recomputed with the max-shifted, always-stable form.
    """
    shape = np.broadcast_shapes(*(np.shape(t) for t in terms))
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        exps = [np.exp(t) for t in terms]
        total = exps[0]
        for x in exps[1:]:
            total = total + x
        lse = np.log(total)
    unsafe = ~(np.isfinite(lse) & (total > 1e-290))
    if unsafe.any():
        rows = np.flatnonzero(unsafe.reshape(shape[0], -1).any(axis=1))
        full = [np.broadcast_to(t, shape)[rows] for t in terms]
        peak = np.max(full, axis=0)
        shifted = [np.exp(t - peak) for t in full]
        row_total = np.sum(shifted, axis=0)
        lse = np.array(np.broadcast_to(lse, shape))
        lse[rows] = peak + np.log(row_total)
    if not jacobian:
        return lse, None
    with np.errstate(invalid="ignore"):
        weights = [np.broadcast_to(x / total, shape) for x in exps]
    if unsafe.any():
        weights = [np.array(w) for w in weights]
        for w, x in zip(weights, shifted):
            w[rows] = x / row_total
    return lse, weights


# ---------------------------------------------------------------------------------------------
# Chinchilla [H, B]
# ---------------------------------------------------------------------------------------------


def _chinchilla_log_model(theta, X, jacobian):
    a, b, e, alpha, beta = _split(theta)
    log_n, log_d = np.log(X["N"]), np.log(X["D"])
    lse, p = _lse_with_softmax([a - alpha * log_n, b - beta * log_d, e], jacobian)
    if p is None:
        return lse, None
    pa, pb, pe = p
    J = np.stack([pa, pb, pe, -pa * log_n, -pb * log_d], axis=-1)
    return lse, J


def _chinchilla_derived(params):
    alpha, beta = np.asarray(params["alpha"], dtype=float), np.asarray(params["beta"], dtype=float)
    A, B = np.exp(params["a"]), np.exp(params["b"])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
        return {
            "A": A,
            "B": B,
            "E": np.exp(params["e"]),
            "a_exponent": beta / (alpha + beta),
            "b_exponent": alpha / (alpha + beta),
            "G": G,
        }


CHINCHILLA_GRID = {
    # Hoffmann et al. 2022 Appendix D.2, as replicated by Besiroglu et al. 2024 §2.
    "a": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
    "b": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
    "e": [-1.0, -0.5, 0.0, 0.5, 1.0],
    "alpha": [0.0, 0.5, 1.0, 1.5, 2.0],
    "beta": [0.0, 0.5, 1.0, 1.5, 2.0],
}


def chinchilla() -> Law:
    """Chinchilla's parametric loss (Hoffmann et al. 2022, eq. 10; Besiroglu et al. 2024, eq. 1).

        L(N, D) = E + A / N^alpha + B / D^beta
        log L   = LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e

    N = parameters, D = training tokens. Derived: the compute-optimal allocation for C = 6 N D,
    N*(C) = G (C/6)^(beta/(alpha+beta)), D*(C) = G^-1 (C/6)^(alpha/(alpha+beta)),
    G = (alpha A / (beta B))^(1/(alpha+beta)) (Hoffmann et al. 2022, eq. 4 / Appendix D.2).

    The exponents are bounded below by 0 (a loss that grows with N or D is not a scaling law);
    the published fits run L-BFGS-B unbounded, which reaches the same optimum whenever it is
    interior, and a fit that ends on a bound is flagged in its diagnostics.
    """
    return Law(
        name="chinchilla",
        formula="L(N, D) = E + A / N^alpha + B / D^beta",
        source="Hoffmann et al. 2022 (eq. 10, App. D.2); Besiroglu et al. 2024",
        param_names=("a", "b", "e", "alpha", "beta"),
        inputs=("N", "D"),
        start_grid=CHINCHILLA_GRID,
        bounds={"alpha": (0.0, None), "beta": (0.0, None)},
        log_model=_chinchilla_log_model,
        derived=_chinchilla_derived,
        log_params={"a": "A", "b": "B", "e": "E"},
    )


# ---------------------------------------------------------------------------------------------
# Power law with an asymptote in compute
# ---------------------------------------------------------------------------------------------


def _compute_log_model(theta, X, jacobian):
    a, e, alpha = _split(theta)
    log_c = np.log(X["C"])
    lse, p = _lse_with_softmax([a - alpha * log_c, e], jacobian)
    if p is None:
        return lse, None
    J = np.stack([p[0], p[1], -p[0] * log_c], axis=-1)
    return lse, J


def compute_law() -> Law:
    """Loss against compute with an irreducible term: L(C) = E + A C^-alpha.

        log L = LSE(a - alpha log C, e),   A = e^a, E = e^e

    The compute-frontier form of Hoffmann et al. 2022 (Fig. 1's envelope) and Kaplan et al.
    2020 (§3.2, with E = 0); C in FLOPs (6 N D when the file gives N and D).
    """
    return Law(
        name="compute",
        formula="L(C) = E + A * C^-alpha",
        source="Kaplan et al. 2020 §3.2; Hoffmann et al. 2022 §3 (compute frontier)",
        param_names=("a", "e", "alpha"),
        inputs=("C",),
        start_grid={
            "a": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
            "e": [-1.0, -0.5, 0.0, 0.5, 1.0],
            "alpha": [0.0, 0.1, 0.2, 0.5, 1.0],
        },
        bounds={"alpha": (0.0, None)},
        log_model=_compute_log_model,
        derived=lambda p: {"A": np.exp(p["a"]), "E": np.exp(p["e"])},
        log_params={"a": "A", "e": "E"},
    )


# ---------------------------------------------------------------------------------------------
# Kaplan power laws [K]
# ---------------------------------------------------------------------------------------------


def _kaplan(variable: str, table_values: str) -> Law:
    exponent, log_scale = f"alpha_{variable}", f"log_{variable}_c"

    def log_model(theta, X, jacobian):
        alpha, log_xc = _split(theta)
        log_x = np.log(X[variable])
        log_pred = alpha * (log_xc - log_x)
        if not jacobian:
            return log_pred, None
        J = np.stack(np.broadcast_arrays(log_xc - log_x, alpha + 0.0 * log_x), axis=-1)
        return log_pred, J

    return Law(
        name=f"kaplan_{variable.lower()}",
        formula=f"L({variable}) = ({variable}_c / {variable})^alpha_{variable}",
        source=f"Kaplan et al. 2020, eq. 1.{'123'['NDC'.index(variable)]} ({table_values})",
        param_names=(exponent, log_scale),
        inputs=(variable,),
        start_grid={
            exponent: [0.02, 0.05, 0.1, 0.2, 0.5],
            log_scale: [10.0, 20.0, 30.0, 40.0, 60.0],
        },
        bounds={exponent: (0.0, None)},
        log_model=log_model,
        derived=lambda p: {f"{variable}_c": np.exp(p[log_scale])},
        log_params={log_scale: f"{variable}_c"},
        default_loss_source=HUBER_LOG + " (Kaplan et al. 2020 do not state their objective)",
    )


def kaplan_n() -> Law:
    """Kaplan et al. 2020 eq. 1.1: L(N) = (N_c / N)^alpha_N, N = non-embedding parameters.

    log L = alpha_N (log N_c - log N). Published: alpha_N = 0.076, N_c = 8.8e13.
    Fit to models trained to convergence (data not the bottleneck).
    """
    return _kaplan("N", "alpha_N = 0.076, N_c = 8.8e13 non-embedding params")


def kaplan_d() -> Law:
    """Kaplan et al. 2020 eq. 1.2: L(D) = (D_c / D)^alpha_D (large models, early stopping).

    log L = alpha_D (log D_c - log D). Published: alpha_D = 0.095, D_c = 5.4e13 tokens.
    """
    return _kaplan("D", "alpha_D = 0.095, D_c = 5.4e13 tokens")


def kaplan_c() -> Law:
    """Kaplan et al. 2020 eq. 1.3: L(C) = (C_c / C)^alpha_C on the compute-efficient frontier.

    log L = alpha_C (log C_c - log C). Published: alpha_C^min = 0.050, C_c = 3.1e8 PF-days
    (2.7e28 FLOPs; Kaplan count C = 6 N D with non-embedding N).
    """
    return _kaplan("C", "alpha_C = 0.050, C_c = 3.1e8 PF-days")


def _kaplan_nd_log_model(theta, X, jacobian):
    alpha_n, alpha_d, log_n_c, log_d_c = _split(theta)
    log_n, log_d = np.log(X["N"]), np.log(X["D"])
    ratio = alpha_n / alpha_d
    u_n, u_d = ratio * (log_n_c - log_n), log_d_c - log_d
    lse, p = _lse_with_softmax([u_n, u_d], jacobian)
    log_pred = alpha_d * lse
    if p is None:
        return log_pred, None
    p_n, p_d = p
    J = np.stack(
        np.broadcast_arrays(p_n * (log_n_c - log_n), lse - p_n * u_n, p_n * alpha_n, alpha_d * p_d),
        axis=-1,
    )
    return log_pred, J


def kaplan_nd() -> Law:
    """Kaplan et al. 2020 eq. 1.5 (and 4.1): loss in parameters and tokens, no floor:

        L(N, D) = [ (N_c / N)^(alpha_N / alpha_D) + D_c / D ]^alpha_D
        log L   = alpha_D LSE((alpha_N / alpha_D)(log N_c - log N), log D_c - log D)

    N = non-embedding parameters, D = tokens. Published (their Table 2): alpha_N = 0.076,
    alpha_D = 0.103, N_c = 6.4e13, D_c = 1.8e13. Without an irreducible term it is a power law
    in each variable when the other is large, the regime of small models far from the
    entropy of the text.
    """
    return Law(
        name="kaplan_nd",
        formula="L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D",
        source="Kaplan et al. 2020, eq. 1.5 (alpha_N = 0.076, alpha_D = 0.103, "
        "N_c = 6.4e13, D_c = 1.8e13)",
        param_names=("alpha_n", "alpha_d", "log_n_c", "log_d_c"),
        inputs=("N", "D"),
        start_grid={
            "alpha_n": [0.05, 0.1, 0.2, 0.4],
            "alpha_d": [0.05, 0.1, 0.2, 0.4],
            "log_n_c": [5.0, 10.0, 20.0, 30.0],
            "log_d_c": [5.0, 10.0, 20.0, 30.0],
        },
        bounds={"alpha_n": (1e-6, None), "alpha_d": (1e-6, None)},
        log_model=_kaplan_nd_log_model,
        derived=lambda p: {"N_c": np.exp(p["log_n_c"]), "D_c": np.exp(p["log_d_c"])},
        log_params={"log_n_c": "N_c", "log_d_c": "D_c"},
        default_loss_source=HUBER_LOG + " (Kaplan et al. 2020 do not state their objective)",
    )


# ---------------------------------------------------------------------------------------------
# Over-training [Ga]
# ---------------------------------------------------------------------------------------------


def _overtrain_log_model(theta, X, jacobian):
    e, log_a, log_b, eta = _split(theta)
    log_m = np.log(X["M"])
    log_c = np.log(6.0) + 2.0 * np.log(X["N"]) + log_m  # C = 6 N D = 6 N^2 M
    lse, p = _lse_with_softmax(
        [log_a + eta * (log_c + log_m), log_b + eta * (log_c - log_m), e], jacobian
    )
    if p is None:
        return lse, None
    p1, p2, p3 = p
    J = np.stack([p3, p1, p2, p1 * (log_c + log_m) + p2 * (log_c - log_m)], axis=-1)
    return lse, J


def overtrain() -> Law:
    """Over-training law of Gadre et al. 2024 (eq. 4), in terms of N and M = D / N:

        L(C, M) = E + (a M^eta + b M^-eta) C^eta,   C = 6 N D = 6 N^2 M,   eta < 0

    log L = LSE(e, log_a + eta (log C + log M), log_b + eta (log C - log M)). It is the
    Chinchilla law with equal exponents alpha = beta = -2 eta rewritten in (C, M): for a fixed
    token multiplier M, loss follows a power law in compute with the same exponent eta.
    """
    return Law(
        name="overtrain",
        formula="L(N, M) = E + (a M^eta + b M^-eta) C^eta,  C = 6 N^2 M",
        source="Gadre et al. 2024, eq. 4",
        param_names=("e", "log_a", "log_b", "eta"),
        inputs=("N", "M"),
        start_grid={
            "e": [-1.0, -0.5, 0.0, 0.5, 1.0],
            "log_a": [0.0, 5.0, 10.0, 15.0, 20.0],
            "log_b": [0.0, 5.0, 10.0, 15.0, 20.0],
            "eta": [-0.5, -0.3, -0.2, -0.1, -0.05],
        },
        bounds={"eta": (None, 0.0)},
        log_model=_overtrain_log_model,
        derived=lambda p: {"E": np.exp(p["e"]), "a": np.exp(p["log_a"]), "b": np.exp(p["log_b"])},
        log_params={"e": "E", "log_a": "a", "log_b": "b"},
        default_loss="lsq",
        default_loss_source=GADRE_LSQ,
    )


# ---------------------------------------------------------------------------------------------
# Data-constrained [M]
# ---------------------------------------------------------------------------------------------


def _effective(unique: np.ndarray, total: np.ndarray, log_r_star: np.ndarray) -> np.ndarray:
    """Muennighoff et al. 2023 eq. 5-6: U + U R* (1 - exp(-R / R*)), R = total / U - 1."""
    repeats = np.maximum(total / unique - 1.0, 0.0)
    r_star = np.exp(log_r_star)
    return unique + unique * r_star * -np.expm1(-repeats / r_star)


def _data_constrained_log_model(theta, X, jacobian):
    a, b, e, alpha, beta, log_rd, log_rn = _split(theta)
    N, D, U = X["N"], X["D"], X["U"]
    unique_tokens = np.minimum(U, D)
    effective_d = _effective(unique_tokens, D, log_rd)
    # U_N: the compute-optimal parameter count for U_D tokens under the law's own allocation,
    # log N_opt(U) = (log(alpha A / (beta B)) + beta log U) / alpha   (from N*, D* of [H]).
    with np.errstate(divide="ignore", invalid="ignore"):
        log_n_opt = (np.log(alpha) + a - np.log(beta) - b + beta * np.log(unique_tokens)) / alpha
    unique_params = np.minimum(N, np.exp(np.nan_to_num(log_n_opt, nan=np.inf, posinf=np.inf)))
    effective_n = _effective(unique_params, N, log_rn)
    terms = [a - alpha * np.log(effective_n), b - beta * np.log(effective_d), e]
    lse, _ = _lse_with_softmax(terms, False)
    return lse, None  # no analytic Jacobian (U_N depends on the parameters through a min)


def data_constrained() -> Law:
    """Data-constrained law of Muennighoff et al. 2023 (eq. 5-7):

        L(N, D, U) = E + A / N'^alpha + B / D'^beta
        D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)),  R_D = D / U_D - 1   (repeated epochs)
        N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)),  R_N = N / U_N - 1   (excess parameters)

    U_D = unique tokens (column `U`), U_N = min(N, N_opt(U_D)) with N_opt the compute-optimal
    size for U_D tokens under the law's own Chinchilla allocation. Fitted parameters: the
    Chinchilla five plus log R_D*, log R_N* (published R_D* = 15.4, R_N* = 5.3).
    """
    return Law(
        name="data_constrained",
        formula="L = E + A/N'^alpha + B/D'^beta with effective N', D' (repetition decay)",
        source="Muennighoff et al. 2023, eq. 5-7",
        param_names=("a", "b", "e", "alpha", "beta", "log_rd_star", "log_rn_star"),
        inputs=("N", "D", "U"),
        start_grid={
            "a": [0.0, 5.0, 10.0],
            "b": [0.0, 5.0, 10.0],
            "e": [-0.5, 0.0, 0.5],
            "alpha": [0.25, 0.5, 1.0],
            "beta": [0.25, 0.5, 1.0],
            # The repetition constants make a surface with several minima (Muennighoff et al.
            # 2023 publish R_D* = 15.4, R_N* = 5.3): R* from e^0.5 = 1.6 to e^3.5 = 33, four
            # values each (16 pairs, up from 4). With the base held fixed (their two-stage
            # fit, `fixed=`), these 16 are the whole grid.
            "log_rd_star": [0.5, 1.5, 2.5, 3.5],
            "log_rn_star": [0.5, 1.5, 2.5, 3.5],
        },
        bounds={
            "alpha": (1e-6, None),
            "beta": (1e-6, None),
            "log_rd_star": (-5.0, 10.0),
            "log_rn_star": (-5.0, 10.0),
        },
        log_model=_data_constrained_log_model,
        derived=lambda p: {
            **_chinchilla_derived(p),
            "R_D_star": np.exp(p["log_rd_star"]),
            "R_N_star": np.exp(p["log_rn_star"]),
        },
        log_params={
            "a": "A",
            "b": "B",
            "e": "E",
            "log_rd_star": "R_D_star",
            "log_rn_star": "R_N_star",
        },
        default_loss_source=HUBER_LOG + ", as Muennighoff et al. 2023 do",
    )


# ---------------------------------------------------------------------------------------------
# Loss -> downstream error [Ga]
# ---------------------------------------------------------------------------------------------


def _downstream_exp_log_model(theta, X, jacobian):
    eps, k, gamma = _split(theta)
    loss = X["loss"]
    decay = np.exp(-gamma * loss)
    err = eps - k * decay
    with np.errstate(invalid="ignore", divide="ignore"):
        log_err = np.where(err > 0, np.log(np.where(err > 0, err, 1.0)), np.nan)
    if not jacobian:
        return log_err, None
    J = np.stack(np.broadcast_arrays(1.0 / err, -decay / err, k * loss * decay / err), axis=-1)
    return log_err, J


def downstream_exp() -> Law:
    """Loss to downstream error, Gadre et al. 2024 (eq. 5): Err(L) = eps - k exp(-gamma L).

    Input: the loss (column `loss`); target: the error (column `error`, in (0, 1]).
    eps is the error reached at infinite loss (chance level), k and gamma set the decay.
    """
    return Law(
        name="downstream_exp",
        formula="Err(L) = eps - k * exp(-gamma * L)",
        source="Gadre et al. 2024, eq. 5",
        param_names=("eps", "k", "gamma"),
        inputs=("loss",),
        target="error",
        start_grid={
            "eps": [0.5, 0.75, 0.9, 1.0],
            "k": [0.5, 1.0, 5.0, 20.0, 100.0],
            "gamma": [0.25, 0.5, 1.0, 2.0, 4.0],
        },
        bounds={"eps": (0.0, None), "k": (0.0, None), "gamma": (0.0, None)},
        log_model=_downstream_exp_log_model,
        default_loss="lsq",
        default_loss_source=GADRE_LSQ,
        domain="the error eps - k exp(-gamma L) is positive, i.e. L > ln(k / eps) / gamma",
    )


def downstream_sigmoid(chance_error: float = 0.75) -> Law:
    """Loss to downstream error as a sigmoid between a floor and chance:

        Err(L) = floor + (chance - floor) / (1 + exp(-k (L - L0)))

    At high loss the error is at chance (e.g. 0.75 for 4-way multiple choice), at low loss it
    approaches `floor`. The sigmoidal loss-to-accuracy link follows the Llama 3 report
    (Dubey et al. 2024, §3.2.1); Gadre et al. 2024 (§4) use the exponential form instead.
    `chance_error` is fixed, not fitted.
    """
    chance = _chance(chance_error)

    def log_model(theta, X, jacobian):
        floor, k, l0 = _split(theta)
        loss = X["loss"]
        s = 0.5 * (1.0 + np.tanh(0.5 * k * (loss - l0)))  # logistic sigmoid, overflow-free
        err = floor + (chance - floor) * s
        with np.errstate(invalid="ignore", divide="ignore"):
            log_err = np.where(err > 0, np.log(np.where(err > 0, err, 1.0)), np.nan)
        if not jacobian:
            return log_err, None
        ds = s * (1.0 - s)
        J = np.stack(
            np.broadcast_arrays(
                (1.0 - s) / err,
                (chance - floor) * ds * (loss - l0) / err,
                -(chance - floor) * ds * k / err,
            ),
            axis=-1,
        )
        return log_err, J

    return Law(
        name="downstream_sigmoid",
        formula=f"Err(L) = floor + ({chance} - floor) / (1 + exp(-k (L - L0)))",
        source="Dubey et al. 2024 (Llama 3) §3.2.1; Gadre et al. 2024 §4",
        param_names=("floor", "k", "L0"),
        inputs=("loss",),
        target="error",
        start_grid={
            "floor": [0.0, 0.1, 0.3],
            "k": [1.0, 3.0, 10.0],
            "L0": [1.0, 2.0, 3.0, 4.0, 5.0],
        },
        bounds={"floor": (0.0, chance), "k": (0.0, None)},
        log_model=log_model,
        options={"chance_error": chance},
        default_loss="lsq",
        default_loss_source="least squares, as Gadre et al. 2024 fit their error law (Dubey "
        "et al. 2024 do not state their objective)",
    )


def compute_sigmoid(chance_error: float = 0.75) -> Law:
    """Compute to downstream error as a sigmoid in log compute (Ruan et al. 2024, §3, eq. 2-3):

        Err(C) = floor + (chance - floor) / (1 + (C / C0)^k)

    i.e. accuracy is a sigmoid of `k (log C - log C0)` scaled between chance and `1 - floor`,
    the compute-based form Ruan et al. 2024 fit to public models of one family (their
    observational laws replace log C by a capability measure from benchmarks). Fitted: `floor`,
    `k`, `log_c0` (C0 = e^log_c0 is the compute where the error is halfway to the floor).
    `chance_error` is fixed, not fitted (0.75 for 4-way multiple choice).
    """
    chance = _chance(chance_error)

    def log_model(theta, X, jacobian):
        floor, k, log_c0 = _split(theta)
        x = k * (np.log(X["C"]) - log_c0)
        s = 0.5 * (1.0 - np.tanh(0.5 * x))  # 1 / (1 + e^x), overflow-free
        err = floor + (chance - floor) * s
        with np.errstate(invalid="ignore", divide="ignore"):
            log_err = np.where(err > 0, np.log(np.where(err > 0, err, 1.0)), np.nan)
        return log_err, None

    return Law(
        name="compute_sigmoid",
        formula=f"Err(C) = floor + ({chance} - floor) / (1 + (C / C0)^k)",
        source="Ruan et al. 2024 (observational scaling laws), §3 eq. 2-3",
        param_names=("floor", "k", "log_c0"),
        inputs=("C",),
        target="error",
        start_grid={
            "floor": [0.0, 0.1, 0.3],
            "k": [0.25, 0.5, 1.0, 2.0],
            "log_c0": [40.0, 45.0, 50.0, 55.0, 60.0],
        },
        bounds={"floor": (0.0, chance), "k": (0.0, None)},
        log_model=log_model,
        derived=lambda p: {"C0": np.exp(p["log_c0"])},
        options={"chance_error": chance},
        default_loss="lsq",
        default_loss_source="Ruan et al. 2024 fit by least squares (scipy curve_fit in their "
        "released code)",
        log_params={"log_c0": "C0"},
    )


def _chance(chance_error: float) -> float:
    chance = float(chance_error)
    if not (0.0 < chance <= 1.0):
        raise ValueError(
            f"chance_error must be in (0, 1] (the error of a random guess, e.g. 0.75 for "
            f"4-way multiple choice), got {chance_error!r}"
        )
    return chance


# ---------------------------------------------------------------------------------------------
# User-defined forms
# ---------------------------------------------------------------------------------------------


def custom_law(
    name: str,
    func: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], np.ndarray],
    param_names: Sequence[str],
    start_grid: Mapping[str, Sequence[float]],
    *,
    inputs: Sequence[str] = ("N", "D"),
    target: str = "loss",
    bounds: Bounds | None = None,
    formula: str = "user-defined",
    source: str = "user-defined",
    default_loss: ObjectiveName = "huber",
) -> Law:
    """A law from a Python function `func(params, X) -> prediction` (must be positive).

    `params` maps each name in `param_names` to an array of shape (S, 1) and `X` maps each input
    column to an array of shape (n,), so ordinary numpy broadcasting gives the (S, n) prediction:

        custom_law("mine", lambda p, X: p["E"] + p["A"] * X["N"] ** -p["alpha"],
                   ["E", "A", "alpha"], {"E": [1, 2], "A": [10, 100], "alpha": [0.2, 0.5]},
                   inputs=["N"])

    It is fitted exactly like the built-in laws (Huber on log residuals by default), with a
    central-difference Jacobian.
    """
    if not callable(func):
        raise ValueError(f"custom_law {name!r}: func must be callable, got {type(func).__name__}")
    names = tuple(param_names)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"custom_law {name!r}: param_names must be unique and non-empty: {names}")

    def log_model(theta, X, jacobian):
        params = dict(zip(names, _split(theta)))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            pred = np.asarray(func(params, X), dtype=float)
        pred = np.broadcast_to(pred, (theta.shape[0], len(next(iter(X.values())))))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pred > 0, np.log(np.where(pred > 0, pred, 1.0)), np.nan), None

    return Law(
        name=name,
        formula=formula,
        source=source,
        param_names=names,
        inputs=tuple(inputs),
        start_grid=dict(start_grid),
        log_model=log_model,
        bounds=dict(bounds or {}),
        target=target,
        builtin=False,
        default_loss=default_loss,
        default_loss_source="the objective custom_law(default_loss=) names",
    )


LAWS: dict[str, Callable[..., Law]] = {
    "chinchilla": chinchilla,
    "compute": compute_law,
    "kaplan_n": kaplan_n,
    "kaplan_d": kaplan_d,
    "kaplan_c": kaplan_c,
    "kaplan_nd": kaplan_nd,
    "overtrain": overtrain,
    "data_constrained": data_constrained,
    "downstream_exp": downstream_exp,
    "downstream_sigmoid": downstream_sigmoid,
    "compute_sigmoid": compute_sigmoid,
}


def get_law(law: str | Law, **options) -> Law:
    """A built-in law by name (with its options, e.g. `chance_error=0.25`), or a `Law` as is."""
    if isinstance(law, Law):
        return law
    if law not in LAWS:
        raise ValueError(
            f"unknown law {law!r}; choose one of {sorted(LAWS)} or pass a custom_law(...)"
        )
    try:
        return LAWS[law](**options)
    except TypeError as err:
        raise ValueError(f"law {law!r} does not take options {sorted(options)}: {err}") from None
