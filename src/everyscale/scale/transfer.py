"""The transfer check: sweep the learning rate at several widths (or depths) and compare optima.

muP's standard experiment [Y, Figure 1], sized for a CPU: for each optimizer, train
the same architecture at several sizes over a grid of learning rates (powers of 2), same data
and steps, a few seeds. A parametrization *transfers* when

1. the best learning rate moves at most one grid step across the sizes, and
2. at the best learning rate, the bigger model is better (the best loss falls with size).

Diverged runs count as loss ``inf``: they are never dropped, so a learning rate at which any
seed diverges cannot be the best. :func:`analyse` turns run records into the ``transfer.json``
dictionary; :func:`sweep` trains the grid (resumable: a finished run with the same settings is
read back, not retrained, by :func:`everyscale.train.run_or_reuse`).

Reference: [Y] Yang et al., *Tensor Programs V* (2022).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from everyscale.scale.coord import CoordResult, coord_check
from everyscale.scale.parametrization import BaseShape, base_shapes, init_, plan
from everyscale.scale.plots import plot_coord, plot_transfer
from everyscale.scale.rules import residual_multiplier, update_family
from everyscale.train.checkpoint import atomic_write_text

_POWER = re.compile(r"^\s*([0-9.]+)\s*\^\s*(-?[0-9.]+)\s*$")


def _parse_number(text: str) -> float:
    text = text.strip()
    match = _POWER.match(text)
    try:
        value = float(match.group(1)) ** float(match.group(2)) if match else float(text)
    except (ValueError, OverflowError):
        raise ValueError(
            f"--lr-grid: cannot read {text!r}; write numbers (0.01), powers (2^-7), a range of "
            "powers (2^-14:2^-1, optionally :STEP in the exponent) or a comma list of those"
        ) from None
    return value


def parse_lr_grid(text: str) -> list[float]:
    """Read a learning-rate grid: ``"2^-14:2^-1"`` (every power of 2 between, both included),
    ``"2^-10:2^-2:2"`` (exponent step 2), ``"0.001,0.003,0.01"``, or a comma list of these.

    Returns the sorted distinct positive values; an empty grid, a non-positive or non-finite
    value is a ``ValueError``.
    """
    if not text or not text.strip():
        raise ValueError("--lr-grid: the grid is empty; give e.g. 2^-10:2^-3 or 0.001,0.01")
    values: list[float] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) == 1:
            values.append(_parse_number(parts[0]))
            continue
        if len(parts) > 3:
            raise ValueError(f"--lr-grid: a range is START:END[:STEP], got {item!r}")
        start, end = (_POWER.match(p) for p in parts[:2])
        if not start or not end or start.group(1) != end.group(1):
            raise ValueError(
                "--lr-grid: a range needs two powers of the same base, like 2^-14:2^-1; "
                f"got {item!r}"
            )
        step = _parse_number(parts[2]) if len(parts) == 3 else 1.0
        if step <= 0:
            raise ValueError(f"--lr-grid: the exponent step must be > 0, got {step}")
        base = float(start.group(1))
        low, high = float(start.group(2)), float(end.group(2))
        if low > high:
            raise ValueError(
                f"--lr-grid: a range runs from low to high, like 2^-14:2^-1; got {item!r}"
            )
        count = math.floor((high - low) / step + 1e-9) + 1
        values.extend(base ** (low + i * step) for i in range(count))
    if not values:
        raise ValueError("--lr-grid: the grid is empty; give e.g. 2^-10:2^-3 or 0.001,0.01")
    for value in values:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"--lr-grid: every learning rate must be finite and > 0, got {value}")
    return sorted(set(values))


def parse_lr_grids(texts: Sequence[str], optimizers: Sequence[str]) -> dict[str, list[float]]:
    """Per-optimizer grids from ``--lr-grid`` values: ``GRID`` (every optimizer without its
    own) or ``PRESET=GRID`` (that optimizer), e.g. ``["scion=2^-6:2^-2", "adamw=2^-11:2^-7"]``."""
    shared, own = None, {}
    for text in texts:
        name, sep, grid = text.partition("=")
        if sep:
            if name.strip() not in optimizers:
                raise ValueError(
                    f"--lr-grid: {name.strip()!r} is not among --optimizers {','.join(optimizers)}"
                )
            own[name.strip()] = parse_lr_grid(grid)
        else:
            shared = parse_lr_grid(text)
    missing = [opt for opt in optimizers if opt not in own]
    if missing and shared is None:
        raise ValueError(f"--lr-grid: no grid for {', '.join(missing)}; add GRID or PRESET=GRID")
    return {opt: own.get(opt, shared) for opt in optimizers}


def parse_init(value: str | float) -> str | float:
    """``"default"``, ``"preset"`` or a positive radius (``1``, ``"0.5"``) for :func:`init_`."""
    if value in ("default", "preset"):
        return value
    try:
        radius = float(value)
    except (TypeError, ValueError):
        radius = math.nan
    if not math.isfinite(radius) or radius <= 0:
        raise ValueError(f"init: choose 'default', 'preset' or a radius > 0, got {value!r}")
    return radius


def parse_sizes(text: str, name: str) -> list[int]:
    """Read a comma list of positive whole numbers (``--widths 64,128,256``), sorted, distinct."""
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{name}: give whole numbers separated by commas, got {text!r}") from None
    if not sizes:
        raise ValueError(f"{name}: the list is empty; give e.g. 64,128,256")
    if any(s < 1 for s in sizes):
        raise ValueError(f"{name}: every entry must be >= 1, got {text!r}")
    return sorted(set(sizes))


def interpolated_optimum(lrs: Sequence[float], losses: Sequence[float], best: int) -> float | None:
    """The learning rate at the vertex of the parabola through the best grid point and its two
    neighbours, in ``log2(lr)``: a finer estimate of the optimum than the grid point itself.

    ``None`` when the best point is on the grid's edge, a neighbour diverged, or the three
    points are not convex (no interior minimum to interpolate).
    """
    if best in (0, len(lrs) - 1):
        return None
    (x0, x1, x2), (f0, f1, f2) = (
        [math.log2(lr) for lr in lrs[best - 1 : best + 2]],
        losses[best - 1 : best + 2],
    )
    if not all(math.isfinite(f) for f in (f0, f1, f2)):
        return None
    # Vertex of the interpolating parabola (three-point formula).
    numerator = (x1 - x0) ** 2 * (f1 - f2) - (x1 - x2) ** 2 * (f1 - f0)
    denominator = (x1 - x0) * (f1 - f2) - (x1 - x2) * (f1 - f0)
    if denominator >= 0:  # flat or concave: no interior minimum
        return None
    return 2.0 ** (x1 - 0.5 * numerator / denominator)


def analyse(
    records: Sequence[dict],
    *,
    axis: str,
    sizes: Sequence[int],
    lrs: Sequence[float] | Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    optimizers: Sequence[str],
) -> dict:
    """Summarize a sweep: per optimizer and size, the loss at every learning rate and seed,
    the best learning rate, its shift across sizes, and whether the best loss falls with size.

    Args:
        records: one dict per run with keys ``optimizer, size, lr, seed, loss`` (``loss`` is
            the final validation loss; ``inf`` or ``nan`` for a diverged run).
        axis: ``"width"`` or ``"depth"`` (names the sizes).
        sizes, lrs, seeds, optimizers: the grid (``lrs`` one list for all optimizers, or one
            per optimizer); a grid point without a record is an error.

    The mean over seeds is ``inf`` if any seed diverged. ``best_lr_shift_steps`` is the
    largest minus the smallest grid index of the best learning rate over the sizes (with a
    power-of-2 grid, one step is a factor of 2); ``best_at_grid_edge`` flags an optimum on
    the grid's edge, where the true optimum may lie outside the grid. ``transfers`` needs all
    three: a shift of at most one step, a best loss that falls with size, and every optimum
    inside the grid. ``best_lr_interpolated`` refines each optimum with a parabola in
    ``log2(lr)`` (:func:`interpolated_optimum`) and ``interpolated_shift_log2`` is the spread
    of those over the sizes, in factors of 2 (``None`` where an optimum is not interior).
    """
    grids = {opt: sorted(lrs[opt] if isinstance(lrs, Mapping) else lrs) for opt in optimizers}
    table: dict[tuple[str, int, float, int], float] = {}
    for r in records:
        loss = float(r["loss"])
        table[(r["optimizer"], int(r["size"]), float(r["lr"]), int(r["seed"]))] = (
            loss if math.isfinite(loss) else math.inf
        )
    out: dict = {
        "axis": axis,
        "sizes": list(sizes),
        "lrs": grids,
        "seeds": list(seeds),
        "optimizers": {},
    }
    for opt in optimizers:
        grid = grids[opt]
        per_size: dict[str, dict] = {}
        for size in sizes:
            losses, means = [], []
            for lr in grid:
                row = []
                for seed in seeds:
                    key = (opt, int(size), float(lr), int(seed))
                    if key not in table:
                        raise ValueError(
                            f"records: no run for optimizer={opt} {axis}={size} lr={lr:g} "
                            f"seed={seed}; train the full grid before analysing it"
                        )
                    row.append(table[key])
                losses.append(row)
                means.append(math.inf if any(math.isinf(v) for v in row) else sum(row) / len(row))
            finite = [i for i, m in enumerate(means) if math.isfinite(m)]
            best = min(finite, key=lambda i: means[i]) if finite else None
            per_size[str(size)] = {
                "lrs": grid,
                "losses": losses,
                "mean_loss": means,
                "diverged_runs": sum(math.isinf(v) for row in losses for v in row),
                "best_lr_index": best,
                "best_lr": grid[best] if best is not None else None,
                "best_loss": means[best] if best is not None else math.inf,
                "best_at_grid_edge": best in (0, len(grid) - 1) if best is not None else None,
                "best_lr_interpolated": (
                    interpolated_optimum(grid, means, best) if best is not None else None
                ),
            }
        indices = [e["best_lr_index"] for e in per_size.values()]
        best_losses = [e["best_loss"] for e in per_size.values()]
        all_found = all(i is not None for i in indices)
        shift = max(indices) - min(indices) if all_found else None
        falls = all_found and all(b < a for a, b in itertools.pairwise(best_losses))
        inside = all_found and not any(e["best_at_grid_edge"] for e in per_size.values())
        fine = [e["best_lr_interpolated"] for e in per_size.values()]
        fine_shift = (
            max(map(math.log2, fine)) - min(map(math.log2, fine))
            if all(f is not None for f in fine)
            else None
        )
        out["optimizers"][opt] = {
            "sizes": per_size,
            "best_lrs": [e["best_lr"] for e in per_size.values()],
            "best_lrs_interpolated": fine,
            "interpolated_shift_log2": fine_shift,
            "best_losses": best_losses,
            "best_lr_shift_steps": shift,
            "best_loss_falls_with_size": bool(falls),
            "optimum_inside_grid": inside,
            # An optimum on the grid's edge may lie outside it: no verdict of transfer then.
            "transfers": bool(all_found and shift <= 1 and falls and inside),
        }
    return out


# ----------------------------------------------------------------------------- the sweep


@dataclass
class SweepConfig:
    """A learning-rate sweep across widths (or depths): the grid and the shared training setup.

    ``widths`` are swept unless ``depths`` is given (then ``width`` is fixed); ``depth`` is the
    fixed depth of a width sweep. The smallest size is the proxy: the base shape of the
    :class:`~everyscale.scale.parametrization.ScalePlan` and, for depth, of the residual
    multiplier ``(L / L_min)^-alpha``. GPT heads: ``heads`` fixed, or (default) ``width //
    head_dim``. ``init`` (see :func:`parse_init`): a number re-initializes every model on its
    preset's norm balls at that radius (:func:`~everyscale.scale.parametrization.init_`),
    ``"preset"`` at the preset's own radii, ``"default"`` keeps the model's initialization;
    geometries without a ball (AdamW, SGD) always keep the model's initialization, i.e. the
    standard parametrization.
    """

    model: str = "gpt"
    data: str = "shakespeare"
    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    depths: list[int] | None = None
    optimizers: list[str] = field(default_factory=lambda: ["scion", "adamw"])
    lrs: dict[str, list[float]] = field(
        default_factory=lambda: dict.fromkeys(("scion", "adamw"), parse_lr_grid("2^-14:2^-1"))
    )
    seeds: int = 2
    steps: int = 200
    batch_size: int = 16
    context: int = 64
    width: int = 128
    depth: int = 2
    heads: int | None = None
    head_dim: int = 16
    alpha: float = 1.0
    width_rule: str = "none"
    init: str | float = 1.0
    schedule: str = "wsd"
    val_windows: int = 128
    coord_steps: int = 3
    # One thread per run: on a shared 2-core machine, two threads per process oversubscribe
    # the cores and a step runs up to 10x slower (measured); None keeps torch's default.
    threads: int | None = 1
    # Preset options per optimizer, e.g. {"scion": {"radius": 1.0, "output_radius": 1024.0}}.
    options: dict[str, dict] = field(default_factory=dict)
    out: str = "runs/transfer"

    @property
    def axis(self) -> str:
        return "depth" if self.depths else "width"

    @property
    def sizes(self) -> list[int]:
        return sorted(set(self.depths if self.depths else self.widths))

    def shape(self, size: int) -> dict:
        """Model shape at one size of the sweep: width, depth, heads, residual multiplier."""
        width = self.width if self.axis == "depth" else size
        depth = size if self.axis == "depth" else self.depth
        shape = {"width": width, "depth": depth}
        if self.model == "gpt":
            shape["heads"] = self.heads if self.heads else width // self.head_dim
            base_depth = min(self.sizes) if self.axis == "depth" else depth
            shape["residual_multiplier"] = residual_multiplier(depth, base_depth, self.alpha)
        return shape

    def validate(self) -> None:
        """Raise ``ValueError`` naming the setting to change; runs before any training."""
        if len(self.sizes) < 2:
            raise ValueError(f"{self.axis}s: give at least two sizes to compare, got {self.sizes}")
        if not self.optimizers:
            raise ValueError("optimizers: give at least one preset, e.g. --optimizers scion,adamw")
        for preset in self.optimizers:
            update_family(preset)
            grid = self.lrs.get(preset)
            if not grid:
                raise ValueError(f"--lr-grid: no learning rates for {preset}; give e.g. 2^-10:2^-3")
            if any(not math.isfinite(lr) or lr <= 0 for lr in grid):
                raise ValueError(f"--lr-grid: every learning rate must be finite and > 0: {grid}")
        if self.seeds < 1:
            raise ValueError(f"seeds: give at least 1 seed, got {self.seeds}")
        parse_init(self.init)
        if self.width_rule not in ("none", "mup"):
            raise ValueError(f"width-rule: choose 'none' or 'mup', got {self.width_rule!r}")
        if self.model == "gpt":
            for size in self.sizes:
                width = self.width if self.axis == "depth" else size
                if self.heads and width % self.heads:
                    raise ValueError(
                        f"widths: width {width} is not divisible by heads={self.heads}; use "
                        f"widths that are multiples of {self.heads} or change --heads"
                    )
                if not self.heads and width % self.head_dim:
                    raise ValueError(
                        f"widths: width {width} is not divisible by head-dim={self.head_dim}; "
                        f"use widths that are multiples of {self.head_dim} or change --head-dim"
                    )
        for size in self.sizes:
            self.train_config("scion", size, 1.0, 0).validate(check_optimizer=False)

    def run_dir(self, optimizer: str, size: int, lr: float, seed: int) -> Path:
        return (
            Path(self.out)
            / "runs"
            / optimizer
            / f"{self.axis}{size}"
            / f"lr{lr:.6e}"
            / (f"seed{seed}")
        )

    def train_config(self, optimizer: str, size: int, lr: float, seed: int):
        from everyscale.train import TrainConfig

        return TrainConfig(
            model=self.model,
            data=self.data,
            context=self.context,
            optimizer=optimizer,
            lr=lr,
            schedule=self.schedule,
            steps=self.steps,
            batch_size=self.batch_size,
            seed=seed,
            val_windows=self.val_windows,
            threads=self.threads,
            optimizer_options=dict(self.options.get(optimizer, {})),
            keep_checkpoint=False,
            resume=True,
            quiet=True,
            out=str(self.run_dir(optimizer, size, lr, seed)),
            **self.shape(size),
        )

    def optimizer_factory(
        self, optimizer: str, lr: float, proxy: Mapping[str, Sequence[int]]
    ) -> Callable[[nn.Module], torch.optim.Optimizer]:
        """:func:`make_optimizer_factory` with this sweep's settings, relative to ``proxy``."""
        return make_optimizer_factory(optimizer, lr, proxy, **self._factory_settings(optimizer))

    def optimizer_fingerprint(
        self, optimizer: str, lr: float, proxy: Mapping[str, Sequence[int]]
    ) -> dict:
        """:func:`factory_fingerprint` of :meth:`optimizer_factory` (what a reuse must match)."""
        return factory_fingerprint(optimizer, lr, proxy, **self._factory_settings(optimizer))

    def _factory_settings(self, optimizer: str) -> dict:
        """The keyword settings the factory and its fingerprint share (one list for both)."""
        return dict(
            alpha=self.alpha,
            width_rule=self.width_rule,
            init=self.init,
            options=self.options.get(optimizer),
        )

    def build(self, size: int, dataset) -> nn.Module:
        """The model at one size (used for the proxy's base shapes and the coordinate check)."""
        from everyscale.train.loop import build_model_for

        return build_model_for(self.train_config("scion", size, 1.0, 0), dataset)


