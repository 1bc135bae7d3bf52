"""A Markdown summary of a fit (parameters, intervals, diagnostics, data provenance).

Values are printed to 6 significant digits for reading; the JSON (`FitResult.to_json`) keeps
full precision, and is what `everyscale predict` / `allocate` read.
"""

from __future__ import annotations

from everyscale.laws.allocate import Allocation
from everyscale.laws.fit import FitResult, objective_text
from everyscale.laws.isoflop import ExtrapolationCheck, IsoFlopResult


def _g(x) -> str:
    return "n/a" if x is None else f"{x:.6g}"


def _table(values: dict[str, float], ci: dict[str, list[float]], level: float) -> list[str]:
    pct = f"{100 * level:g}%"
    lines = [f"| name | value | {pct} interval |", "|---|---|---|"]
    for name, value in values.items():
        interval = ci.get(name)
        text = f"[{_g(interval[0])}, {_g(interval[1])}]" if interval else "(no bootstrap)"
        lines.append(f"| {name} | {_g(value)} | {text} |")
    return lines


def summary(
    fit: FitResult,
    allocation: Allocation | None = None,
    extrapolation: ExtrapolationCheck | None = None,
    iso: IsoFlopResult | None = None,
) -> str:
    """The fit as Markdown; optional sections for an allocation, an extrapolation check, IsoFLOP."""
    data, diag = fit.data, fit.diagnostics
    target = fit.get_law().target
    objective = data.get("objective") or objective_text(fit.loss, fit.huber_delta, target)
    if data.get("objective_is_default", True):
        objective += f" (the law's default: {data.get('objective_source', 'n/a')})"
    else:
        objective += f" (chosen; the law's default is {fit.get_law().default_loss})"
    lines = [
        f"# Scaling-law fit: `{fit.law}`",
        "",
        f"- Law: `{data.get('formula', fit.law)}` ({data.get('source_paper', 'user-defined')})",
        f"- Data: {fit.n_points} points, {data.get('n_runs', '?')} runs, "
        f"from `{data.get('source')}`; target: `{target}`",
    ]
    if "parameter_count" in data or "flops" in data:
        lines.append(
            f"- Parameter count: {data.get('parameter_count', 'unspecified')}; FLOPs: "
            f"{data.get('flops', 'n/a')}"
        )
    lines += [f"- Note: {note}" for note in data.get("notes", [])]
    if fit.constraints:
        fixed = fit.get_law().params_to_natural(fit.constraints.get("fixed", {}))
        parts = [f"{k} = {v:.6g}" for k, v in fixed.items()]
        parts += [" = ".join(group) for group in fit.constraints.get("tie", [])]
        lines.append(f"- Held: {'; '.join(parts)} (fixed or tied, not fitted)")
    lines += [
        f"- Objective: {objective}, summed; best value {fit.objective!r}",
        "",
        "## Parameters",
        "",
        *_table(fit.params, fit.ci, fit.ci_level),
    ]
    if fit.derived:
        lines += ["", "## Derived quantities", "", *_table(fit.derived, fit.ci, fit.ci_level)]
    lines += ["", "## Diagnostics", ""]
    if diag:
        lines += [
            f"- Starts: {diag.get('n_starts')} run, {diag.get('n_starts_at_best')} reached the "
            f"best objective within rtol = {diag.get('rtol')}",
            f"- Projected gradient norm at the optimum: {_g(diag.get('grad_norm'))} "
            f"(relative to the objective: {_g(diag.get('grad_norm_relative'))}); relative "
            f"decrease one more Newton step predicts: {_g(diag.get('newton_decrement_relative'))}",
            f"- Optimizer: {diag.get('optimizer')}",
        ]
        lines += [f"- **Warning:** {w}" for w in diag.get("warnings", [])]
    if fit.bootstrap_info:
        info = fit.bootstrap_info
        lines += [
            f"- Bootstrap: {info.get('n_resamples')} resamples by {info.get('unit')}, seed "
            f"{info.get('seed')}, percentile intervals; {info.get('n_failed', 0)} failed, "
            f"{info.get('n_finished_by_lbfgsb', 0)} finished by L-BFGS-B, largest deviation "
            f"from an L-BFGS-B check {_g(info.get('max_check_deviation_in_sd'))} bootstrap sd",
        ]
    if allocation is not None:
        lines += ["", "## Compute-optimal allocation", ""]
        lines += ["| C (FLOPs) | N* | D* | D*/N* | loss |", "|---|---|---|---|---|"]
        d = allocation.to_dict()
        as_list = {k: d[k] if isinstance(d[k], list) else [d[k]] for k in d if k != "intervals"}
        for i, C in enumerate(as_list["compute"]):
            cells = [
                _cell(as_list[k][i], d["intervals"].get(k), i)
                for k in ("N", "D", "tokens_per_param", "loss")
            ]
            lines.append(f"| {C:.3g} | " + " | ".join(cells) + " |")
    if extrapolation is not None:
        e = extrapolation
        lines += [
            "",
            "## Extrapolation check",
            "",
            f"Fitted without the {len(e.held_out_runs)} largest runs ({len(e.held_out)} "
            f"points); relative error on them: mean "
            f"{e.mean_abs_rel_error:.3%}, max {e.max_abs_rel_error:.3%}"
            + ("" if e.coverage is None else f"; interval coverage {e.coverage:.0%}"),
        ]
    if iso is not None:
        lines += [
            "",
            "## IsoFLOP (Chinchilla Approach 2)",
            "",
            f"N* ~ C^{iso.a:.4f}, D* ~ C^{iso.b:.4f} from {len(iso.budgets)} budgets",
        ]
        lines += [f"- Note: {n}" for n in iso.notes]
    return "\n".join(lines) + "\n"


def _cell(value: float, interval, i: int) -> str:
    if not interval:
        return _g(value)
    lo, hi = (x if not isinstance(x, list) else x[i] for x in interval)
    return f"{_g(value)} [{_g(lo)}, {_g(hi)}]"
