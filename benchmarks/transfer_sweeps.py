"""The acceptance sweeps of issue 5: does the best learning rate transfer across width / depth?

    python benchmarks/transfer_sweeps.py width   # GPT, byte-level Shakespeare, widths 16..256
    python benchmarks/transfer_sweeps.py depth   # GPT, width 32, depths 2..8, multiplier 1/L
    python benchmarks/transfer_sweeps.py mlp     # MLP on digits, widths 32..256
    python benchmarks/transfer_sweeps.py width --quick   # a minute: the same code, tiny grid

Each writes transfer.json / transfer.png (and coord.json / coord.png for widths) under
``runs/transfer-<name>`` (resumable: rerun to finish an interrupted sweep), then prints the
table and, per optimizer, how far its optimum moved in grid steps next to AdamW's, the peer
measured in the same run. Runtimes on the shared 2-core machine are in docs/transfer.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from everyscale.scale.cli import report
from everyscale.scale.transfer import SweepConfig, parse_lr_grid, sweep

# Scion's MLP recipe: radius 1 and output radius 2^10 (its reference README); the preset's
# defaults (50 and 3000) are the GPT's.
MLP_RADII = {"radius": 1.0, "output_radius": 1024.0}


def config(name: str, quick: bool) -> SweepConfig:
    if name == "width":
        cfg = SweepConfig(
            model="gpt",
            data="shakespeare",
            widths=[16, 32, 64, 128, 256],
            depth=2,
            optimizers=["scion", "uscion", "adamw"],
            lrs={
                "scion": parse_lr_grid("2^-13:2^-9"),
                "uscion": parse_lr_grid("2^-12:2^-10"),
                "adamw": parse_lr_grid("2^-11:2^-5"),
            },
            seeds=1,
            steps=200,
            batch_size=16,
            context=64,
            out="runs/transfer-width",
        )
    elif name == "depth":
        cfg = SweepConfig(
            model="gpt",
            data="shakespeare",
            depths=[2, 4, 8],
            width=32,
            alpha=1.0,
            optimizers=["scion", "adamw"],
            lrs={"scion": parse_lr_grid("2^-13:2^-9"), "adamw": parse_lr_grid("2^-10:2^-6")},
            seeds=1,
            steps=150,
            batch_size=16,
            context=64,
            out="runs/transfer-depth",
        )
    elif name == "mlp":
        cfg = SweepConfig(
            model="mlp",
            data="digits",
            widths=[32, 64, 128, 256],
            depth=3,
            optimizers=["scion", "adamw"],
            lrs={"scion": parse_lr_grid("2^-11:2^-5"), "adamw": parse_lr_grid("2^-11:2^-4")},
            options={"scion": MLP_RADII},
            seeds=2,
            steps=100,
            batch_size=64,
            out="runs/transfer-mlp-100",
        )
    else:
        raise ValueError(f"sweep: choose width, depth or mlp, got {name!r}")
    if quick:
        if cfg.depths:
            cfg.depths = cfg.depths[:2]
        else:
            cfg.widths = cfg.widths[:2]
        cfg.lrs = {opt: grid[1:3] for opt, grid in cfg.lrs.items()}
        cfg.seeds, cfg.steps = 1, 10
        cfg.out += "-quick"
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", choices=("width", "depth", "mlp"))
    parser.add_argument("--quick", action="store_true", help="tiny grid, about a minute")
    parser.add_argument("--out", help="override the output directory")
    args = parser.parse_args(argv)
    cfg = config(args.sweep, args.quick)
    if args.out:
        cfg.out = args.out
    start = time.perf_counter()
    result = sweep(cfg)
    print(report(result))
    peer = result["optimizers"].get("adamw")
    for opt, entry in result["optimizers"].items():
        if opt != "adamw" and peer is not None:
            print(
                f"{opt}_shift_steps: {entry['best_lr_shift_steps']}  "
                f"(adamw_shift_steps: {peer['best_lr_shift_steps']}, same run)"
            )
    print(f"sweep_wall_seconds: {time.perf_counter() - start:.0f} ({result['runs_trained']} runs)")
    print(f"train_seconds_all_runs: {result['train_seconds_all_runs']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
