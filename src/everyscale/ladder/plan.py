"""Plan a scaling ladder: from a budget name to the list of runs it trains.

A ladder has three stages:

1. ``sweep``: the learning rate of the preset is swept (a grid of powers of 2) on the
   smallest model with the smallest token budget;
2. ``ladder``: every width is trained for every token budget with the best learning rate,
   transferred unchanged (the Spectral LMO makes the optimal learning rate width independent,
   [S] Pethick et al. 2025, Lemma C.6) and a warmup-stable-decay schedule, so each run ends
   annealed. With ``branches`` (the default) each width trains once, to the largest budget
   (its *trunk*), and every shorter budget is a cooldown branched from the trunk's stable
   phase (Hägele et al. 2024): the same run as trained alone, for its cooldown's tokens only;
3. ``target``: one held-out model, at least 4x the largest ladder model's parameters or
   tokens, whose validation loss is predicted before it is trained.

Counting (stated in every report): ``N`` is the number of parameters *without* the token
embedding and the output head (the engine's ``num_params(embeddings=False)``: the blocks and
norm gains, ``L (12 d^2 + 2 d) + d``; positions are rotary, without parameters) by default,
as Kaplan et al. 2020 [K] count, who found cleaner laws for small models this way; ``D`` is
the number of training tokens actually seen (steps x batch x context), and compute
``C = 6 N D`` (Hoffmann et al. 2022 [H]). ``C`` leaves out the head and attention FLOPs; the
engine's own count (``flops_per_token``, both included) is recorded for every run.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BUDGETS = ("tiny", "small", "medium", "large")
IMAGE_DATASETS = ("digits", "fashion-mnist")
TEXT_DATASETS = ("stdlib", "shakespeare")

# Every model in a ladder keeps its attention heads 16 wide, so the head count follows width.
HEAD_DIM = 16

# The minimum number of optimizer steps a run may have: fewer cannot anneal meaningfully.
MIN_STEPS = 8

# The held-out model must be at least this many times the largest ladder model in
# parameters or in tokens (issue 6), so the prediction is a real extrapolation.
TARGET_FACTOR = 4.0

# Budget presets. The sweep's grid is the preset's default learning rate (everyscale.optim's
# DEFAULT_LR, e.g. 2^-12 for scion) times 2^k for k in ``lr_steps``. "tiny" exists for tests
# (seconds); "small" is `make demo` (at most 5 minutes on 2 cores, held-out run included:
# measured 2 min 14 s on 2 idle cores); "medium" is the run behind docs/ladder.md (about
# 7 minutes on 2 idle cores); "large" has not been run. The three train two seeds at the
# smallest width (``smallest_seeds``), chosen on benchmarks/ladder_accuracy.py.
_BUDGET_DEFAULTS: dict[str, dict] = {
    "tiny": dict(
        widths=(16, 24, 32),
        tokens=(4_096, 8_192),
        target_width=None,  # None: the narrowest width with >= 4x the largest ladder model's N
        target_tokens=None,  # None: the largest ladder budget
        depth=1,
        context=32,
        batch_size=8,
        lr_steps=(0, 2),
        bootstrap=20,
        val_windows=16,
    ),
    "small": dict(
        widths=(32, 48, 64),
        tokens=(262_144, 524_288, 1_048_576),
        target_width=None,
        target_tokens=None,
        depth=2,
        context=64,
        batch_size=16,
        lr_steps=(-1, 0, 1, 2, 3),
        bootstrap=400,
        val_windows=256,
        smallest_seeds=2,
    ),
    "medium": dict(
        widths=(32, 48, 64, 96),
        tokens=(524_288, 1_048_576, 2_097_152),
        target_width=None,
        target_tokens=None,
        depth=2,
        context=64,
        batch_size=16,
        lr_steps=(-2, -1, 0, 1, 2, 3),
        bootstrap=1000,
        val_windows=512,
        smallest_seeds=2,
    ),
    "large": dict(
        widths=(64, 96, 128, 192),
        tokens=(4_194_304, 8_388_608, 16_777_216),
        target_width=None,
        target_tokens=None,
        depth=4,
        context=128,
        batch_size=32,
        lr_steps=(-2, -1, 0, 1, 2, 3),
        bootstrap=2000,
        val_windows=1024,
        smallest_seeds=2,
    ),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the ladder.

    ``lr`` is ``None`` for ladder and target runs until the sweep has chosen it.
    """

    name: str
    stage: str  # "sweep" | "ladder" | "target"
    width: int
    tokens: int
    lr: float | None = None
    replicate: int = 0  # which of the plan's seeds: the run trains with seed plan.seed + this


