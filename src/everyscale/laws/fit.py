"""Robust multi-start fitting of scaling laws (the Chinchilla procedure), and the fit's result.

The procedure (Hoffmann et al. 2022, App. D.2; Besiroglu et al. 2024, §2):

    minimize  sum_i w_i Huber_delta( log Lhat(theta; x_i) - log L_i )      (delta = 1e-3)

with Huber(r) = r^2/2 for |r| <= delta, delta (|r| - delta/2) otherwise (Huber 1964), from every
point of a grid of starts, keeping the best. `loss="lsq"` minimizes
`sum_i w_i (Lhat_i - L_i)^2 / 2` on the loss itself instead.

How it is run, so that the full start grid is cheap (every start is really optimized):

1. All starts at once: a vectorized Levenberg-Marquardt / iteratively-reweighted least squares
   iteration over the whole (n_starts, P) batch. The Huber loss is majorized by the weighted
   quadratic with weights psi(r)/r (IRLS), the law is linearized with its analytic Jacobian,
   and each start takes damped Gauss-Newton steps that are accepted only when the true Huber
   objective decreases (a monotone descent method for every start). Levenberg 1944 and
   Marquardt 1963 for the damping; Holland & Welsch 1977 for IRLS in robust regression.
2. The few best distinct end points are polished with scipy's L-BFGS-B using the analytic
   gradient, on an objective rescaled to 1 at the start of the polish so that stopping
   tolerances do not depend on the scale of the data or of the objective.
3. Diagnostics: the objective, the projected gradient norm at the optimum, and how many of the
   starts ended (after step 1) within `rtol` of the best objective.

`optimizer="lbfgsb"` replaces step 1 by the published procedure itself: scipy's L-BFGS-B with
the analytic gradient from every start of the grid (slower; steps 2-3 are unchanged), so a fit
can be reproduced, or the default checked, exactly as Hoffmann et al. and Besiroglu et al. ran it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from everyscale.laws.constraints import Constraints, ReducedLaw, make_constraints, reduce_law
from everyscale.laws.forms import Law, ObjectiveName, get_law
from everyscale.laws.io import Points, atomic_write_text, check_for_law, load_points

# ---------------------------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------------------------


def single_threaded_blas(func: Callable) -> Callable:
    """Run `func` with the BLAS thread pool limited to one thread.

    The fitter makes many tiny BLAS calls (5 x 5 systems, L-BFGS-B's updates); on a busy machine
    a multi-threaded OpenBLAS makes each of them wait for its threads, which measured 18x slower
    for scipy's L-BFGS-B on a shared 2-core machine. Uses threadpoolctl (a scikit-learn
    dependency) when installed; otherwise runs `func` unchanged.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - optional
            limit = contextlib.nullcontext()
        else:
            limit = threadpool_limits(limits=1, user_api="blas")
        with limit:
            return func(*args, **kwargs)

    return wrapper


class Objective:
    """Huber-on-log-residuals (or least-squares) objective of a law on fixed data, batched.

    `evaluate(theta, weights, order)` takes `theta` of shape (S, P) and per-point weights of
    shape (n,) or (S, n) and returns the objective f (S,), and for `order >= 1` its gradient
    (S, P), and for `order == 2` the IRLS/Gauss-Newton curvature J^T diag(w psi(r)/r) J (S, P, P).
    Rows whose prediction is not positive and finite get f = inf.
    """

    def __init__(
        self, law: Law, X: Mapping[str, np.ndarray], y: np.ndarray, loss: str, delta: float
    ):
        if loss not in ("huber", "lsq"):
            raise ValueError(f"loss must be 'huber' or 'lsq', got {loss!r}")
        if not (math.isfinite(delta) and delta > 0):
            raise ValueError(f"huber_delta must be a positive finite number, got {delta!r}")
        self.law, self.X, self.loss, self.delta = law, dict(X), loss, float(delta)
        self.y = np.asarray(y, dtype=float)
        self.log_y = np.log(self.y)
        self.n = len(self.y)

    def _log_model(self, theta: np.ndarray, jacobian: bool):
        log_pred, J = self.law.log_model(theta, self.X, jacobian)
        if jacobian and J is None:
            J = self._numerical_jacobian(theta)
        return log_pred, J

    def _numerical_jacobian(self, theta: np.ndarray) -> np.ndarray:
        """Central differences, all 2P perturbations of all S rows in one call of the law."""
        S, P = theta.shape
        h = 1e-6 * np.maximum(1.0, np.abs(theta))  # (S, P)
        shifts = np.zeros((2, P, S, P))
        for j in range(P):
            shifts[0, j, :, j] = h[:, j]
            shifts[1, j, :, j] = -h[:, j]
        batch = (theta[None, None] + shifts).reshape(-1, P)
        log_pred, _ = self.law.log_model(batch, self.X, False)
        log_pred = log_pred.reshape(2, P, S, self.n)
        J = (log_pred[0] - log_pred[1]) / (2.0 * h.T[:, :, None])  # (P, S, n)
        return np.moveaxis(J, 0, -1)

    def evaluate(self, theta: np.ndarray, weights: np.ndarray | None = None, order: int = 0):
        # Overflow (a start far from the data) yields inf/NaN residuals: those rows get f = inf.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._evaluate(np.atleast_2d(theta), weights, order)

    def _evaluate(self, theta: np.ndarray, weights: np.ndarray | None, order: int):
        log_pred, J = self._log_model(theta, order >= 1)
        if self.loss == "huber":
            r = log_pred - self.log_y
            abs_r = np.abs(r)
            clipped = np.minimum(abs_r, self.delta)
            rho = clipped * (abs_r - 0.5 * clipped)  # r^2/2 inside delta, delta(|r| - delta/2) out
        else:
            pred = np.exp(log_pred)
            r = pred - self.y
            rho = 0.5 * r * r
            if J is not None:
                J = J * pred[..., None]
        f = np.sum(rho if weights is None else weights * rho, axis=-1)
        bad_rows = ~np.isfinite(f)  # a non-finite residual anywhere makes f non-finite
        f[bad_rows] = np.inf
        if order == 0:
            return f
        w = 1.0 if weights is None else weights
        psi = np.clip(r, -self.delta, self.delta) if self.loss == "huber" else r
        g = np.matmul((w * psi)[:, None, :], J)[:, 0, :]
        g[bad_rows] = 0.0  # those rows are never accepted; keep NaNs out of the batch algebra
        if order == 1:
            return f, g
        # IRLS weight psi(r)/r = min(1, delta/|r|): the Huber loss's quadratic majorizer.
        omega = self.delta / np.maximum(abs_r, self.delta) if self.loss == "huber" else 1.0
        curvature_weight = np.broadcast_to(w * omega, r.shape)
        H = np.matmul(np.swapaxes(J, 1, 2) * curvature_weight[:, None, :], J)
        H[bad_rows] = 0.0
        return f, g, H


