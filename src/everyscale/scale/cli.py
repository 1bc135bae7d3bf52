"""`everyscale transfer`: the learning-rate transfer check across widths or depths."""

from __future__ import annotations

import argparse
import math

from everyscale.cliargs import add_option_flag, example_epilog, help_formatter, parse_option
from everyscale.scale.transfer import (
    SweepConfig,
    parse_init,
    parse_lr_grids,
    parse_sizes,
    sweep,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "transfer",
        help="sweep the learning rate across widths or depths: does the optimum transfer?",
        description=(
            "Train the grid optimizers x sizes x learning rates x seeds (resumable: finished "
            "runs are read back), then write transfer.json, transfer.png and, for widths, "
            "the coordinate check coord.json/coord.png under --out. The smallest size is the "
            "proxy; a parametrization transfers when the best learning rate moves at most one "
            "grid step across the sizes and the best loss falls with size."
        ),
        epilog=example_epilog(
            "everyscale transfer --model gpt --data shakespeare --widths 64,128,256 "
            "--optimizers scion,adamw --lr-grid scion=2^-13:2^-9 --lr-grid adamw=2^-11:2^-5 "
            "--steps 200 --out runs/transfer-width",
            "everyscale transfer --optimizers scion --option scion.radius=1 "
            "--option scion.output_radius=1024 --out runs/transfer-radius1",
        ),
        formatter_class=help_formatter(),
    )
    defaults = SweepConfig()
    p.add_argument("--model", default=defaults.model, help="gpt, mlp or cnn (default gpt)")
    p.add_argument(
        "--data", default=defaults.data, help="dataset name or path (default %(default)s)"
    )
    p.add_argument(
        "--widths",
        default="64,128,256,512",
        help="comma list of widths to sweep (default %(default)s)",
    )
    p.add_argument(
        "--depths",
        default=None,
        help="comma list of depths: sweep depth at fixed --width instead of width",
    )
    p.add_argument(
        "--width",
        type=int,
        default=defaults.width,
        help="width of a depth sweep (default %(default)s)",
    )
    p.add_argument(
        "--depth",
        type=int,
        default=defaults.depth,
        help="depth of a width sweep (default %(default)s)",
    )
    p.add_argument(
        "--optimizers", default="scion,adamw", help="comma list of presets (default %(default)s)"
    )
    p.add_argument(
        "--lr-grid",
        action="append",
        help="GRID or PRESET=GRID (repeatable), GRID like 2^-14:2^-1, 2^-10:2^-2:2 or "
        "0.001,0.01 (default 2^-14:2^-1)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=defaults.seeds,
        help="seeds per grid point (default %(default)s)",
    )
    p.add_argument(
        "--steps", type=int, default=defaults.steps, help="steps per run (default %(default)s)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="examples per step (default %(default)s)",
    )
    p.add_argument(
        "--context", type=int, default=defaults.context, help="GPT context (default %(default)s)"
    )
    p.add_argument("--heads", type=int, default=None, help="fixed GPT heads (default width/16)")
    p.add_argument(
        "--head-dim",
        type=int,
        default=defaults.head_dim,
        help="GPT head dimension when --heads is not given (default %(default)s)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=defaults.alpha,
        help="residual branches scaled (L/L_min)^-alpha: 1 (CompleteP, default) or 0.5 (depth-muP)",
    )
    p.add_argument(
        "--width-rule",
        choices=("none", "mup"),
        default=defaults.width_rule,
        help="none: the preset as is (standard parametrization for adamw/sgd); mup: muP lr factors",
    )
    p.add_argument(
        "--init",
        default=str(defaults.init),
        help="RADIUS (default 1): on each role's norm ball at that radius; preset: at the "
        "preset's radii; default: the model's own initialization (AdamW/SGD always keep it)",
    )
    p.add_argument(
        "--schedule",
        default=defaults.schedule,
        help="constant, linear, cosine or wsd (default %(default)s)",
    )
    p.add_argument(
        "--val-windows",
        type=int,
        default=defaults.val_windows,
        help="validation windows for the final loss (default %(default)s)",
    )
    p.add_argument(
        "--coord-steps",
        type=int,
        default=defaults.coord_steps,
        help="steps of the coordinate check, 0 skips it (default %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=defaults.threads,
        help="torch threads per run (default %(default)s)",
    )
    add_option_flag(p, per_optimizer=True)
    p.add_argument("--out", required=True, help="directory for runs and results")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def parse_options(items: list[str], optimizers: list[str]) -> dict[str, dict]:
    """``--option`` values as per-preset options: ``["scion.radius=1", "weight_decay=0"]`` ->
    ``{"scion": {"radius": 1, "weight_decay": 0}, ...}``.

    ``PRESET.KEY=VALUE`` applies to that preset, a plain ``KEY=VALUE`` to every one of
    ``optimizers``; values by :func:`everyscale.cliargs.parse_value`.
    """
    options: dict[str, dict] = {}
    for item in items:
        key, value = parse_option(item, "--option")
        preset, dot, name = key.rpartition(".")
        if dot and (not preset or not name):
            raise ValueError(
                f"--option expects KEY=VALUE or PRESET.KEY=VALUE (e.g. scion.radius=1), "
                f"got {item!r}"
            )
        targets = [preset] if dot else optimizers
        if dot and preset not in optimizers:
            raise ValueError(
                f"--option {item}: {preset!r} is not among --optimizers {','.join(optimizers)}"
            )
        for target in targets:
            options.setdefault(target, {})[name] = value
    return options


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The :class:`SweepConfig` an ``everyscale transfer`` command line describes."""
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    return SweepConfig(
        model=args.model,
        data=args.data,
        widths=parse_sizes(args.widths, "widths"),
        depths=parse_sizes(args.depths, "depths") if args.depths else None,
        width=args.width,
        depth=args.depth,
        optimizers=optimizers,
        lrs=parse_lr_grids(args.lr_grid or ["2^-14:2^-1"], optimizers),
        seeds=args.seeds,
        steps=args.steps,
        batch_size=args.batch_size,
        context=args.context,
        heads=args.heads,
        head_dim=args.head_dim,
        alpha=args.alpha,
        width_rule=args.width_rule,
        init=parse_init(args.init),
        schedule=args.schedule,
        val_windows=args.val_windows,
        coord_steps=args.coord_steps,
        threads=args.threads,
        options=parse_options(args.options, optimizers),
        out=args.out,
    )


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.4f}"


def report(result: dict) -> str:
    """A plain-text table of the sweep: best learning rate and loss per optimizer and size."""
    axis = result["axis"]
    lines = [f"{'optimizer':<14}{axis:>7}{'best lr':>12}{'best loss':>11}{'diverged':>10}"]
    for opt, entry in result["optimizers"].items():
        for size, s in entry["sizes"].items():
            edge = " (grid edge)" if s["best_at_grid_edge"] else ""
            best_lr = f"{s['best_lr']:.3g}" if s["best_lr"] is not None else "-"
            lines.append(
                f"{opt:<14}{size:>7}{best_lr:>12}{_fmt(s['best_loss']):>11}"
                f"{s['diverged_runs']:>10}{edge}"
            )
        fine = entry["interpolated_shift_log2"]
        if fine is not None:
            lines.append(f"{opt}: interpolated optima spread over {fine:.2f} factors of 2")
        lines.append(
            f"{opt}: optimum moves {entry['best_lr_shift_steps']} grid steps; best loss falls "
            f"with {axis}: {entry['best_loss_falls_with_size']}; transfers: {entry['transfers']}"
        )
    steps = result.get("config", {}).get("coord_steps", "")
    for opt, spread in result.get("coord_max_spread", {}).items():
        lines.append(
            f"coordinate check {opt}: largest spread across widths, steps 1-{steps}: {spread:.3f}x"
        )
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The sweep as Markdown tables: loss at every learning rate, per optimizer and size."""
    axis, out = result["axis"], []
    for opt, entry in result["optimizers"].items():
        lrs = next(iter(entry["sizes"].values()))["lrs"]
        header = [axis, *(f"2^{math.log2(lr):g}" for lr in lrs), "best lr", "interpolated"]
        out.append(f"**{opt}** (loss = final validation loss, mean over seeds; inf = diverged)\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for size, s in entry["sizes"].items():
            cells = []
            for i, loss in enumerate(s["mean_loss"]):
                text = _fmt(loss)
                cells.append(f"**{text}**" if i == s["best_lr_index"] else text)
            best = f"2^{math.log2(s['best_lr']):g}" if s["best_lr"] is not None else "-"
            fine = s["best_lr_interpolated"]
            fine = f"2^{math.log2(fine):.2f}" if fine is not None else "-"
            out.append(f"| {size} | " + " | ".join(cells) + f" | {best} | {fine} |")
        out.append(
            f"\noptimum moves {entry['best_lr_shift_steps']} grid step(s); best loss falls with "
            f"{axis}: {entry['best_loss_falls_with_size']}; optimum inside the grid: "
            f"{entry['optimum_inside_grid']}\n"
        )
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = sweep(config, progress=not args.quiet)
    print(report(result))
    print(f"wrote {config.out}/transfer.json and transfer.png")
    return 0
