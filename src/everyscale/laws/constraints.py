"""Fixed and tied parameters: fit a law with some constants given or set equal.

People who bring published fits need both. Muennighoff et al. 2023 fit their data-constrained
law in two stages (the Chinchilla base with alpha = beta, then R_D*, R_N* with the base held
fixed); Gadre et al. 2024's over-training law is Chinchilla with alpha = beta. A constrained
fit is the same fit over fewer parameters: with free parameters phi, the law's parameters are

    theta = P phi + c

where each column of P is the indicator of one tie group (a lone parameter is its own group)
and c holds the fixed values. The Jacobian is J P, so the fitter and the bootstrap run
unchanged on the reduced law, and their diagnostics (bounds, convergence) speak only of the
parameters that were actually fitted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from everyscale.laws.forms import Law


@dataclass(frozen=True)
class Constraints:
    """Which parameters of a law are fixed (to values, in the fitter's units) or tied equal.

    `ties` is a tuple of groups of parameter names that share one value; the first name of a
    group in the law's parameter order is the one fitted.
    """

    fixed: Mapping[str, float] = dataclasses.field(default_factory=dict)
    ties: tuple[tuple[str, ...], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.fixed and not self.ties

    def to_dict(self) -> dict:
        return {"fixed": dict(self.fixed), "tie": [list(g) for g in self.ties]}

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Constraints:
        d = d or {}
        return cls(
            fixed={k: float(v) for k, v in d.get("fixed", {}).items()},
            ties=tuple(tuple(g) for g in d.get("tie", [])),
        )


def make_constraints(
    law: Law,
    fixed: Mapping[str, float] | None = None,
    tie: Mapping[str, str] | Iterable[tuple[str, str] | str] | None = None,
    *,
    names: tuple[str, str] = ("fixed", "tie"),
) -> Constraints:
    """Validate `fixed` and `tie` against `law` and return them in the fitter's units.

    `fixed` maps parameter names to values; published names are accepted (`E=1.69` for
    `e = log 1.69`, see `Law.natural_to_params`). `tie` is a mapping `{"beta": "alpha"}`, pairs
    `[("alpha", "beta")]` or strings `["alpha=beta"]`; tied parameters are fitted as one.
    `names` are how errors call the two (e.g. `("--fix", "--tie")` on the command line).
    """
    fixed_name, tie_name = names
    fixed_internal = law.natural_to_params(fixed or {}, what=fixed_name)
    pairs = _tie_pairs(tie, tie_name)
    groups: list[list[str]] = [[p] for p in law.param_names]
    for left, right in pairs:
        found = [law.natural_to_params({n: 1.0}, what=tie_name) for n in (left, right)]
        a, b = (next(iter(n)) for n in found)
        if a == b:
            raise ValueError(f"{tie_name} {left}={right} ties a parameter to itself")
        ga = next(g for g in groups if a in g)
        gb = next(g for g in groups if b in g)
        if ga is not gb:
            ga.extend(gb)
            groups.remove(gb)
    order = {p: i for i, p in enumerate(law.param_names)}
    ties = tuple(tuple(sorted(g, key=order.get)) for g in groups if len(g) > 1)
    for group in ties:  # a tied group with one fixed member is fixed as a whole
        values = {fixed_internal[p] for p in group if p in fixed_internal}
        if len(values) > 1:
            raise ValueError(
                f"{fixed_name} gives different values to the tied parameters {list(group)}"
            )
        if values:
            value = values.pop()
            fixed_internal.update({p: value for p in group})
    lower, upper = law.bound_arrays()
    for name, value in fixed_internal.items():
        i = order[name]
        if not lower[i] <= value <= upper[i]:
            raise ValueError(
                f"{fixed_name} {name}={value:g} is outside the law's bounds "
                f"[{lower[i]:g}, {upper[i]:g}]"
            )
    if len(fixed_internal) == law.n_params:
        raise ValueError(
            f"{fixed_name} holds every parameter of law {law.name!r}: nothing is left to fit; "
            "to evaluate the law at given constants use `everyscale predict --law ... --params`"
        )
    return Constraints(fixed=fixed_internal, ties=ties)


def _tie_pairs(tie, tie_name: str = "tie") -> list[tuple[str, str]]:
    if tie is None:
        return []
    items = tie.items() if isinstance(tie, Mapping) else tie
    pairs = []
    for item in items:
        if isinstance(item, str):
            left, sep, right = item.partition("=")
            if not sep or not left.strip() or not right.strip():
                raise ValueError(f"{tie_name} {item!r}: write NAME=NAME, e.g. alpha=beta")
            item = (left.strip(), right.strip())
        left, right = item
        pairs.append((str(left), str(right)))
    return pairs


@dataclass(frozen=True)
class ReducedLaw:
    """A law over its free parameters, and the map back to all of them."""

    law: Law  # the law over the free parameters only
    full: Law
    P: np.ndarray  # (n_full, n_free)
    c: np.ndarray  # (n_full,)

    def expand(self, theta_free: np.ndarray) -> np.ndarray:
        """Free parameters (S, F) -> the law's parameters (S, P)."""
        return np.atleast_2d(theta_free) @ self.P.T + self.c

    def reduce(self, theta_full: np.ndarray) -> np.ndarray:
        """The law's parameters (S, P) -> the free ones (the first member of each group)."""
        columns = [int(np.flatnonzero(self.P[:, j])[0]) for j in range(self.P.shape[1])]
        return np.atleast_2d(theta_full)[:, columns]


def reduce_law(law: Law, constraints: Constraints) -> ReducedLaw:
    """`law` over its free parameters (see the module docstring)."""
    if constraints.empty:
        n = law.n_params
        return ReducedLaw(law, law, np.eye(n), np.zeros(n))
    tied_to = {p: group[0] for group in constraints.ties for p in group}
    free = [p for p in law.param_names if p not in constraints.fixed and tied_to.get(p, p) == p]
    index = {p: j for j, p in enumerate(free)}
    P = np.zeros((law.n_params, len(free)))
    c = np.zeros(law.n_params)
    for i, p in enumerate(law.param_names):
        if p in constraints.fixed:
            c[i] = constraints.fixed[p]
        else:
            P[i, index[tied_to.get(p, p)]] = 1.0
    lower, upper = law.bound_arrays()
    bounds = {}
    for j, p in enumerate(free):
        members = P[:, j] > 0
        bounds[p] = (float(np.max(lower[members])), float(np.min(upper[members])))
    bounds = {
        p: (None if np.isinf(lo) else lo, None if np.isinf(hi) else hi)
        for p, (lo, hi) in bounds.items()
    }

    def log_model(theta, X, jacobian):
        log_pred, J = law.log_model(theta @ P.T + c, X, jacobian)
        return log_pred, (None if J is None else J @ P)

    reduced = dataclasses.replace(
        law,
        param_names=tuple(free),
        start_grid={p: law.start_grid[p] for p in free},
        bounds=bounds,
        log_model=log_model,
        derived=None,
        log_params={p: n for p, n in law.log_params.items() if p in index},
    )
    return ReducedLaw(reduced, law, P, c)