def projected_gradient(g: np.ndarray, theta: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """The gradient with components that push against an active bound set to zero."""
    at_lower = (theta <= lower) & (g > 0)
    at_upper = (theta >= upper) & (g < 0)
    return np.where(at_lower | at_upper, 0.0, g)


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------


def batched_lm(
    objective: Objective,
    theta0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    max_iter: int = 200,
    ftol: float = 1e-12,
    initial_damping: float = 1e-3,
    chunk_bytes: float = 64e6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run damped Gauss-Newton/IRLS (Levenberg-Marquardt) from every row of `theta0` at once.

    Returns the end points (S, P), their objectives (S,), iteration counts (S,) and whether each
    row stopped by its own criterion before `max_iter` (bool, (S,)). A row stops when an
    accepted step lowers its objective by less than `ftol` relative, or when its damping grows
    past 1e10 (no descent step exists: a minimum, possibly on a bound). Rows whose objective is
    not finite at the start are not run. Work is split into chunks so that the (rows, n, P)
    Jacobian stays under `chunk_bytes`.
    """
    theta0 = np.clip(np.atleast_2d(np.asarray(theta0, dtype=float)), lower, upper)
    S, P = theta0.shape
    rows_per_chunk = max(1, int(chunk_bytes // (8 * objective.n * (P + 2))))
    if rows_per_chunk < S:
        parts = []
        for i in range(0, S, rows_per_chunk):
            rows = slice(i, i + rows_per_chunk)
            chunk_weights = weights if weights is None or weights.ndim == 1 else weights[rows]
            parts.append(
                batched_lm(
                    objective,
                    theta0[rows],
                    lower,
                    upper,
                    chunk_weights,
                    max_iter=max_iter,
                    ftol=ftol,
                    initial_damping=initial_damping,
                    chunk_bytes=chunk_bytes,
                )
            )
        theta, f, iters, converged = (np.concatenate(p) for p in zip(*parts))
        return theta, f, iters, converged

    def weights_of(idx):
        if weights is None or weights.ndim == 1:
            return weights
        return weights[idx]

    theta = theta0.copy()
    f, g, H = objective.evaluate(theta, weights, order=2)
    damping = np.full(S, initial_damping)
    done = ~np.isfinite(f)
    iters = np.zeros(S, dtype=int)
    eye = np.eye(P)
    for _ in range(max_iter):
        idx = np.flatnonzero(~done)
        if idx.size == 0:
            break
        Hi = H[idx]
        diag = np.einsum("spp->sp", Hi)
        # Marquardt damping: scale by the curvature's own diagonal (units of each parameter),
        # plus a tiny ridge so that flat directions (e.g. alpha = 0 makes A and E collinear) stay
        # solvable.
        ridge = 1e-12 * (diag.max(axis=1, keepdims=True) + 1e-300)
        system = Hi + (damping[idx, None] * diag + ridge)[:, :, None] * eye
        try:
            step = np.linalg.solve(system, -g[idx][..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(m, -v, rcond=None)[0] for m, v in zip(system, g[idx])])
        candidate = np.clip(theta[idx] + step, lower, upper)
        # Derivatives come with the trial evaluation: ~92% of steps are accepted (Chinchilla
        # grid), so one pass at the candidates beats a value-only pass plus a derivative pass.
        f_new, g_new, H_new = objective.evaluate(candidate, weights_of(idx), order=2)
        improved = np.isfinite(f_new) & (f_new < f[idx])
        relative_decrease = (f[idx] - f_new) / np.maximum(np.abs(f[idx]), 1e-300)
        accepted = idx[improved]
        theta[accepted] = candidate[improved]
        f[accepted], g[accepted], H[accepted] = f_new[improved], g_new[improved], H_new[improved]
        iters[idx] += 1
        damping[accepted] *= 0.3
        damping[idx[~improved]] *= 10.0
        done[accepted[relative_decrease[improved] < ftol]] = True
        done[idx[damping[idx] > 1e10]] = True
    return theta, f, iters, done & np.isfinite(f)


@dataclass
class PolishResult:
    theta: np.ndarray
    objective: float
    gradient: np.ndarray
    iterations: int
    success: bool
    message: str


def polish(
    objective: Objective,
    theta0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    ftol: float = 1e-15,
    gtol: float = 1e-12,
    maxiter: int = 5000,
) -> PolishResult:
    """L-BFGS-B with the analytic gradient from `theta0` (scipy.optimize.minimize).

    The objective is divided by its value at `theta0`, so the stopping rules (relative decrease
    below `ftol`, projected gradient below `gtol`) mean the same whatever the data's scale.
    """
    w = None if weights is None else weights[None]
    scale = float(objective.evaluate(theta0[None], w)[0])
    if not math.isfinite(scale):
        return PolishResult(
            theta0, math.inf, np.full_like(theta0, np.nan), 0, False, "non-finite start"
        )
    scale = scale if scale > 0 else 1.0

    def fun(x):
        f, g = objective.evaluate(x[None], w, order=1)
        if not np.isfinite(f[0]):
            return 1e300, np.zeros_like(x)
        return f[0] / scale, g[0] / scale

    bounds = [
        (None if np.isinf(lo) else lo, None if np.isinf(hi) else hi) for lo, hi in zip(lower, upper)
    ]
    res = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": maxiter, "maxfun": 4 * maxiter, "ftol": ftol, "gtol": gtol},
    )
    f, g = objective.evaluate(res.x[None], w, order=1)
    return PolishResult(res.x, float(f[0]), g[0], int(res.nit), bool(res.success), str(res.message))


def newton_decrement(
    objective: Objective, theta: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> float:
    """Scale-free stationarity check: (g^T H^-1 g / 2) / f over the free parameters.

    H is the IRLS curvature (the Huber loss's quadratic majorizer, Gauss-Newton for the law), so
    this is the relative decrease one more Newton-type step predicts (Boyd & Vandenberghe 2004,
    §9.5.1). Unlike ||g||, it does not depend on the units of the parameters or the objective.
    Parameters held at a bound by their gradient are excluded.
    """
    f, g, H = objective.evaluate(theta[None], None, order=2)
    free = projected_gradient(g[0], theta, lower, upper) != 0
    if not np.any(free) or not np.isfinite(f[0]) or f[0] <= 0:
        return 0.0 if np.isfinite(f[0]) else math.inf
    g_free, H_free = g[0][free], H[0][np.ix_(free, free)]
    step = np.linalg.lstsq(H_free, g_free, rcond=None)[0]
    return float(0.5 * g_free @ step / f[0])


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------


# How an input a law needs can be had from others: C = 6 N D, D = M N (as `load_points`).
DERIVATIONS: dict[str, tuple[tuple[tuple[str, str], Callable], ...]] = {
    "D": ((("C", "N"), lambda C, N: C / (6.0 * N)), (("M", "N"), lambda M, N: M * N)),
    "C": ((("N", "D"), lambda N, D: 6.0 * N * D), (("N", "M"), lambda N, M: 6.0 * N * N * M)),
    "M": ((("D", "N"), lambda D, N: D / N), (("C", "N"), lambda C, N: C / (6.0 * N * N))),
}


def _complete_inputs(
    inputs: Mapping[str, object], needed: Sequence[str], law_name: str = "this law"
) -> dict[str, np.ndarray]:
    """The inputs a law needs as broadcast float arrays, derived as `load_points` does.

    An input the law does not use (not even to derive one it does) is refused rather than
    silently ignored: a prediction printed next to it would look as if it depended on it.
    """
    X = {}
    for name, value in inputs.items():
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"input {name}={value!r} must be a number") from None
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"input {name}={value!r} must be positive and finite")
        X[name] = arr
    out, used = {}, set()
    for name in needed:
        if name in X:
            out[name] = X[name]
            used.add(name)
            continue
        for sources, derive in DERIVATIONS.get(name, ()):
            if all(s in X for s in sources):
                out[name] = derive(*(X[s] for s in sources))
                used.update(sources)
                break
        else:
            ways = " or ".join("+".join(s) for s, _ in DERIVATIONS.get(name, ()))
            raise ValueError(
                f"law {law_name!r} needs input {name}"
                + (f" (or {ways})" if ways else "")
                + f"; given: {sorted(inputs) or 'none'}"
            )
    unused = [n for n in X if n not in used]
    if unused:
        raise ValueError(
            f"law {law_name!r} takes {', '.join(needed)}; input(s) {unused} are not used by it "
            "(nor needed to derive its inputs): drop them"
        )
    arrays = np.broadcast_arrays(*(out[n] for n in needed))
    return dict(zip(needed, arrays))


EXTRAPOLATION_WARNING = "is far outside the fitted range"


@contextlib.contextmanager
def planned_extrapolation():
    """Silence :meth:`FitResult.predict`'s far-outside warning where extrapolating is the point
    (a ladder's held-out model); the caller states the extrapolation itself."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=f".*{EXTRAPOLATION_WARNING}", category=UserWarning
        )
        yield


def far_outside(value: np.ndarray, lo: float, hi: float) -> bool:
    """True when `value` lies beyond the fitted range [lo, hi] by more than the range's own
    width on a log scale (at least a factor of 2): an extrapolation further than the data."""
    value = np.asarray(value, dtype=float)
    width = max(math.log(hi / lo), math.log(2.0))
    below = np.log(lo / np.min(value))
    above = np.log(np.max(value) / hi)
    return bool(max(below, above) > width)


@dataclass
class FitResult:
    """A fitted law: parameters at full precision, diagnostics, and (optionally) a bootstrap.

    `params` and `derived` are plain floats; `ci` maps parameter and derived names to percentile
    intervals `[lo, hi]` at `ci_level`; `bootstrap_samples` (resamples x parameters) lets
    `interval(...)` give intervals for any prediction.
    """

    law: str
    params: dict[str, float]
    objective: float
    n_points: int
    diagnostics: dict
    loss: str = "huber"
    huber_delta: float = 1e-3
    derived: dict[str, float] = field(default_factory=dict)
    ci: dict[str, list[float]] = field(default_factory=dict)
    ci_level: float = 0.95
    bootstrap_samples: np.ndarray | None = None
    bootstrap_info: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    law_options: dict = field(default_factory=dict)
    law_obj: Law | None = field(default=None, repr=False, compare=False)
    constraints: dict = field(default_factory=dict)
    target: str | None = None

    # -- the law and its parameters --------------------------------------------------------
    def get_law(self) -> Law:
        """The law, with the target column it was fitted to (`fit(..., target=)`)."""
        if self.law_obj is None:
            self.law_obj = get_law(self.law, **self.law_options)
        if self.target is not None and self.law_obj.target != self.target:
            self.law_obj = dataclasses.replace(self.law_obj, target=self.target)
        return self.law_obj

    def reduced_law(self) -> ReducedLaw:
        """The law over the parameters that were fitted (not fixed, one per tied group)."""
        return reduce_law(self.get_law(), Constraints.from_dict(self.constraints))

    @property
    def theta(self) -> np.ndarray:
        return np.array([self.params[p] for p in self.get_law().param_names])

    def _evaluate(self, thetas: np.ndarray, inputs: Mapping[str, object]) -> np.ndarray:
        law = self.get_law()
        X = _complete_inputs(inputs, law.inputs, law.name)
        shape = next(iter(X.values())).shape
        flat = {k: v.ravel() for k, v in X.items()}
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return law.predict(thetas, flat).reshape((len(thetas), *shape))

    def predict(self, **inputs) -> np.ndarray | float:
        """The law at the fitted parameters, e.g. `fit.predict(N=1.4e9, D=2.8e10)`.

        Inputs broadcast; D may be replaced by C (D = C / (6 N)) or M (D = M N). Inputs the
        law does not use are refused; where the law has no finite prediction (an input
        outside its domain, e.g. a loss below where an error law turns negative) a ValueError
        says so. Far outside the fitted range (`far_outside`) a UserWarning is issued.
        """
        out = self._evaluate(self.theta[None], inputs)[0]  # checks the inputs first
        for message in self.extrapolation_warnings(inputs):
            warnings.warn(message, UserWarning, stacklevel=2)
        bad = ~np.isfinite(out)
        if np.any(bad):
            law = self.get_law()
            where = ", ".join(f"{k}={np.asarray(v).ravel()[0]:g}" for k, v in inputs.items())
            fitted = self.data.get("ranges", {})
            span = "; ".join(f"{k} was fitted on [{lo:g}, {hi:g}]" for k, (lo, hi) in
                             fitted.items() if k in law.inputs)  # fmt: skip
            raise ValueError(
                f"law {law.name!r} has no finite {law.target} at {where}: the input is outside "
                f"the law's domain ({law.domain})" + (f"; {span}" if span else "")
            )
        return float(out) if out.ndim == 0 else out

    def extrapolation_warnings(self, inputs: Mapping[str, object]) -> list[str]:
        """A sentence for each input far outside the range the law was fitted on."""
        out = []
        for name, (lo, hi) in self.data.get("ranges", {}).items():
            if name in inputs and lo > 0 and far_outside(inputs[name], lo, hi):
                out.append(
                    f"{name}={np.asarray(inputs[name]).ravel()[0]:g} {EXTRAPOLATION_WARNING} "
                    f"[{lo:g}, {hi:g}] of {name}: the prediction is an extrapolation "
                    "beyond what the data span"
                )
        return out

    def prediction_samples(self, **inputs) -> np.ndarray:
        """The prediction under every bootstrap resample, shape (resamples, *input shape)."""
        if self.bootstrap_samples is None:
            raise ValueError(
                "this fit has no bootstrap; refit with --bootstrap 4000 "
                "(Python: fit(..., bootstrap=4000)) for intervals"
            )
        return self._evaluate(self.bootstrap_samples, inputs)

    def interval(self, level: float | None = None, **inputs) -> tuple:
        """Percentile bootstrap interval of the prediction at `inputs` (default level: ci_level)."""
        level = self.ci_level if level is None else level
        samples = self.prediction_samples(**inputs)
        lo, hi = percentile_interval(samples, level)
        return (float(lo), float(hi)) if np.ndim(lo) == 0 else (lo, hi)

    # -- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {
            "law": self.law,
            "law_options": dict(self.law_options),
            "target": self.get_law().target,
            "constraints": dict(self.constraints),
            "params": dict(self.params),
            "derived": dict(self.derived),
            "ci": {k: list(v) for k, v in self.ci.items()},
            "ci_level": self.ci_level,
            "objective": self.objective,
            "n_points": self.n_points,
            "loss": self.loss,
            "huber_delta": self.huber_delta,
            "diagnostics": self.diagnostics,
            "data": self.data,
            "bootstrap": dict(self.bootstrap_info),
        }
        if self.bootstrap_samples is not None:
            out["bootstrap"]["samples"] = self.bootstrap_samples.tolist()
        return out

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON at full precision (Python writes the shortest repr that round-trips exactly).

        With `path`, the file is written atomically (a temporary file renamed into place).
        """
        text = json.dumps(jsonable(self.to_dict()), indent=1)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, source: str | Path | Mapping, law: Law | None = None) -> FitResult:
        """Read `to_json` output (`everyscale fit --json`): a JSON string, a path or a dict.

        A fit of a custom law needs that law passed as `law=`. A file that is not a fit, or
        whose law, parameters or bootstrap samples do not match each other, is refused with
        what is wrong.
        """
        d = dict(source) if isinstance(source, Mapping) else _read_fit_json(source)
        for key in ("law", "params", "objective", "n_points", "diagnostics"):
            if key not in d:
                raise ValueError(
                    f"the fit JSON lacks the field {key!r}: is it a file written by "
                    "`everyscale fit --json` (FitResult.to_json)?"
                )
        boot = dict(d.get("bootstrap") or {})
        samples = boot.pop("samples", None)
        if law is None and d["law"] not in _builtin_names():
            raise ValueError(
                f"the fit uses the law {d['law']!r}, which is not built in (built in: "
                f"{', '.join(sorted(_builtin_names()))}); for a custom law pass it: "
                "FitResult.from_json(..., law=...)"
            )
        result = cls(
            law=d["law"],
            params=_float_dict(d["params"], "params"),
            objective=_float(d["objective"]),
            n_points=int(d["n_points"]),
            diagnostics=dict(d["diagnostics"]),
            loss=d.get("loss", "huber"),
            huber_delta=float(d.get("huber_delta", 1e-3)),
            derived={k: _float(v) for k, v in d.get("derived", {}).items()},
            ci={k: [_float(x) for x in v] for k, v in d.get("ci", {}).items()},
            ci_level=float(d.get("ci_level", 0.95)),
            bootstrap_samples=None if samples is None else _samples(samples),
            bootstrap_info=boot,
            data=d.get("data", {}),
            law_options=d.get("law_options", {}),
            law_obj=law,
            constraints=d.get("constraints") or {},
            target=d.get("target"),
        )
        result.check()
        return result

    def check(self) -> None:
        """Raise ValueError when the parameters or samples do not fit the law."""
        law = self.get_law()
        names = list(law.param_names)
        if sorted(self.params) != sorted(names):
            missing = [p for p in names if p not in self.params]
            unknown = [p for p in self.params if p not in names]
            raise ValueError(
                f"the fit's parameters do not match law {law.name!r} (which has {names}): "
                + ", ".join(
                    part
                    for part in (
                        f"missing {missing}" if missing else "",
                        f"unknown {unknown}" if unknown else "",
                    )
                    if part
                )
            )
        if not all(math.isfinite(v) for v in self.params.values()):
            raise ValueError(f"the fit's parameters are not all finite: {self.params}")
        if self.bootstrap_samples is not None and (
            self.bootstrap_samples.ndim != 2 or self.bootstrap_samples.shape[1] != len(names)
        ):
            raise ValueError(
                f"the fit's bootstrap samples have shape {self.bootstrap_samples.shape}, but "
                f"law {law.name!r} has {len(names)} parameters: refit with --bootstrap"
            )

    @classmethod
    def from_params(
        cls, law: str | Law, params: Mapping[str, float], *, law_options: Mapping | None = None
    ) -> FitResult:
        """A law at given constants, e.g. published ones, without fitting.

        Names may be the fitter's (`a`) or the published ones (`A = e^a`), see
        `Law.natural_to_params`: `FitResult.from_params("chinchilla", dict(E=1.69, A=406.4,
        B=410.7, alpha=0.34, beta=0.28))`.
        """
        law = get_law(law, **dict(law_options or {}))
        internal = law.natural_to_params(params, what="params")
        missing = [n for p, n in zip(law.param_names, law.natural_names) if p not in internal]
        if missing:
            raise ValueError(
                f"params: law {law.name!r} needs {', '.join(law.natural_names)}; missing "
                f"{', '.join(missing)}"
            )
        internal = {p: internal[p] for p in law.param_names}
        return cls(
            law=law.name,
            params=internal,
            objective=math.nan,
            n_points=0,
            diagnostics={"warnings": [], "given_params": True},
            loss=law.default_loss,
            derived={k: float(v) for k, v in law.derived_values(internal).items()},
            data={
                "source": "given parameters",
                "formula": law.formula,
                "source_paper": law.source,
            },
            law_options=dict(law.options),
            law_obj=law,
        )

    def summary(self) -> str:
        """A Markdown summary (see `everyscale.laws.report`)."""
        from everyscale.laws.report import summary

        return summary(self)


def _flops_note(points: Points) -> str:
    """How the data count FLOPs (it moves the fitted exponents: Porian et al. 2024)."""
    if "C" not in points:
        return "none (the data have no C, nor N and D)"
    if "C computed as 6 N D (no C column)" in points.notes:
        return "C = 6 N D"
    return "the data's own C column"


def _float(value) -> float:
    """JSON null (how non-finite values are stored) back to NaN."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the fit JSON holds {value!r} where a number belongs") from None


def _float_dict(values, what: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise ValueError(f"the fit JSON's {what!r} must be an object {{name: value}}")
    return {str(k): _float(v) for k, v in values.items()}


def _samples(samples) -> np.ndarray:
    try:
        return np.array([[_float(x) for x in row] for row in samples], dtype=float)
    except TypeError:
        raise ValueError("the fit JSON's bootstrap samples must be a list of lists") from None


def _read_fit_json(source: str | Path) -> dict:
    """A fit file (or JSON text) as a dict, with a clear error for anything else."""
    text = str(source)
    if not text.lstrip().startswith("{"):
        path = Path(source).expanduser()
        if path.is_dir():
            hint = " (it holds fit.json: give that)" if (path / "fit.json").exists() else ""
            raise ValueError(f"fit file {str(source)!r} is a folder{hint}; give the JSON file "
                             "`everyscale fit --json FILE` wrote")  # fmt: skip
        if not path.exists():
            raise FileNotFoundError(
                f"fit file {str(path)!r} does not exist; write one with "
                "`everyscale fit DATA --json FILE`"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"fit file {str(path)!r} is not a JSON text file") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"fit file {str(source)[:200]!r} is not valid JSON: {err}") from None
    if not isinstance(d, dict):
        raise ValueError(f"fit file {str(source)[:200]!r} holds a JSON {type(d).__name__}, "
                         "not a fit object")  # fmt: skip
    return d


def _builtin_names() -> set[str]:
    from everyscale.laws.forms import LAWS

    return set(LAWS)


def jsonable(obj):
    """Convert numpy scalars/arrays to Python floats/lists; non-finite floats become null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 (Efron's percentile bootstrap), ignoring NaNs."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    tail = 50.0 * (1.0 - level)
    lo, hi = np.nanpercentile(samples, [tail, 100.0 - tail], axis=0)
    return lo, hi


# ---------------------------------------------------------------------------------------------
# fit()
# ---------------------------------------------------------------------------------------------


def prepare(
    points: Points | str | Path | list,
    law: str | Law,
    law_options: Mapping | None = None,
    target: str | None = None,
):
    """Load and validate points for a law: returns (points, law, X, y).

    `target` names the column the law predicts when it is not the law's own (`loss` for loss
    laws, `error` for downstream laws); the returned law carries it.
    """
    if not isinstance(points, Points):
        points = load_points(points)
    law = get_law(law, **dict(law_options or {}))
    if target is not None and target != law.target:
        law = dataclasses.replace(law, target=str(target))
    check_for_law(points, law.inputs, law.target, law.name, law.n_params)
    X = {name: points[name] for name in law.inputs}
    return points, law, X, points[law.target]


SOLVERS = {
    "lm": "vectorized Levenberg-Marquardt/IRLS over all starts, then L-BFGS-B polish",
    "lbfgsb": "L-BFGS-B (analytic gradient) from every start, then L-BFGS-B polish",
}
OPTIMIZERS = SOLVERS  # the old name of the table, kept for one release


def objective_text(loss: str, huber_delta: float, target: str) -> str:
    """What is minimized, in the law's own words (its target: loss, error, ...)."""
    if loss == "huber":
        return f"Huber (delta = {huber_delta:g}) on log residuals of the {target}"
    return f"least squares on the {target}"


