"""The scaling ladder: tune small, train a ladder, fit, predict a held-out model, then check.

    from everyscale.ladder import make_plan, run_ladder
    result = run_ladder(make_plan("small"), "runs/ladder-demo")
    print(result["prediction"], result["actual"], result["relative_error"])

See :mod:`everyscale.ladder.ladder` for the stages and docs/ladder.md for a measured run.
"""

from __future__ import annotations

from everyscale.ladder.ladder import LadderError, run_ladder
from everyscale.ladder.naive import naive_predictions, relative_error
from everyscale.ladder.plan import BUDGETS, LadderPlan, RunSpec, make_plan

__all__ = [
    "BUDGETS",
    "LadderError",
    "LadderPlan",
    "RunSpec",
    "make_plan",
    "naive_predictions",
    "relative_error",
    "run_ladder",
]