@dataclass(frozen=True)
class LadderPlan:
    """Everything that defines a ladder; two equal plans train the same runs.

    Token budgets are rounded down to whole steps of ``batch_size * context`` tokens.
    """

    budget: str
    preset: str
    data: str
    widths: tuple[int, ...]
    tokens: tuple[int, ...]
    target_width: int
    target_tokens: int
    depth: int
    context: int
    batch_size: int
    lr_grid: tuple[float, ...]
    bootstrap: int
    val_windows: int  # validation windows of `context` tokens (a fixed set)
    seed: int = 0
    seeds: int = 1  # runs per ladder point, seeds seed .. seed + seeds - 1 (the law fits all)
    smallest_seeds: int = 1  # runs per point at the smallest width (at least ``seeds``)
    schedule: str = "wsd"
    warmup: float = 0.0  # Scion's runs use no warmup ([S], Section 5)
    cooldown: float = 0.3  # linear decay over the last 30% of steps ([S], Section 5)
    cooldown_shape: str = "linear"  # or "sqrt": 1 - sqrt (Hägele et al. 2024)
    branches: bool = True  # one trunk per width, a cooldown branched per shorter budget
    # b of the stable phase's decay (s / S0)^-b after the sweep budget's stable phase S0, so a
    # run of D tokens ends it at the horizon's learning rate eta (D / D0)^-b (0: off).
    horizon_decay: float = 0.0
    embeddings: bool = False  # whether N counts the token embedding and the output head
    threads: int = 1  # torch threads per run (runs train side by side, see run_ladder)
    init_radius: float | None = 1.0  # start on the preset's norm balls at this radius (None: not)
    extra: dict = field(default_factory=dict)  # free-form notes recorded in the report

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context

    def steps_for(self, tokens: int) -> int:
        """Optimizer steps for a token budget (rounded down to whole steps)."""
        return tokens // self.tokens_per_step

    def heads_for(self, width: int) -> int:
        return max(1, width // HEAD_DIM)

    def sweep_runs(self) -> list[RunSpec]:
        """The learning-rate sweep: the smallest width with the smallest token budget."""
        width, tokens = min(self.widths), min(self.tokens)
        return [
            RunSpec(f"sweep-w{width}-lr{_lr_tag(lr)}", "sweep", width, tokens, lr)
            for lr in self.lr_grid
        ]

    def ladder_runs(self, lr: float | None = None) -> list[RunSpec]:
        """Every width times every token budget (smallest first), once per seed."""
        return [
            RunSpec(self.ladder_name(w, t, r), "ladder", w, t, lr, r)
            for r in range(max(self.seeds, self.smallest_seeds))
            for w in sorted(self.widths)
            if r < self.seeds_at(w)
            for t in sorted(self.tokens)
        ]

    def seeds_at(self, width: int) -> int:
        """Runs per ladder point at ``width``: ``smallest_seeds`` at the smallest width (where
        a run is cheapest and its noise weighs most on the fit), ``seeds`` elsewhere."""
        return max(self.seeds, self.smallest_seeds) if width == min(self.widths) else self.seeds

    def ladder_name(self, width: int, tokens: int, replicate: int = 0) -> str:
        """``ladder-w64-t1M``; the second and later seeds add ``-seed1``, ``-seed2``, ..."""
        seed = f"-seed{self.seed + replicate}" if replicate else ""
        return f"ladder-w{width}-t{format_tokens(tokens)}{seed}"

    def trunk_of(self, width: int, replicate: int = 0) -> str:
        """The name of the run whose stable phase the width's shorter budgets branch from."""
        return self.ladder_name(width, max(self.tokens), replicate)

    def target_run(self, lr: float | None = None) -> RunSpec:
        tag = f"target-w{self.target_width}-t{format_tokens(self.target_tokens)}"
        return RunSpec(tag, "target", self.target_width, self.target_tokens, lr)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> LadderPlan:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"ladder plan: unknown fields {sorted(unknown)}")
        kwargs = dict(data)
        for key in ("widths", "tokens", "lr_grid"):
            kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def _lr_tag(lr: float) -> str:
    """A file-name friendly learning rate: powers of two as 2^-k, others in %g."""
    k = math.log2(lr)
    return f"2^{round(k)}" if abs(k - round(k)) < 1e-9 else f"{lr:g}"