@single_threaded_blas
def fit(
    points: Points | str | Path | list,
    law: str | Law = "chinchilla",
    *,
    huber_delta: float = 1e-3,
    bootstrap: int = 0,
    seed: int = 0,
    loss: ObjectiveName | None = None,
    start_grid: Mapping[str, Sequence[float]] | None = None,
    level: float = 0.95,
    rtol: float = 1e-6,
    n_polish: int = 3,
    law_options: Mapping | None = None,
    solver: str = "lm",
    fixed: Mapping[str, float] | None = None,
    tie: Mapping[str, str] | Sequence | None = None,
    target: str | None = None,
    optimizer: str | None = None,
) -> FitResult:
    """Fit a scaling law by the Chinchilla procedure (module docstring), optionally bootstrapped.

    Args:
        points: `Points`, a file path or a list of dicts (see `load_points`).
        law: a built-in law name (`everyscale.laws.forms.LAWS`) or a `Law` (e.g. `custom_law`).
        huber_delta: Huber threshold on log residuals (Hoffmann et al. 2022 use 1e-3).
        bootstrap: number of bootstrap resamples (0: none); resamples whole runs.
        loss: "huber" (on log residuals) or "lsq" (least squares on the target); None: the
            law's own default (`Law.default_loss`, with its source in `default_loss_source`:
            Huber for Chinchilla-type laws, least squares for Gadre et al.'s laws).
        start_grid: overrides for some parameters' start values (the rest keep the law's grid).
        rtol: a start "reached the best" when its objective is within rtol (relative) of it.
        n_polish: how many of the best distinct end points are polished by L-BFGS-B.
        law_options: options of a built-in law, e.g. {"chance_error": 0.25}.
        solver: how every start is optimized. "lm" (default): all starts at once by the
            vectorized Levenberg-Marquardt/IRLS of `batched_lm`; "lbfgsb": scipy's L-BFGS-B with
            the analytic gradient from each start in turn (Hoffmann et al. 2022 App. D.2,
            Besiroglu et al. 2024 §2). Either way the best distinct end points are then
            polished by L-BFGS-B and the best polished one is returned.
        fixed: parameters held at given values, by the fitter's or the published names
            (`{"alpha": 0.34}`, `{"E": 1.69}` for e = log 1.69); see `constraints`.
        tie: parameters fitted as one, e.g. `{"beta": "alpha"}` or `["alpha=beta"]`.
        target: the column the law predicts, when it is not named as the law's target.
        optimizer: the old name of `solver` (deprecated).
    """
    if optimizer is not None:
        warnings.warn("fit(optimizer=) is deprecated; use fit(solver=)", FutureWarning, 2)
        solver = optimizer
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    points, law, X, y = prepare(points, law, law_options, target)
    loss = law.default_loss if loss is None else loss
    constraints = make_constraints(law, fixed, tie)
    reduced = reduce_law(law, constraints)
    if start_grid is not None:  # starts for fixed or tied-away parameters have no use
        held = set(law.param_names) - set(reduced.law.param_names)
        start_grid = {k: v for k, v in start_grid.items() if k not in held}
    objective = Objective(reduced.law, X, y, loss, huber_delta)
    best, search = _search(objective, reduced.law, start_grid, rtol, n_polish, solver)
    fit_warnings = _fit_warnings(points, law, reduced.law, best, search, rtol, objective)
    theta = reduced.expand(best.theta[None])[0]
    params = {name: float(v) for name, v in zip(law.param_names, theta)}
    derived = {k: float(v) for k, v in law.derived_values(params).items()}
    diagnostics = {
        "optimizer": SOLVERS[solver],
        **search["diagnostics"],
        "warnings": fit_warnings,
        "fitted_params": list(reduced.law.param_names),
        "local_optima": reduced.expand(np.array([r.theta for r in search["polished"]])).tolist(),
    }
    result = FitResult(
        law=law.name,
        params=params,
        objective=best.objective,
        n_points=len(points),
        diagnostics=diagnostics,
        loss=loss,
        huber_delta=float(huber_delta),
        derived=derived,
        ci_level=level,
        data=_provenance(points, law, loss, huber_delta),
        law_options=dict(law.options),
        law_obj=law,
        constraints={} if constraints.empty else constraints.to_dict(),
        target=None if target is None else law.target,
    )
    if bootstrap:
        from everyscale.laws.bootstrap import bootstrap as run_bootstrap

        result = run_bootstrap(points, result, n_resamples=bootstrap, seed=seed, level=level)
    return result


