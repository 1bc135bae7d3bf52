"""`everyscale ladder`: the scaling ladder from the command line (a thin layer over run_ladder)."""

from __future__ import annotations

import argparse

from everyscale.cliargs import add_deprecated_alias, example_epilog, help_formatter
from everyscale.ladder.plan import (
    BUDGETS,
    parse_int_list,
    parse_target,
    parse_tokens,
)
from everyscale.scale import transfer


def parse_lr_grid(text: str) -> tuple[float, ...]:
    """'2^-8:2^-3' (every power of two in between) or a comma list '0.01,0.02,2^-4'.

    The same grammar as ``everyscale transfer --lr-grid`` (one parser for both commands).
    """
    return tuple(transfer.parse_lr_grid(text))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ladder",
        help="tune small, train a ladder, fit a scaling law, predict a held-out model, check",
        description=(
            "Sweep the learning rate on the smallest GPT, train a ladder of widths x token "
            "budgets with the transferred learning rate and a WSD schedule, fit the Chinchilla "
            "and over-training laws with bootstrap intervals, write the prediction for a larger "
            "held-out model to disk, then train it and report the error beside two naive "
            "predictions. Writes report.md, ladder.json and plots under --out."
        ),
        epilog=example_epilog(
            "everyscale ladder --budget small --optimizer scion --out runs/ladder",
            "everyscale ladder --budget medium --widths 32,48,64 --tokens 512k,1M,2M "
            "--target 144 --embeddings --out runs/ladder-medium",
        ),
        formatter_class=help_formatter(),
    )
    p.add_argument(
        "--budget",
        choices=BUDGETS,
        default="small",
        help="scale of the whole job: small (make demo; measured ~3 min on 2 idle cores, 8 min "
        "on a shared machine), medium (the reported run; ~11 min idle, 16 min shared), large "
        "(not run yet: hours); tiny is for tests",
    )
    p.add_argument("--optimizer", default="scion", help="optimizer preset (default scion)")
    add_deprecated_alias(p, "--preset", "--optimizer", dest="optimizer")
    p.add_argument(
        "--data",
        default="stdlib",
        help="text data the engine reads: stdlib, shakespeare or a text file",
    )
    p.add_argument("--widths", help="ladder widths, comma separated (e.g. 32,48,64)")
    p.add_argument("--tokens", help="token budgets per width, comma separated (e.g. 512k,1M)")
    p.add_argument(
        "--target",
        help=(
            "held-out model: WIDTH or WIDTHxTOKENS (e.g. 144 or 64x4M); default: the "
            "narrowest width with 4x the parameters, at the largest budget"
        ),
    )
    p.add_argument("--lr-grid", help="sweep grid: 2^-8:2^-3 or a comma list")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples for the intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        type=int,
        help="runs per ladder point, with seeds --seed, --seed + 1, ... (the law is fitted to "
        "all; default 1)",
    )
    p.add_argument(
        "--smallest-seeds",
        type=int,
        help="runs per point at the smallest width, where runs are cheapest and their noise "
        "weighs most on the fit (default: the budget's, 2 for small, medium and large)",
    )
    p.add_argument(
        "--embeddings",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="count the token embedding and output head in N (default: not, as Kaplan et al. 2020)",
    )
    p.add_argument(
        "--branches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train each width once to the largest budget and branch a cooldown per shorter "
        "budget (Hägele et al. 2024; the same runs, ~0.7x the tokens); --no-branches trains "
        "every run alone (default: branches)",
    )
    p.add_argument(
        "--horizon-lr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="longer runs end their stable phase at their horizon's learning rate, decaying as "
        "(step / S0)^-0.505 after the sweep budget's stable phase S0 (Scion's exponent at a "
        "fixed batch, Filatov et al. 2025; default); --no-horizon-lr keeps the sweep's rate",
    )
    p.add_argument(
        "--cooldown-shape",
        choices=("linear", "sqrt"),
        default="linear",
        help="shape of the WSD cooldown: linear or sqrt (1 - sqrt, Hägele et al. 2024)",
    )
    p.add_argument("--out", default="runs/ladder", help="output folder (default runs/ladder)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a ladder in --out, reusing its finished runs",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="runs trained side by side, one thread each (default 2; results do not depend on it)",
    )
    p.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train the held-out model and check the prediction (default); --no-check stops "
        "once prediction.json is written, and a later --resume trains it and checks",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from everyscale.ladder import make_plan, run_ladder

    widths = parse_int_list(args.widths, name="--widths") if args.widths else None
    tokens = (
        tuple(parse_tokens(t, name="--tokens") for t in args.tokens.split(",") if t.strip())
        if args.tokens
        else None
    )
    target_width, target_tokens = parse_target(args.target) if args.target else (None, None)
    plan = make_plan(
        args.budget,
        preset=args.optimizer,
        data=args.data,
        widths=widths,
        tokens=tokens,
        target_width=target_width,
        target_tokens=target_tokens,
        lr_grid=parse_lr_grid(args.lr_grid) if args.lr_grid else None,
        bootstrap=args.bootstrap,
        seed=args.seed,
        seeds=args.seeds,
        smallest_seeds=args.smallest_seeds,
        horizon_lr=args.horizon_lr,
        embeddings=args.embeddings,
        branches=args.branches,
        cooldown_shape=args.cooldown_shape,
    )
    result = run_ladder(
        plan,
        args.out,
        resume=args.resume,
        progress=not args.quiet,
        workers=args.workers,
        check=args.check,
    )
    print(f"report: {args.out}/report.md")
    if not args.check:
        print(
            f"predicted {result['prediction']:.4f} [{result['interval'][0]:.4f}, "
            f"{result['interval'][1]:.4f}] for the held-out model (not trained: --no-check); "
            f"train it and check with --resume --out {args.out}"
        )
        return 0
    print(
        f"held-out loss {result['actual']:.4f}; predicted {result['prediction']:.4f} "
        f"[{result['interval'][0]:.4f}, {result['interval'][1]:.4f}]: relative error "
        f"{100 * result['relative_error']:.2f}%, "
        f"{'inside' if result['inside_interval'] else 'outside'} the interval"
    )
    tokens = result["ladder_tokens"]
    print(
        f"ladder stage: {tokens['trained']:,} tokens trained ({tokens['ratio']:.3f}x the "
        f"{tokens['alone']:,} of training every run alone)"
    )
    for name, entry in result["naive"].items():
        print(
            f"naive {name}: {entry['prediction']:.4f} ({100 * entry['relative_error']:.2f}% error)"
        )
    return 0
