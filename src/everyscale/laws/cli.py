"""`everyscale fit`, `everyscale predict`, `everyscale allocate`."""

from __future__ import annotations

import argparse
import json
import sys

from everyscale.laws.allocate import allocate
from everyscale.laws.fit import FitResult, fit
from everyscale.laws.forms import LAWS
from everyscale.laws.io import load_points
from everyscale.laws.isoflop import extrapolation_check, isoflop
from everyscale.laws.report import summary

INPUT_FLAGS = ("N", "D", "C", "M", "U", "loss")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a scaling law to a CSV / JSON lines / Parquet file of runs",
        description="Fit a scaling law by the Chinchilla procedure (Huber on log residuals "
        "summed over points, every start of a grid optimized, the best kept) and print a "
        "Markdown summary. By default all starts run at once by a vectorized "
        "Levenberg-Marquardt/IRLS and the best end points are polished by L-BFGS-B with "
        "analytic gradients; --optimizer lbfgsb runs L-BFGS-B from every start instead.",
    )
    p.add_argument("file", help="data: columns N, D (or C), loss; optional run, U, M, lr")
    p.add_argument(
        "--law",
        default="chinchilla",
        choices=sorted(LAWS),
        metavar="LAW",
        help=f"one of {', '.join(sorted(LAWS))} (default chinchilla)",
    )
    p.add_argument(
        "--huber-delta",
        type=float,
        default=1e-3,
        help="Huber threshold on log residuals (default 1e-3, Hoffmann et al.)",
    )
    p.add_argument(
        "--loss",
        default="huber",
        choices=["huber", "lsq"],
        help="huber: on log residuals (default); lsq: least squares on the loss",
    )
    p.add_argument(
        "--optimizer",
        default="lm",
        choices=["lm", "lbfgsb"],
        help="lm: all starts at once by vectorized Levenberg-Marquardt/IRLS, the best polished "
        "by L-BFGS-B (default, fast); lbfgsb: L-BFGS-B from every start, as published (slower)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="R",
        help="bootstrap resamples for intervals (e.g. 4000; default 0: none)",
    )
    p.add_argument(
        "--start-grid",
        type=_json_grid,
        metavar="JSON",
        help="override some start values, e.g. '{\"alpha\": [0.3, 0.5]}'",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument(
        "--embeddings",
        choices=["yes", "no"],
        help="whether N counts embedding parameters (recorded in the result)",
    )
    p.add_argument(
        "--chance-error",
        type=float,
        help="for --law downstream_sigmoid: the error at chance (e.g. 0.75)",
    )
    p.add_argument(
        "--compute",
        type=float,
        nargs="*",
        default=[],
        help="also report the compute-optimal allocation at these budgets (FLOPs)",
    )
    p.add_argument(
        "--holdout",
        type=int,
        default=0,
        help="also fit without the K largest runs and report the error on them",
    )
    p.add_argument(
        "--isoflop",
        action="store_true",
        help="also run IsoFLOP analysis (Chinchilla Approach 2) on the points",
    )
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the fit as JSON here")
    p.add_argument("--markdown", metavar="OUT", help="write the Markdown summary here")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots into this directory")
    p.set_defaults(func=_fit)  # fmt: skip

    p = subparsers.add_parser(
        "predict",
        help="predict with a saved fit, with its bootstrap interval",
        description="Evaluate a saved fit (everyscale fit --json) at given inputs.",
    )
    p.add_argument("--fit", required=True, metavar="FIT.json")
    for name in INPUT_FLAGS:
        p.add_argument(f"--{name}", type=float, dest=f"in_{name}", metavar="X",
                       help={"N": "parameters", "D": "tokens", "C": "FLOPs (D = C / (6 N))",
                             "M": "tokens per parameter", "U": "unique tokens",
                             "loss": "loss (downstream laws)"}[name])  # fmt: skip
    p.add_argument("--level", type=float, help="interval level (default: the fit's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_predict)

    p = subparsers.add_parser(
        "allocate",
        help="compute-optimal parameters and tokens for a FLOP budget",
        description="N*(C), D*(C) and tokens per parameter under a saved fit (Hoffmann et al. "
        "2022 eq. 4), with bootstrap intervals when the fit has them.",
    )
    p.add_argument("--fit", required=True, metavar="FIT.json")
    p.add_argument("--compute", type=float, nargs="+", required=True, metavar="C")
    p.add_argument("--level", type=float, help="interval level (default: the fit's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_allocate)


def _json_grid(text: str) -> dict:
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}); e.g. '{{\"alpha\": [0.3]}}'") from None
    if not isinstance(grid, dict):
        raise argparse.ArgumentTypeError("must be a JSON object {parameter: [start values]}")
    return grid


def _fit(args: argparse.Namespace) -> int:
    embeddings = None if args.embeddings is None else args.embeddings == "yes"
    points = load_points(args.file, embeddings=embeddings)
    options = {} if args.chance_error is None else {"chance_error": args.chance_error}
    if options and args.law != "downstream_sigmoid":
        raise ValueError("--chance-error applies only to --law downstream_sigmoid")
    kwargs = dict(huber_delta=args.huber_delta, loss=args.loss, seed=args.seed, level=args.level,
                  law_options=options, start_grid=args.start_grid,
                  optimizer=args.optimizer)  # fmt: skip
    if args.bootstrap:
        print(f"fitting, then {args.bootstrap} bootstrap resamples...", file=sys.stderr)
    result = fit(points, args.law, bootstrap=args.bootstrap, **kwargs)
    alloc = allocate(result, args.compute) if args.compute else None
    check = extrapolation_check(points, args.holdout, args.law, **kwargs) if args.holdout else None
    iso = None
    if args.isoflop:
        try:
            iso = isoflop(points, on_edge="drop")
        except ValueError as err:  # the fit stands; say why the IsoFLOP analysis does not
            print(f"everyscale fit: IsoFLOP analysis skipped: {err}", file=sys.stderr)
    text = summary(result, allocation=alloc, extrapolation=check, iso=iso)
    print(text)
    if args.json_out:
        result.to_json(args.json_out)
        print(f"wrote {args.json_out}", file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text)
    if args.plots:
        from everyscale.laws.plots import save_plots

        for path in save_plots(result, points, args.plots, iso=iso):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    result = FitResult.from_json(args.fit)
    inputs = {
        n: getattr(args, f"in_{n}") for n in INPUT_FLAGS if getattr(args, f"in_{n}") is not None
    }
    if not inputs:
        raise ValueError(f"give the inputs of law {result.law!r}, e.g. --N 1.4e9 --D 2.8e10")
    value = float(result.predict(**inputs))
    out = {"law": result.law, "inputs": inputs, "prediction": value}
    if result.bootstrap_samples is not None:
        level = result.ci_level if args.level is None else args.level
        out["interval"] = list(result.interval(level=level, **inputs))
        out["level"] = level
    if args.json:
        print(json.dumps(out))
    else:
        given = ", ".join(f"{k}={v:g}" for k, v in inputs.items())
        line = f"{result.get_law().target}({given}) = {value:.6g}"
        if "interval" in out:
            lo, hi = out["interval"]
            line += f"   {out['level']:.0%} interval [{lo:.6g}, {hi:.6g}]"
        else:
            line += "   (no interval: the fit has no bootstrap; refit with --bootstrap 4000)"
        print(line)
    return 0


def _allocate(args: argparse.Namespace) -> int:
    result = FitResult.from_json(args.fit)
    compute = args.compute[0] if len(args.compute) == 1 else args.compute
    alloc = allocate(result, compute, level=args.level)
    if args.json:
        print(json.dumps(alloc.to_dict()))
        return 0
    d = alloc.to_dict()
    rows = {
        k: d[k] if isinstance(d[k], list) else [d[k]] for k in d if k not in ("intervals", "level")
    }
    for i, C in enumerate(rows["compute"]):
        print(f"C = {C:.4g} FLOPs")
        for key, label in (
            ("N", "parameters N*"),
            ("D", "tokens D*"),
            ("tokens_per_param", "tokens per parameter"),
            ("loss", "loss"),
        ):
            line = f"  {label:22s} {rows[key][i]:.6g}"
            if key in d["intervals"]:
                lo, hi = (x if not isinstance(x, list) else x[i] for x in d["intervals"][key])
                line += f"   {alloc.level:.0%} interval [{lo:.6g}, {hi:.6g}]"
            print(line)  # fmt: skip
    if not alloc.intervals:
        print("(no intervals: the fit has no bootstrap; refit with --bootstrap 4000)")
    return 0