def _search(objective: Objective, law: Law, start_grid, rtol: float, n_polish: int, solver: str):
    """Every start of the grid optimized, the best distinct end points polished (step 1-2)."""
    lower, upper = law.bound_arrays()
    starts = law.grid(start_grid)
    if solver == "lm":
        ends, f_ends, iters, converged = batched_lm(objective, starts, lower, upper, ftol=1e-10)
    else:
        runs = [polish(objective, start, lower, upper) for start in np.clip(starts, lower, upper)]
        ends = np.array([r.theta for r in runs])
        f_ends = np.array([r.objective for r in runs])
        iters = np.array([r.iterations for r in runs])
        converged = np.array([r.success for r in runs]) & np.isfinite(f_ends)
    order = np.argsort(f_ends)
    if not np.isfinite(f_ends[order[0]]):
        raise ValueError(
            f"law {law.name!r}: the prediction is not positive and finite from any start; "
            "check the data's units or give a start grid near plausible values (--start-grid)"
        )
    # Polish the best distinct end points (distinct: differing by > 1e-4 in some parameter).
    chosen: list[int] = []
    for i in order:
        if not np.isfinite(f_ends[i]) or len(chosen) >= n_polish:
            break
        if all(np.max(np.abs(ends[i] - ends[j])) > 1e-4 for j in chosen):
            chosen.append(int(i))
    polished = sorted(
        (polish(objective, ends[i], lower, upper) for i in chosen), key=lambda r: r.objective
    )
    best = polished[0]
    at_best = f_ends <= best.objective + rtol * abs(best.objective) + 1e-300
    pg = projected_gradient(best.gradient, best.theta, lower, upper)
    spread = ends[at_best].max(axis=0) - ends[at_best].min(axis=0) if at_best.any() else 0 * pg
    diagnostics = {
        "n_starts": len(starts),
        "n_starts_finite": int(np.sum(np.isfinite(f_ends))),
        "n_starts_at_best": int(np.sum(at_best)),
        "rtol": rtol,
        "n_polished": len(polished),
        "iterations_median": float(np.median(iters)),
        "n_starts_converged": int(np.sum(converged)),
        "grad_norm": float(np.linalg.norm(pg)),
        "grad_norm_relative": float(np.linalg.norm(pg) / max(abs(best.objective), 1e-300)),
        "newton_decrement_relative": newton_decrement(objective, best.theta, lower, upper),
        "lbfgsb_iterations": best.iterations,
        "lbfgsb_message": best.message,
        "param_spread_at_best": dict(zip(law.param_names, map(float, spread))),
    }
    return best, {"diagnostics": diagnostics, "polished": polished}