def make_optimizer_factory(
    preset: str,
    lr: float,
    base: nn.Module | Mapping[str, Sequence[int]] | BaseShape,
    *,
    alpha: float = 1.0,
    width_rule: str = "none",
    init: str | float = 1.0,
    width: int | None = None,
    options: Mapping[str, object] | None = None,
) -> Callable[[nn.Module], torch.optim.Optimizer]:
    """``model -> optimizer`` for a scaled run: initialize on the preset's norm balls (``init``
    a radius or ``"preset"``; ``"default"`` leaves the model as built), build the preset at
    ``lr``, and apply the :class:`ScalePlan`'s per-parameter learning-rate factors relative to
    ``base`` (the proxy). ``options`` go to the preset (e.g. ``radius``, ``output_radius``)."""
    from everyscale.optim import optimizer as build_optimizer

    init = parse_init(init)
    options = dict(options or {})

    def factory(model: nn.Module) -> torch.optim.Optimizer:
        if init == "preset":
            init_(model, preset, **options)
        elif init != "default":
            init_(model, preset, init_radius=init, **options)
        example = model.example_input() if hasattr(model, "example_input") else None
        scaling = plan(
            model,
            preset,
            base,
            width=width,
            alpha=alpha,
            width_rule=width_rule,
            example_input=example,
        )
        return scaling.apply(build_optimizer(model, preset, lr=lr, **options), model)

    return factory


