"""everyscale.laws: scaling laws fitted robustly, with honest uncertainty.

    from everyscale.laws import load_points, fit, allocate
    points = load_points("runs.csv")                 # N, D (or C), loss, optional run/U/M/lr
    result = fit(points, "chinchilla", bootstrap=4000)
    result.predict(N=1.4e9, D=2.8e10), result.interval(N=1.4e9, D=2.8e10)
    allocate(result, 1e21)                           # N*(C), D*(C), tokens per parameter
    result.to_json("fit.json")                       # full precision
    chain(loss_fit, error_fit).predict(N=6.9e9, M=20) # loss -> downstream error, with interval

The fitting procedure follows Hoffmann et al. 2022 and Besiroglu et al. 2024 (see `fit`);
the laws and their sources are in `forms`. Imports numpy/scipy only (matplotlib for plots).
"""

from everyscale.laws.allocate import Allocation, allocate
from everyscale.laws.bootstrap import bootstrap
from everyscale.laws.chain import Chain, ChainPrediction, chain
from everyscale.laws.constraints import Constraints, make_constraints
from everyscale.laws.fit import FitResult, fit
from everyscale.laws.forms import LAWS, Law, custom_law, get_law
from everyscale.laws.io import Points, load_points
from everyscale.laws.isoflop import ExtrapolationCheck, IsoFlopResult, extrapolation_check, isoflop

__all__ = [
    "LAWS",
    "Allocation",
    "Chain",
    "ChainPrediction",
    "Constraints",
    "ExtrapolationCheck",
    "FitResult",
    "IsoFlopResult",
    "Law",
    "Points",
    "allocate",
    "bootstrap",
    "chain",
    "custom_law",
    "extrapolation_check",
    "fit",
    "get_law",
    "isoflop",
    "load_points",
    "make_constraints",
]