def _fit_warnings(points, law, fitted_law, best, search, rtol, objective) -> list[str]:
    """What a reader of the fit should know: fragile optimum, bounds, convergence, data."""
    diag = search["diagnostics"]
    out = []
    n_at_best, n_starts = diag["n_starts_at_best"], diag["n_starts"]
    if n_at_best <= 1:
        out.append(
            f"only {n_at_best} of {n_starts} starts reached the best objective "
            f"within rtol={rtol}: the optimum may be fragile; widen the start grid or check data"
        )
    lower, upper = fitted_law.bound_arrays()
    on_bound = [  # only fitted parameters: a fixed one sits where it was put
        name
        for name, v, lo, hi in zip(fitted_law.param_names, best.theta, lower, upper)
        if np.isclose(v, lo, rtol=0, atol=1e-8) or np.isclose(v, hi, rtol=0, atol=1e-8)
    ]
    diag["on_bound"] = on_bound
    if on_bound:
        out.append(f"parameter(s) {on_bound} sit on a bound: the law may not fit these data")
    decrement = diag["newton_decrement_relative"]
    # L-BFGS-B may stop with ABNORMAL when no further decrease is representable; what matters is
    # whether one more (IRLS) Newton step could still lower the objective noticeably.
    if not decrement <= 1e-8:
        out.append(
            f"the fit may not have converged: one more Newton step would lower the objective by "
            f"{decrement:.2e} of its value (L-BFGS-B: {best.message})"
        )
    constant = points.constant_columns(law.inputs)
    if constant:
        out.append(
            f"input column(s) {constant} hold one value in every row: the law's dependence on "
            "them cannot be identified from these data"
        )
    if law.name.startswith("kaplan") and points.embeddings:
        out.append("Kaplan et al. 2020 count non-embedding parameters; these N include embeddings")
    return out


def _provenance(points: Points, law: Law, loss: str, huber_delta: float) -> dict:
    """Where the data came from and what was fitted to them, for the report and the JSON."""
    about_n_and_flops = bool({"N", "D", "C", "M"} & set(law.inputs))
    flop_note = ("6 N D", "C / (6 N)", "(no C column)")
    data = {
        "source": points.source,
        "inputs": list(law.inputs),
        "target": law.target,
        "notes": [
            n for n in points.notes if about_n_and_flops or not any(f in n for f in flop_note)
        ],
        "n_runs": len(np.unique(points.run)),
        "run_ids": sorted(set(points.run.tolist())) if points.run_ids_given else None,
        "ranges": {n: [float(points[n].min()), float(points[n].max())] for n in law.inputs},
        "formula": law.formula,
        "source_paper": law.source,
        "objective": objective_text(loss, huber_delta, law.target),
        "objective_is_default": loss == law.default_loss,
        "objective_source": law.default_loss_source,
    }
    if about_n_and_flops:  # notes about N and FLOPs concern such laws only
        data["parameter_count"] = points.parameter_count()
        data["flops"] = _flops_note(points)
    return data