def format_tokens(tokens: int) -> str:
    """1048576 -> '1M', 524288 -> '512k', 1500 -> '1500' (binary prefixes, exact only)."""
    for size, suffix in ((2**30, "G"), (2**20, "M"), (2**10, "k")):
        if tokens % size == 0 and tokens >= size:
            return f"{tokens // size}{suffix}"
    return str(tokens)


def parse_tokens(text: str, *, name: str = "--tokens") -> int:
    """Parse a token count: '1048576', '1M' (2^20), '512k' (2^10), '2.5e6', '1G'."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)\s*", text)
    if not match:
        raise ValueError(
            f"{name}: cannot read {text!r} as a token count; write e.g. 1048576, 1M, 512k or 2e6"
        )
    value = (
        float(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2).lower()]
    )
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"{name}: {text!r} must be a positive, finite token count")
    return int(value)


def parse_int_list(text: str, *, name: str) -> tuple[int, ...]:
    """'32,48,64' -> (32, 48, 64)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"{name}: expected comma-separated integers like 32,48,64, got {text!r}"
        ) from None
    if not values:
        raise ValueError(f"{name}: empty list; give comma-separated integers like 32,48,64")
    return values


def parse_target(text: str) -> tuple[int, int | None]:
    """'128' -> (128, None); '128x4M' -> (128, 4194304): width, then optional tokens."""
    width_text, _, tokens_text = text.lower().partition("x")
    try:
        width = int(width_text)
    except ValueError:
        raise ValueError(
            f"--target: expected WIDTH or WIDTHxTOKENS (e.g. 128 or 128x4M), got {text!r}"
        ) from None
    tokens = parse_tokens(tokens_text, name="--target") if tokens_text else None
    return width, tokens