def factory_fingerprint(
    preset: str,
    lr: float,
    base: Mapping[str, Sequence[int]],
    *,
    alpha: float = 1.0,
    width_rule: str = "none",
    init: str | float = 1.0,
    width: int | None = None,
    options: Mapping[str, object] | None = None,
) -> dict:
    """The settings of :func:`make_optimizer_factory` as JSON-able data, for
    :func:`everyscale.train.run_or_reuse`: a run is reused only under the same ones. The
    proxy's shapes enter as a short hash."""
    shapes = json.dumps(sorted((name, list(shape)) for name, shape in base.items()))
    return {
        "factory": "everyscale.scale.make_optimizer_factory",
        "preset": preset,
        "lr": lr,
        "proxy_shapes_sha256": hashlib.sha256(shapes.encode()).hexdigest()[:16],
        "alpha": alpha,
        "width_rule": width_rule,
        "init": init,
        "width": width,
        "options": dict(options or {}),
    }


def _check_sweep_settings(config: SweepConfig, out: Path) -> None:
    """Refuse to reuse runs trained under other sweep-level settings.

    ``init``, ``width_rule`` and ``alpha`` change how a run is initialized and which learning
    rate each parameter gets, but a run's own ``config.json`` does not record them; they are
    kept in ``sweep.json`` beside the runs and must match on resume.
    """
    settings = {"init": config.init, "width_rule": config.width_rule, "alpha": config.alpha}
    path = out / "sweep.json"
    if path.exists() and (out / "runs").exists():
        stored = json.loads(path.read_text())
        changed = sorted(k for k, v in settings.items() if stored.get(k) != v)
        if changed:
            was = ", ".join(f"{k}={stored.get(k)!r}" for k in changed)
            raise ValueError(
                f"out: the runs in {out} were trained with {was}; use a new --out or the "
                "settings they were trained with"
            )
    atomic_write_text(path, json.dumps(settings))


