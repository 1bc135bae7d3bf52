"""Two laws chained: scale -> loss -> downstream error, with the uncertainty carried through.

Gadre et al. 2024 (§4, Fig. 1) predict a large model's average top-1 error from small runs in
two steps: the over-training law (eq. 4) gives the loss L(N, M), and the error law (eq. 5)
turns it into Err(L) = eps - k exp(-gamma L). `chain(loss_fit, error_fit)` composes two fitted
laws the same way, for any pair whose second law takes the first one's target as its input
(`downstream_exp`, `downstream_sigmoid` after a loss law).

The interval on the error comes from the two bootstraps. Resample i of the loss fit gives a
loss L_i; resample i of the error fit turns it into Err_i; the percentile interval of the
Err_i is the chained interval. How resamples are paired:

- joint: both fits hold some of the same runs (a `run` column with shared ids) and were
  bootstrapped with the run-keyed Poisson scheme and one seed (`bootstrap`, the default).
  Then resample i of both fits is one draw of the runs, so a run's influence on both laws
  is resampled together (the correlation between the two fits is kept);
- paired: otherwise resample i of one is paired with resample i of the other, two
  independent bootstraps (the fits share no runs, or their resamples were not drawn jointly:
  the chain says which).

When only one fit has a bootstrap, its samples are pushed through the other's point fit, and
the interval reflects only that fit's uncertainty (said in `notes`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from everyscale.laws.fit import FitResult, percentile_interval


@dataclass
class ChainPrediction:
    """The loss and the error a chain predicts at some inputs, with intervals when it can."""

    inputs: dict
    loss: float
    error: float
    level: float
    loss_interval: tuple[float, float] | None = None
    error_interval: tuple[float, float] | None = None
    pairing: str = "none"
    n_resamples: int = 0
    n_nonfinite: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "inputs": dict(self.inputs),
            "loss": self.loss,
            "loss_interval": None if self.loss_interval is None else list(self.loss_interval),
            "prediction": self.error,
            "interval": None if self.error_interval is None else list(self.error_interval),
            "level": self.level,
            "pairing": self.pairing,
            "n_resamples": self.n_resamples,
            "n_nonfinite": self.n_nonfinite,
            "notes": list(self.notes),
        }


@dataclass
class Chain:
    """`first` predicts the loss from scale; `then` predicts the error from the loss."""

    first: FitResult
    then: FitResult

    @property
    def middle(self) -> str:
        """The quantity passed from the first law to the second (e.g. `loss`)."""
        return self.then.get_law().inputs[0]

    def pairing(self) -> tuple[str, list[str]]:
        """How the two bootstraps are paired ("joint", "paired", "first only", "then only",
        "none"), and why."""
        a, b = self.first, self.then
        if a.bootstrap_samples is None and b.bootstrap_samples is None:
            return "none", ["neither fit has a bootstrap: refit with --bootstrap for intervals"]
        if b.bootstrap_samples is None:
            return "first only", [
                f"the {self.then.law} fit has no bootstrap: the interval carries the loss law's "
                "uncertainty only"
            ]
        if a.bootstrap_samples is None:
            return "then only", [
                f"the {self.first.law} fit has no bootstrap: the interval carries the error "
                "law's uncertainty only"
            ]
        shared = set(a.data.get("run_ids") or []) & set(b.data.get("run_ids") or [])
        run_keyed = all(f.bootstrap_info.get("scheme") == "poisson by run id" for f in (a, b))
        same_seed = a.bootstrap_info.get("seed") == b.bootstrap_info.get("seed")
        if shared and run_keyed and same_seed:
            return "joint", [f"joint resamples: the fits share {len(shared)} run(s)"]
        if shared:
            return "paired", [
                f"the fits share {len(shared)} run(s) but their resamples were not drawn "
                "jointly (different seeds or the multinomial scheme): paired as independent "
                "bootstraps; refit both with one --seed for joint resamples"
            ]
        return "paired", ["the fits share no run ids: independent bootstraps, paired"]

    def predict(self, level: float | None = None, **inputs) -> ChainPrediction:
        """The loss at `inputs`, the error at that loss, and their intervals (module doc)."""
        loss = self.first.predict(**inputs)
        try:
            error = self.then.predict(**{self.middle: loss})
        except ValueError as err:
            raise ValueError(
                f"the {self.first.law} law predicts {self.middle} = {np.ravel(loss)[0]:.6g} "
                f"there, which the {self.then.law} law cannot take: {err}"
            ) from None
        level = self.then.ci_level if level is None else level
        pairing, notes = self.pairing()
        out = ChainPrediction(
            inputs=_plain_inputs(inputs),
            loss=_plain(loss),
            error=_plain(error),
            level=level,
            pairing=pairing,
            notes=notes,
        )
        if pairing == "none":
            return out
        loss_samples, error_samples = self.samples(pairing, **inputs)
        finite = np.isfinite(error_samples)
        out.n_resamples = int(error_samples.shape[0])
        out.n_nonfinite = int(np.sum(~finite))
        if out.n_nonfinite:
            out.notes.append(
                f"{out.n_nonfinite} of {error_samples.size} resampled errors are not finite "
                f"(a resampled {self.middle} outside the error law's domain) and are left out"
            )
        if loss_samples.ndim and loss_samples.shape[0] > 1:
            out.loss_interval = _plain_pair(percentile_interval(loss_samples, level))
        out.error_interval = _plain_pair(percentile_interval(error_samples, level))
        return out

    def samples(self, pairing: str, **inputs) -> tuple[np.ndarray, np.ndarray]:
        """Resampled losses and errors at `inputs`, paired as `pairing` says."""
        first_law, then_law = self.first, self.then
        if pairing in ("joint", "paired"):
            n = min(len(first_law.bootstrap_samples), len(then_law.bootstrap_samples))
            theta_first = first_law.bootstrap_samples[:n]
            theta_then = then_law.bootstrap_samples[:n]
        elif pairing == "first only":
            theta_first = first_law.bootstrap_samples
            theta_then = np.repeat(then_law.theta[None], len(theta_first), axis=0)
        else:  # then only
            theta_then = then_law.bootstrap_samples
            theta_first = np.repeat(first_law.theta[None], len(theta_then), axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = first_law._evaluate(theta_first, inputs)  # (R, *shape)
        law = then_law.get_law()
        shape = loss.shape
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            # Row i of theta_then meets row i of the losses: the law is evaluated row by row.
            log_pred, _ = law.log_model(theta_then, {self.middle: loss.reshape(len(loss), -1)},
                                        False)  # fmt: skip
            error = np.exp(log_pred).reshape(shape)
        return loss, error


def chain(loss_fit: FitResult, error_fit: FitResult) -> Chain:
    """Compose a loss law and an error law: `chain(a, b).predict(N=..., M=...)`.

    The second law must take the first one's target as its only input (a downstream law after
    a loss law); otherwise a ValueError says what each law takes.
    """
    first_target = loss_fit.get_law().target
    then_inputs = error_fit.get_law().inputs
    if tuple(then_inputs) != (first_target,) and tuple(then_inputs) != ("loss",):
        raise ValueError(
            f"cannot chain: the second fit's law {error_fit.law!r} takes "
            f"{', '.join(then_inputs)}, not the {first_target} that the first fit's law "
            f"{loss_fit.law!r} predicts; the second fit (--then) must be a downstream law "
            "(downstream_exp, downstream_sigmoid) fitted with the loss as input"
        )
    if error_fit.get_law().target == first_target:
        raise ValueError(
            f"cannot chain: both fits predict {first_target}; the second fit (--then) must "
            "predict a downstream error from the loss"
        )
    return Chain(loss_fit, error_fit)


def _plain(x):
    x = np.asarray(x, dtype=float)
    return float(x) if x.ndim == 0 else x.tolist()


def _plain_pair(pair) -> tuple:
    lo, hi = pair
    return _plain(lo), _plain(hi)


def _plain_inputs(inputs: Mapping) -> dict:
    return {k: _plain(v) for k, v in inputs.items()}
