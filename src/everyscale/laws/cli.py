"""`everyscale fit`, `everyscale predict`, `everyscale allocate`.

The flags follow the grammar of `everyscale.cliargs`: `--json [PATH]` (stdout without PATH),
`--markdown PATH`, yes/no choices as `--flag/--no-flag`, old spellings as deprecated aliases,
and every `--help` ends with an example.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from everyscale import cliargs
from everyscale.laws.allocate import allocate
from everyscale.laws.chain import chain
from everyscale.laws.constraints import make_constraints
from everyscale.laws.fit import SOLVERS, FitResult, fit, jsonable
from everyscale.laws.forms import LAWS, get_law
from everyscale.laws.io import atomic_write_text, load_points
from everyscale.laws.isoflop import extrapolation_check, isoflop
from everyscale.laws.report import summary

INPUT_FLAGS = {
    "N": "parameters",
    "D": "tokens",
    "C": "FLOPs (D = C / (6 N))",
    "M": "tokens per parameter (D = M N)",
    "U": "unique tokens",
    "loss": "loss (the input of downstream laws)",
}
SIGMOID_LAWS = ("downstream_sigmoid", "compute_sigmoid")


def register(subparsers) -> None:
    _register_fit(subparsers)
    _register_predict(subparsers)
    _register_allocate(subparsers)


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------


def _register_fit(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a scaling law to a CSV / JSON / Parquet file of runs",
        description="Fit a scaling law by the Chinchilla procedure (every start of a grid "
        "optimized, the best kept) and print a Markdown summary. Each law is fitted with its "
        "own default objective, stated with its source in the summary (Huber on log residuals "
        "for Chinchilla-type laws, Hoffmann et al. 2022; least squares for Gadre et al. "
        "2024's laws); --loss overrides it.",
        epilog=cliargs.example_epilog(
            "everyscale fit runs.csv --law chinchilla --bootstrap 4000 --json fit.json",
            "everyscale fit runs.csv --law overtrain --fix E=1.9 --json loss.json",
            "everyscale fit runs.csv --law downstream_exp --target err_avg --json err.json",
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "file", nargs="?", help="data: columns N, D (or C), loss; optional run, U, M, lr"
    )
    p.add_argument(
        "--law",
        default="chinchilla",
        choices=sorted(LAWS),
        metavar="LAW",
        help=f"one of {', '.join(sorted(LAWS))} (default chinchilla)",
    )
    p.add_argument(
        "--target",
        metavar="COLUMN",
        help="the column the law predicts (default: the law's own, loss or error)",
    )
    p.add_argument(
        "--loss",
        choices=["huber", "lsq"],
        default=None,
        help="huber: Huber on log residuals; lsq: least squares on the target "
        "(default: the law's own, see the summary)",
    )
    p.add_argument(
        "--huber-delta",
        type=float,
        default=1e-3,
        help="Huber threshold on log residuals (default 1e-3, Hoffmann et al.)",
    )
    p.add_argument(
        "--solver",
        default="lm",
        choices=sorted(SOLVERS),
        help="lm: all starts at once by vectorized Levenberg-Marquardt/IRLS, the best "
        "polished by L-BFGS-B (default, fast); lbfgsb: L-BFGS-B from every start, "
        "as published (slower)",
    )
    cliargs.add_deprecated_alias(
        p, "--optimizer", "--solver", dest="solver", choices=sorted(SOLVERS)
    )
    p.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE[,...]",
        help="hold parameters at given values, in published units (E=1.69, "
        "alpha=0.34) or as fitted (e=0.53); repeatable",
    )
    p.add_argument(
        "--tie",
        action="append",
        default=[],
        metavar="NAME=NAME",
        help="fit two parameters as one, e.g. alpha=beta; repeatable",
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
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="bootstrap seed; fits that share runs and a seed resample them jointly",
    )
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument(
        "--embeddings",
        "--no-embeddings",
        dest="embeddings",
        action=_EmbeddingsFlag,
        help="--embeddings: N counts embedding parameters; --no-embeddings: it does not "
        "(recorded in the result; the old --embeddings yes|no still works, deprecated)",
    )
    p.add_argument(
        "--chance-error",
        type=float,
        help=f"for --law {' / '.join(SIGMOID_LAWS)}: the error at chance (e.g. 0.75)",
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
    cliargs.add_json_option(p, "the fit (full precision, what predict and allocate read)")
    p.add_argument("--markdown", metavar="PATH", help="write the Markdown summary to PATH")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots into this folder")
    p.set_defaults(func=_fit)


class _EmbeddingsFlag(argparse.Action):
    """`--embeddings` / `--no-embeddings`, and the old `--embeddings yes|no` (deprecated).

    The old spelling shares the new flag's name, so one action reads both: a `yes`/`no` value
    after `--embeddings` is taken with a warning. A value that is not yes/no (the data file
    written after the flag) is handed back to the positional argument.
    """

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs="?", default=None, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        negative = option_string == "--no-embeddings"
        if values is None:
            setattr(namespace, self.dest, not negative)
            return
        try:
            value = cliargs.yes_no(values)
        except argparse.ArgumentTypeError:
            setattr(namespace, self.dest, not negative)
            namespace.file_after_flag = values  # `fit --embeddings runs.csv`
            return
        if negative:
            parser.error(f"--no-embeddings takes no value (got {values!r})")
        message = (
            f"--embeddings {values} is deprecated and will be removed in the next release; "
            f"use {'--embeddings' if value else '--no-embeddings'}"
        )
        warnings.warn(message, cliargs.EveryscaleDeprecationWarning, stacklevel=2)
        print(f"warning: {message}", file=sys.stderr)
        setattr(namespace, self.dest, value)


class _HelpFormatter(cliargs.help_formatter()):
    """Shows the `--embeddings` / `--no-embeddings` pair as the flags it is, not as taking a
    value (the value it accepts is the deprecated `yes|no`)."""

    def _format_args(self, action, default_metavar):
        return (
            ""
            if isinstance(action, _EmbeddingsFlag)
            else super()._format_args(action, default_metavar)
        )

    def _format_action_invocation(self, action):
        if isinstance(action, _EmbeddingsFlag):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)


def _json_grid(text: str) -> dict:
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}); e.g. '{{\"alpha\": [0.3]}}'") from None
    if not isinstance(grid, dict):
        raise argparse.ArgumentTypeError("must be a JSON object {parameter: [start values]}")
    return grid


def _fit(args: argparse.Namespace) -> int:
    data_file = args.file or getattr(args, "file_after_flag", None)
    if data_file is None:
        raise ValueError("give the data file: everyscale fit runs.csv [--law LAW]")
    if args.file and getattr(args, "file_after_flag", None):
        raise ValueError(
            f"--embeddings takes no value (got {args.file_after_flag!r}); "
            "write --embeddings or --no-embeddings"
        )
    _check_fit_outputs(args, data_file)
    law = get_law(args.law, **_law_options(args))
    constraints = make_constraints(
        law, _key_values(args.fix, "--fix"), args.tie, names=("--fix", "--tie")
    )
    points = load_points(data_file, embeddings=args.embeddings)
    kwargs = dict(
        huber_delta=args.huber_delta,
        loss=args.loss,
        seed=args.seed,
        level=args.level,
        law_options=_law_options(args),
        start_grid=args.start_grid,
        solver=args.solver,
        fixed=constraints.fixed,
        tie=constraints.ties and [(g[0], other) for g in constraints.ties for other in g[1:]],
        target=args.target,
    )
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
    json_to_stdout = args.json_out == cliargs.STDOUT
    print(text, file=sys.stderr if json_to_stdout else sys.stdout)
    if args.json_out:
        _write_json(args.json_out, json.loads(result.to_json()))
    if args.markdown:
        atomic_write_text(args.markdown, text)
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.plots:
        from everyscale.laws.plots import save_plots

        for path in save_plots(result, points, args.plots, iso=iso):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _law_options(args) -> dict:
    if args.chance_error is None:
        return {}
    if args.law not in SIGMOID_LAWS:
        raise ValueError(f"--chance-error applies only to --law {' / '.join(SIGMOID_LAWS)}")
    return {"chance_error": args.chance_error}


def _check_fit_outputs(args, data_file: str) -> None:
    """Before any work: outputs must not overwrite the data and must be writable."""
    outputs = {"--json": args.json_out, "--markdown": args.markdown, "--plots": args.plots}
    cliargs.refuse_overwriting_inputs(outputs, [data_file])
    cliargs.check_output_file("--json", args.json_out)
    cliargs.check_output_file("--markdown", args.markdown)
    if args.plots:
        folder = Path(args.plots).expanduser()
        if folder.exists() and not folder.is_dir():
            raise ValueError(
                f"--plots {args.plots} is a file; give a folder for the PNG plots "
                f"(it is created if missing), e.g. --plots {folder.with_suffix('')}-plots"
            )
        ancestor = next(p for p in (folder, *folder.parents) if p.exists())
        if not ancestor.is_dir():
            raise ValueError(f"--plots {args.plots}: {ancestor} is a file, not a folder")


def _key_values(items: list[str], flag: str) -> dict[str, float]:
    """`NAME=VALUE[,NAME=VALUE...]`, repeatable, as a dict of floats."""
    out: dict[str, float] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{flag} {part!r}: write NAME=VALUE, e.g. {flag} alpha=0.34")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"{flag} {part!r}: {value!r} is not a number") from None
    return out


def _write_json(path: str, payload: dict) -> None:
    text = json.dumps(jsonable(payload), indent=1, allow_nan=False)
    if path == cliargs.STDOUT:
        print(text)
    else:
        atomic_write_text(path, text)
        print(f"wrote {path}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------


def _register_predict(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict with a saved fit or published constants, chained to an error law",
        description="Evaluate a saved fit (everyscale fit --json) or a law at given constants "
        "(--law with --params, in published units) at the given inputs, with its bootstrap "
        "interval. With --then, the predicted loss is passed to a downstream error law "
        "(Gadre et al. 2024's two steps), and the interval carries both fits' uncertainty.",
        epilog=cliargs.example_epilog(
            "everyscale predict --fit fit.json --N 1.4e9 --D 2.8e10",
            "everyscale predict --fit loss.json --then err.json --N 6.9e9 --M 20 --json",
            "everyscale predict --law chinchilla --params E=1.69,A=406.4,B=410.7,"
            "alpha=0.34,beta=0.28 --N 7e10 --D 1.4e12",
        ),
        formatter_class=cliargs.help_formatter(),
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--fit", metavar="FIT.json", help="a fit written by everyscale fit")
    source.add_argument(
        "--law",
        choices=sorted(LAWS),
        metavar="LAW",
        help="evaluate this law at --params instead of a saved fit",
    )
    p.add_argument(
        "--params",
        action="append",
        default=[],
        metavar="NAME=VALUE[,...]",
        help="with --law: its constants in published units (E, A, B, alpha, beta, "
        "...) or as fitted (a, b, e)",
    )
    p.add_argument(
        "--chance-error",
        type=float,
        help=f"with --law {' / '.join(SIGMOID_LAWS)}: the error at chance",
    )
    p.add_argument(
        "--then",
        metavar="ERR.json",
        help="a downstream error law fit (input: the loss): predict the error at "
        "the loss the first law predicts",
    )
    for name, text in INPUT_FLAGS.items():
        p.add_argument(f"--{name}", type=float, dest=f"in_{name}", metavar="X", help=text)
    p.add_argument("--level", type=float, help="interval level (default: the fit's)")
    cliargs.add_json_option(p, "the prediction")
    p.set_defaults(func=_predict)


def _first_fit(args) -> FitResult:
    if args.fit:
        if args.params:
            raise ValueError("--params goes with --law (a law at given constants), not --fit")
        if args.chance_error is not None:
            raise ValueError("--chance-error goes with --law; a saved fit carries its own")
        return FitResult.from_json(args.fit)
    if args.law:
        if not args.params:
            law = get_law(args.law)
            raise ValueError(
                f"--law {args.law} needs its constants: --params "
                + ",".join(f"{n}=..." for n in law.natural_names)
            )
        options = {} if args.chance_error is None else {"chance_error": args.chance_error}
        if options and args.law not in SIGMOID_LAWS:
            raise ValueError(f"--chance-error applies only to --law {' / '.join(SIGMOID_LAWS)}")
        law = get_law(args.law, **options)
        values = _key_values(args.params, "--params")
        params = law.natural_to_params(values, what="--params")
        return FitResult.from_params(law, params)
    raise ValueError(
        "give a saved fit (--fit FIT.json) or a law and its constants "
        "(--law LAW --params NAME=VALUE,...)"
    )


def _predict(args: argparse.Namespace) -> int:
    cliargs.check_output_file("--json", args.json_out)
    inputs = {
        n: getattr(args, f"in_{n}") for n in INPUT_FLAGS if getattr(args, f"in_{n}") is not None
    }
    first = _first_fit(args)
    if not inputs:
        law = first.get_law()
        raise ValueError(
            f"give the inputs of law {law.name!r}: " + " ".join(f"--{n} X" for n in law.inputs)
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        if args.then:
            then = FitResult.from_json(args.then)
            out = _chained(first, then, inputs, args.level)
        else:
            out = _single(first, inputs, args.level)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.json_out:
        _write_json(args.json_out, out)
        return 0
    print(_prediction_line(out))
    for note in out.get("notes", []):
        print(f"  note: {note}")
    return 0


def _single(result: FitResult, inputs: dict, level: float | None) -> dict:
    value = float(result.predict(**inputs))
    out = {
        "law": result.law,
        "target": result.get_law().target,
        "inputs": inputs,
        "prediction": value,
    }
    if result.bootstrap_samples is not None:
        level = result.ci_level if level is None else level
        out["interval"] = list(result.interval(level=level, **inputs))
        out["level"] = level
    return out


def _chained(first: FitResult, then: FitResult, inputs: dict, level: float | None) -> dict:
    prediction = chain(first, then).predict(level=level, **inputs)
    out = {
        "law": first.law,
        "then": then.law,
        "target": then.get_law().target,
        **prediction.to_dict(),
    }
    if out["interval"] is None:
        del out["interval"], out["level"]
    return out


def _prediction_line(out: dict) -> str:
    given = ", ".join(f"{k}={v:g}" for k, v in out["inputs"].items())
    line = ""
    if "then" in out:
        line = f"loss({given}) = {out['loss']:.6g}"
        if out.get("loss_interval"):
            lo, hi = out["loss_interval"]
            line += f"   {out['level']:.0%} interval [{lo:.6g}, {hi:.6g}]"
        line += "\n"
        given = f"loss={out['loss']:.6g}"
    line += f"{out['target']}({given}) = {out['prediction']:.6g}"
    if "interval" in out:
        lo, hi = out["interval"]
        line += f"   {out['level']:.0%} interval [{lo:.6g}, {hi:.6g}]"
        if "pairing" in out:
            line += f" ({out['pairing']} resamples)"
    elif "then" not in out:
        line += "   (no interval: the fit has no bootstrap; refit with --bootstrap 4000)"
    return line


# ---------------------------------------------------------------------------------------------
# allocate
# ---------------------------------------------------------------------------------------------


def _register_allocate(subparsers) -> None:
    p = subparsers.add_parser(
        "allocate",
        help="compute-optimal parameters and tokens for a FLOP budget",
        description="N*(C), D*(C) and tokens per parameter under a saved fit (Hoffmann et al. "
        "2022 eq. 4), with bootstrap intervals when the fit has them.",
        epilog=cliargs.example_epilog("everyscale allocate --fit fit.json --compute 1e21 1e23"),
        formatter_class=cliargs.help_formatter(),
    )
    p.add_argument("--fit", required=True, metavar="FIT.json")
    p.add_argument("--compute", type=float, nargs="+", required=True, metavar="C")
    p.add_argument("--level", type=float, help="interval level (default: the fit's)")
    cliargs.add_json_option(p, "the allocation")
    p.set_defaults(func=_allocate)


def _allocate(args: argparse.Namespace) -> int:
    cliargs.check_output_file("--json", args.json_out)
    result = FitResult.from_json(args.fit)
    compute = args.compute[0] if len(args.compute) == 1 else args.compute
    alloc = allocate(result, compute, level=args.level)
    if args.json_out:
        _write_json(args.json_out, alloc.to_dict())
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
            print(line)
    if not alloc.intervals:
        print("(no intervals: the fit has no bootstrap; refit with --bootstrap 4000)")
    return 0