def make_plan(
    budget: str = "small",
    *,
    preset: str = "scion",
    data: str = "stdlib",
    widths: Sequence[int] | None = None,
    tokens: Sequence[int] | None = None,
    target_width: int | None = None,
    target_tokens: int | None = None,
    lr_grid: Sequence[float] | None = None,
    bootstrap: int | None = None,
    seed: int = 0,
    embeddings: bool = False,
    horizon_lr: bool = True,
    count_params: Callable[[LadderPlan, int], int] | None = None,
    **overrides,
) -> LadderPlan:
    """Build and validate a ladder plan from a budget name and optional overrides.

    ``count_params(plan, width)`` returns ``N`` for a width (default: build the GPT and count,
    see :func:`model_params`); it is used to check that the target is really larger.
    ``horizon_lr``: longer runs end their stable phase at the learning rate of their horizon,
    ``eta (D / D0)^g`` with the preset's exponent at a fixed batch size
    (:func:`everyscale.scale.horizon_lr_exponent`: -0.505 for Scion), D0 the sweep's budget.
    Raises ``ValueError`` naming the option to change when the plan cannot identify the law or
    the target is not a real extrapolation.
    """
    if budget not in _BUDGET_DEFAULTS:
        raise ValueError(f"--budget: unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    defaults = dict(_BUDGET_DEFAULTS[budget])
    defaults.update({k: v for k, v in overrides.items() if v is not None})
    widths = tuple(widths) if widths is not None else defaults.pop("widths")
    tokens = tuple(tokens) if tokens is not None else defaults.pop("tokens")
    defaults.pop("widths", None)
    defaults.pop("tokens", None)
    default_target_width = defaults.pop("target_width")
    default_target_tokens = defaults.pop("target_tokens")
    count_params = count_params or model_params
    plan = LadderPlan(
        budget=budget,
        preset=preset,
        data=data,
        widths=tuple(sorted(int(w) for w in widths)),
        tokens=tuple(sorted(int(t) for t in tokens)),
        target_width=int(target_width or default_target_width or 0),  # 0: chosen below
        target_tokens=int(
            target_tokens
            if target_tokens is not None
            else (default_target_tokens if default_target_tokens is not None else max(tokens))
        ),
        lr_grid=tuple(
            float(x)
            for x in (
                lr_grid
                if lr_grid is not None
                else [default_lr(preset) * 2.0**k for k in defaults["lr_steps"]]
            )
        ),
        bootstrap=int(bootstrap if bootstrap is not None else defaults["bootstrap"]),
        seed=seed,
        embeddings=embeddings,
        horizon_decay=_horizon_decay(preset) if horizon_lr else 0.0,
        **{k: v for k, v in defaults.items() if k not in ("lr_steps", "bootstrap")},
    )
    if plan.target_width == 0:
        plan = dataclasses.replace(plan, target_width=auto_target_width(plan, count_params))
    validate_plan(plan, count_params)
    return plan


def _horizon_decay(preset: str) -> float:
    from everyscale.scale import horizon_lr_exponent

    default_lr(preset)  # an unknown preset is named as --optimizer first
    return -horizon_lr_exponent(preset, fixed_batch=True)


def default_lr(preset: str) -> float:
    """The optimizer preset's default learning rate (the centre of the sweep's grid)."""
    from everyscale.optim.presets import DEFAULT_LR

    if preset not in DEFAULT_LR:
        raise ValueError(
            f"--optimizer: unknown preset {preset!r}; choose one of {', '.join(DEFAULT_LR)}"
        )
    return DEFAULT_LR[preset]


def auto_target_width(plan: LadderPlan, count_params: Callable[[LadderPlan, int], int]) -> int:
    """The narrowest multiple of 16 wider than the ladder whose ``N`` is at least
    ``TARGET_FACTOR`` times the largest ladder model's (the norm gains, and the head when it
    is counted, grow only linearly with width, so doubling the width gives a bit less than
    4x)."""
    largest = max(plan.widths)
    needed = TARGET_FACTOR * count_params(plan, largest)
    width = (largest // HEAD_DIM + 1) * HEAD_DIM
    while count_params(plan, width) < needed:
        width += HEAD_DIM
    return width


def validate_plan(plan: LadderPlan, count_params: Callable[[LadderPlan, int], int]) -> None:
    """Refuse plans that cannot identify the law or whose target is not a real extrapolation.

    The Chinchilla law has 5 parameters (E, A, alpha, B, beta); separating the ``N`` and ``D``
    terms needs at least 3 distinct sizes and 2 distinct token budgets, and more points than
    parameters.
    """
    default_lr(plan.preset)  # raises for an unknown preset, listing the valid ones
    if plan.data in IMAGE_DATASETS:
        raise ValueError(
            f"--data: {plan.data!r} is an image dataset; the ladder trains GPTs on text: use "
            f"stdlib, shakespeare or the path of a text file"
        )
    if plan.data not in TEXT_DATASETS and not Path(plan.data).is_file():
        raise FileNotFoundError(
            f"--data: {plan.data!r} is neither a built-in text corpus ({', '.join(TEXT_DATASETS)}) "
            f"nor an existing text file; check the path"
        )
    for name, value in (("--depth", plan.depth), ("--context", plan.context)):
        if value < 1:
            raise ValueError(f"{name}: must be a positive integer, got {value}")
    if plan.batch_size < 1:
        raise ValueError(f"batch_size: must be a positive integer, got {plan.batch_size}")
    if any(w < 1 for w in (*plan.widths, plan.target_width)):
        raise ValueError(f"--widths/--target: widths must be positive, got {plan.widths}")
    for w in (*plan.widths, plan.target_width):
        if w % plan.heads_for(w):
            raise ValueError(
                f"--widths/--target: width {w} does not split into {plan.heads_for(w)} "
                f"attention heads (one per {HEAD_DIM} units); use multiples of {HEAD_DIM}"
            )
    if len(set(plan.widths)) < 3:
        raise ValueError(
            f"--widths: a ladder needs at least 3 distinct widths to identify the law's "
            f"parameter term, got {sorted(set(plan.widths))}; add widths, e.g. 32,48,64"
        )
    if len(set(plan.tokens)) < 2:
        raise ValueError(
            f"--tokens: a ladder needs at least 2 distinct token budgets to identify the law's "
            f"data term, got {sorted(set(plan.tokens))}; add a budget, e.g. 512k,1M"
        )
    if len(plan.widths) != len(set(plan.widths)) or len(plan.tokens) != len(set(plan.tokens)):
        raise ValueError("--widths/--tokens: remove the repeated values")
    too_short = [t for t in (*plan.tokens, plan.target_tokens) if plan.steps_for(t) < MIN_STEPS]
    if too_short:
        raise ValueError(
            f"--tokens: budgets {too_short} give fewer than {MIN_STEPS} steps of "
            f"{plan.tokens_per_step} tokens (batch {plan.batch_size} x context {plan.context}); "
            f"use at least {MIN_STEPS * plan.tokens_per_step} tokens"
        )
    if not plan.lr_grid or any(not (math.isfinite(lr) and lr > 0) for lr in plan.lr_grid):
        raise ValueError(f"lr_grid: needs positive, finite learning rates, got {plan.lr_grid}")
    if plan.bootstrap < 0:
        raise ValueError(f"--bootstrap: must be >= 0, got {plan.bootstrap}")
    for flag, value in (("--seeds", plan.seeds), ("--smallest-seeds", plan.smallest_seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{flag}: runs per ladder point must be an integer >= 1, got {value!r}"
            )
    if plan.cooldown_shape not in ("linear", "sqrt"):
        raise ValueError(
            f"--cooldown-shape: choose linear or sqrt (1 - sqrt), got {plan.cooldown_shape!r}"
        )
    if not 0 <= plan.warmup < 1 or not 0 < plan.cooldown <= 1 or plan.warmup + plan.cooldown > 1:
        raise ValueError(
            f"warmup/cooldown: fractions of the run with warmup + cooldown <= 1 and a positive "
            f"cooldown (every run must end annealed), got {plan.warmup}, {plan.cooldown}"
        )

    largest_n = count_params(plan, max(plan.widths))
    target_n = count_params(plan, plan.target_width)
    largest_d = max(plan.tokens)
    if target_n < largest_n or plan.target_tokens < largest_d:
        raise ValueError(
            f"--target: the held-out model (width {plan.target_width}, N={target_n:,}, "
            f"D={plan.target_tokens:,}) is smaller than the largest ladder model "
            f"(width {max(plan.widths)}, N={largest_n:,}, D={largest_d:,}) in parameters or "
            f"tokens; a prediction must extrapolate, so choose a larger --target"
        )
    if target_n < TARGET_FACTOR * largest_n and plan.target_tokens < TARGET_FACTOR * largest_d:
        raise ValueError(
            f"--target: the held-out model must have at least {TARGET_FACTOR:g}x the largest "
            f"ladder model's parameters ({largest_n:,}) or tokens ({largest_d:,}); it has "
            f"N={target_n:,} ({target_n / largest_n:.2f}x) and D={plan.target_tokens:,} "
            f"({plan.target_tokens / largest_d:.2f}x); use a wider target or more target tokens"
        )


def model_params(plan: LadderPlan, width: int) -> int:
    """``N`` of the ladder's GPT at ``width``: built by the training engine and counted.

    The token embedding and the output head are excluded unless ``plan.embeddings``.
    """
    model = build_ladder_model(plan, width)
    return int(model.num_params(embeddings=plan.embeddings))


def build_ladder_model(plan: LadderPlan, width: int, *, vocab: int = 256):
    """The GPT a ladder trains at ``width`` (used for counting; training builds its own)."""
    from everyscale.train.models import build_model

    return build_model(
        "gpt",
        width=width,
        depth=plan.depth,
        heads=plan.heads_for(width),
        context=plan.context,
        vocab=vocab,
    )