def sweep(config: SweepConfig, *, progress: bool = True) -> dict:
    """Train the grid (optimizers x sizes x learning rates x seeds), resumably, and analyse it.

    Each run goes through :func:`everyscale.train.run_or_reuse`: a finished run with the same
    settings is read back, not retrained; interrupted ones resume from their checkpoint; a
    finished run with other settings is refused. Writes under ``config.out``:
    ``transfer.json`` (:func:`analyse` plus the sweep's settings and time), ``transfer.png``,
    and for width sweeps ``coord.json`` / ``coord.png`` (:func:`coordinate_check`), and
    ``sweep.json`` (the settings a resume must match, :func:`_check_sweep_settings`).
    ``config.out`` is locked for the sweep's life (:class:`everyscale.train.rundir.RunLock`;
    each run locks its own folder too): a second sweep on it is refused.
    """
    from everyscale.train.rundir import RunLock

    config.validate()
    with RunLock(config.out, flag="--out"):
        return _sweep_locked(config, progress)


def _sweep_locked(config: SweepConfig, progress: bool) -> dict:
    from tqdm.auto import tqdm

    from everyscale.train import load_dataset, run_or_reuse

    out = Path(config.out)
    _check_sweep_settings(config, out)
    dataset = load_dataset(
        config.data,
        context=config.context if config.model == "gpt" else None,
        max_val_windows=config.val_windows,
    )
    proxy = base_shapes(config.build(min(config.sizes), dataset))
    grid = [
        (opt, size, lr, seed)
        for opt in config.optimizers
        for size in config.sizes
        for lr in config.lrs[opt]
        for seed in range(config.seeds)
    ]
    records, trained, start = [], 0, time.perf_counter()
    bar = tqdm(grid, desc=f"transfer ({config.axis})", unit="run", disable=not progress)
    for opt, size, lr, seed in bar:
        bar.set_postfix_str(f"{opt} {config.axis}={size} lr={lr:.3g} seed={seed}")
        summary = run_or_reuse(
            config.train_config(opt, size, lr, seed),
            optimizer_factory=config.optimizer_factory(opt, lr, proxy),
            fingerprint=config.optimizer_fingerprint(opt, lr, proxy),
        )
        trained += not summary["reused"]
        loss = _final_loss(summary)
        records.append({"optimizer": opt, "size": size, "lr": lr, "seed": seed, "loss": loss})
    result = analyse(
        records,
        axis=config.axis,
        sizes=config.sizes,
        lrs=config.lrs,
        seeds=list(range(config.seeds)),
        optimizers=config.optimizers,
    )
    result["config"] = asdict(config)
    result["runs_trained"] = trained
    result["runs_reused"] = len(grid) - trained
    result["wall_seconds"] = time.perf_counter() - start  # this invocation only
    # Training time of every run of the grid, reused ones included (from their summaries).
    summaries = [config.run_dir(*key) / "summary.json" for key in grid]
    result["train_seconds_all_runs"] = sum(
        json.loads(path.read_text()).get("wall_seconds") or 0.0
        for path in summaries
        if path.exists()
    )
    if config.axis == "width" and config.coord_steps > 0:
        coord = coordinate_check(config, result, dataset, proxy)
        atomic_write_text(
            out / "coord.json", json.dumps({opt: c.to_json() for opt, c in coord.items()}, indent=1)
        )
        plot_coord(coord, out / "coord.png")
        result["coord_max_spread"] = {
            opt: c.max_spread(range(1, c.steps + 1))[0] for opt, c in coord.items()
        }
    atomic_write_text(out / "transfer.json", json.dumps(result, indent=1))
    plot_transfer(result, out / "transfer.png")
    return result


def _final_loss(summary: dict) -> float:
    """A run's final validation loss; ``inf`` when it diverged (counted, never dropped)."""
    loss = summary.get("final_val_loss")
    if summary["status"] == "diverged" or loss is None or not math.isfinite(loss):
        return math.inf
    return float(loss)


def coordinate_check(
    config: SweepConfig, result: dict, dataset, proxy: Mapping[str, Sequence[int]]
) -> dict[str, CoordResult]:
    """The coordinate check of each optimizer across the sweep's widths, at the best learning
    rate of the smallest width (the grid's middle if every run there diverged)."""
    generator = torch.Generator().manual_seed(0)
    batches = [
        dataset.sample_batch(config.batch_size, generator) for _ in range(config.coord_steps)
    ]
    out = {}
    for opt in config.optimizers:
        grid = config.lrs[opt]
        lr = result["optimizers"][opt]["best_lrs"][0] or grid[len(grid) // 2]
        out[opt] = coord_check(
            lambda width: config.build(width, dataset),
            config.sizes,
            config.optimizer_factory(opt, lr, proxy),
            batches,
            steps=config.coord_steps,
        )
        out[opt].lr = lr
        out[opt].label = f"{opt}, lr {lr:.3g}"
    return out
