"""Workloads: a model, its data, a step budget and a fixed validation target.

A workload is a ``TrainConfig`` (data, model shape, batch size, ``steps`` = the step budget,
seed), an optional model factory (``Callable[[], nn.Module]``, for a user's own network), a
validation metric (``val_loss``: cross-entropy in nats per byte or per image; ``val_error``:
1 - top-1 accuracy; lower is better for both) and its target.

Built-in workloads (``BUILTIN``), each sized to train in seconds on one CPU thread:

- ``gpt``: the everyscale byte-level GPT on tiny Shakespeare, or on the Python standard
  library's sources when the Shakespeare file is absent (each corpus has its own target);
- ``fashion``: the CNN on Fashion-MNIST (Debian's ``dataset-fashion-mnist``; skipped with the
  command that installs it when absent);
- ``digits``: the MLP on scikit-learn's 8x8 digits (for tests and ``--budget tiny``).

How the targets were set (AlgoPerf sets its targets from reference runs, Dahl et al. 2023,
Section 4.2): ``REFERENCE`` below, ``torch.optim.AdamW`` with fixed hyperparameters (lr 3e-3;
1e-2 for the CNN), trained
for HALF the workload's step budget (its own warmup and cosine schedule) with seeds 0, 1, 2;
the target is the median of the three final validation values, rounded up at the third
significant digit. A tuned optimizer therefore has twice the steps the reference needed. The
values each reference run reached are kept in ``REFERENCE_VALUES`` (``everyscale bench
--reference`` reruns them); a target better than every reference value is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from everyscale.train import TrainConfig, evaluate, load_dataset
from everyscale.train.loop import build_model_for

__all__ = [
    "BUILTIN",
    "METRICS",
    "REFERENCE",
    "REFERENCE_VALUES",
    "Workload",
    "builtin_workload",
    "check_target",
    "fashion_mnist_missing",
]

Metric = Literal["val_loss", "val_error"]
METRICS: tuple[str, ...] = ("val_loss", "val_error")
BUILTIN = ("gpt", "fashion", "digits")
FASHION_INSTALL = "sudo apt-get install dataset-fashion-mnist"

#: the reference run that sets every built-in target (torch.optim.AdamW, half the step budget)
REFERENCE = {
    "optimizer": "torch_adamw",
    "hparams": {"lr": 3e-3, "warmup": 0.05, "weight_decay": 0.01, "beta1": 0.9},
    "lr_by_workload": {"fashion": 1e-2},  # the CNN: 3e-3 reached 0.57-0.68 error, 1e-2 0.52
    "budget_fraction": 0.5,
    "seeds": (0, 1, 2),
}


class _ValSubset:
    """The first ``limit`` validation examples of an image dataset (a cheaper evaluation)."""

    def __init__(self, dataset, limit: int):
        self.dataset, self.limit = dataset, limit

    def val_batches(self, batch_size: int):
        seen = 0
        for x, y in self.dataset.val_batches(batch_size):
            if seen >= self.limit:
                return
            x, y = x[: self.limit - seen], y[: self.limit - seen]
            seen += len(y)
            yield x, y


@dataclass(frozen=True)
class Workload:
    """A model, its data, a step budget (``config.steps``) and a validation target.

    Args:
        name: how reports and ``--workloads`` call it.
        config: data, model shape, ``batch_size``, ``steps`` (the budget) and ``context``;
            the optimizer fields are ignored (the bench chooses the optimizer).
        target: the validation ``metric`` value to reach (lower is better).
        metric: ``val_loss`` or ``val_error``.
        model_factory: builds the model (``Callable[[], nn.Module]``); default: ``config.model``
            shaped to the data.
        eval_every: evaluate every this many steps (and at the budget).
        val_examples: validation examples (text: windows) per evaluation.
        reference: the reference values the target was set from (``check_target``).
    """

    name: str
    config: TrainConfig
    target: float
    metric: Metric = "val_loss"
    model_factory: Callable[[], nn.Module] | None = None
    eval_every: int = 25
    val_examples: int = 512
    reference: tuple[float, ...] = field(default=())

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(
                f"workload {self.name}: metric must be one of {', '.join(METRICS)}, "
                f"got {self.metric!r}"
            )
        if not (isinstance(self.target, (int, float)) and math.isfinite(self.target)):
            raise ValueError(f"workload {self.name}: target must be a finite number")
        for name in ("eval_every", "val_examples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"workload {self.name}: {name} must be an integer >= 1")
        self.config.validate(check_optimizer=False)

    @property
    def steps(self) -> int:
        return self.config.steps

    def with_target(self, target: float) -> Workload:
        return dataclasses.replace(self, target=target)

    def load(self):
        """The workload's dataset (cached per process)."""
        return _load(self.config.data, self.config.context, self.config.seed, self.val_examples)

    def build_model(self, dataset) -> nn.Module:
        """A fresh model (seed torch first for a reproducible initialization)."""
        if self.model_factory is not None:
            return self.model_factory()
        return build_model_for(self.config, dataset)  # the engine's own builder

    def evaluate(self, model: nn.Module, dataset) -> float:
        """The workload's metric on its fixed validation examples."""
        view = dataset if dataset.kind == "text" else _ValSubset(dataset, self.val_examples)
        loss, accuracy = evaluate(model, view, batch_size=max(64, self.config.batch_size))
        return loss if self.metric == "val_loss" else 1.0 - accuracy


@functools.lru_cache(maxsize=8)
def _load(data: str, context: int, seed: int, val_examples: int):
    return load_dataset(data, context=context, seed=seed, max_val_windows=val_examples)


# ----------------------------------------------------------------------------- built-ins

_SHAPES = {
    "gpt": dict(
        config=dict(model="gpt", width=64, depth=2, heads=2, context=64, batch_size=16, steps=300),
        metric="val_loss",
        eval_every=25,
        val_examples=64,
    ),
    "fashion": dict(
        config=dict(model="cnn", data="fashion-mnist", width=16, depth=2, batch_size=64, steps=200),
        metric="val_error",
        eval_every=20,
        val_examples=1000,
    ),
    "digits": dict(
        config=dict(model="mlp", data="digits", width=64, depth=2, batch_size=64, steps=200),
        metric="val_error",
        eval_every=10,
        val_examples=359,
    ),
}


def _round_up(value: float, digits: int = 3) -> float:
    scale = 10 ** (digits - 1 - math.floor(math.log10(abs(value))))
    return math.ceil(value * scale) / scale


def target_from_reference(values: tuple[float, ...]) -> float:
    """The median of the reference values, rounded up at the third significant digit."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return _round_up(median)


#: final validation values of the reference runs (``REFERENCE``), per (workload, data), seeds
#: 0, 1, 2, measured on this project's CPU with ``everyscale bench --reference``
REFERENCE_VALUES: dict[tuple[str, str], tuple[float, ...]] = {
    ("gpt", "shakespeare"): (2.3622, 2.3655, 2.3912),  # 150 of 300 steps
    ("gpt", "stdlib"): (2.5112, 2.5138, 2.5579),  # 150 of 300 steps
    ("fashion", "fashion-mnist"): (0.5180, 0.5040, 0.5060),  # 100 of 200 steps, lr 1e-2
    ("digits", "digits"): (0.06128, 0.05292, 0.06964),  # 100 of 200 steps
}

#: the target of each (workload, data): the median reference value, rounded up (3 digits)
TARGETS: dict[tuple[str, str], float] = {
    key: target_from_reference(values) for key, values in REFERENCE_VALUES.items()
}


def _gpt_data() -> str:
    from everyscale.train.data import shakespeare_path

    try:
        shakespeare_path()
    except FileNotFoundError:
        return "stdlib"
    return "shakespeare"


def fashion_mnist_missing() -> str | None:
    """Why the ``fashion`` workload cannot run here (with the install command), or None."""
    from everyscale.train.data import find_fashion_mnist

    try:
        find_fashion_mnist()
    except FileNotFoundError:
        return f"Fashion-MNIST is not installed: {FASHION_INSTALL}"
    return None


def builtin_workload(
    name: str, target: float | None = None, *, for_reference: bool = False
) -> Workload:
    """The built-in workload ``name`` (``BUILTIN``), at its recorded target unless given.

    ``for_reference``: a workload with no recorded target yet is returned with target 0, to
    measure one (``reference_values``).
    """
    if name not in _SHAPES:
        raise ValueError(
            f"unknown workload {name!r}: set --workloads to names among {', '.join(BUILTIN)} "
            "(or a Python module:attribute that holds a Workload)"
        )
    shape = _SHAPES[name]
    data = _gpt_data() if name == "gpt" else shape["config"].get("data")
    config = TrainConfig(**{**shape["config"], "data": data, "quiet": True})
    reference = REFERENCE_VALUES.get((name, data), ())
    if target is None and for_reference:
        target = TARGETS.get((name, data), 0.0)
    if target is None:
        if (name, data) not in TARGETS:
            raise ValueError(
                f"workload {name} on {data} has no recorded target yet: pass --target "
                f"{name}=VALUE, or measure one with everyscale bench --reference --workloads {name}"
            )
        target = TARGETS[(name, data)]
    return Workload(
        name=name,
        config=config,
        target=target,
        metric=shape["metric"],
        eval_every=shape["eval_every"],
        val_examples=shape["val_examples"],
        reference=reference,
    )


def check_target(workload: Workload, flag: str = "--target") -> None:
    """Refuse a target that no reference run reached (better than every reference value)."""
    if workload.reference and workload.target < min(workload.reference):
        raise ValueError(
            f"{flag} {workload.name}={workload.target:g}: no reference run reached it (their "
            f"final {workload.metric}: {', '.join(f'{v:.4g}' for v in workload.reference)}); "
            f"a target every optimizer may miss scores nothing. Use a value >= "
            f"{min(workload.reference):.4g}"
        )


def reference_hparams(name: str) -> dict[str, float]:
    """The reference run's hyperparameters on workload ``name``."""
    lr = REFERENCE["lr_by_workload"].get(name, REFERENCE["hparams"]["lr"])
    return {**REFERENCE["hparams"], "lr": lr}


def reference_workload(workload: Workload) -> Workload:
    """The workload at the reference's step budget (half), for measuring a target."""
    steps = max(1, round(workload.steps * REFERENCE["budget_fraction"]))
    return dataclasses.replace(
        workload, config=dataclasses.replace(workload.config, steps=steps), target=-1.0
    )


def reference_values(workload: Workload, progress: bool = False) -> tuple[float, ...]:
    """Train ``REFERENCE`` on ``workload`` for half its budget, one run per seed."""
    from everyscale.bench.optimizers import get_contender
    from everyscale.bench.trial import run_trial

    ref = reference_workload(workload)
    contender = get_contender(REFERENCE["optimizer"])
    values = []
    dataset = ref.load()
    hparams = reference_hparams(workload.name)
    for seed in REFERENCE["seeds"]:
        result = run_trial(ref, contender, hparams, seed=seed, dataset=dataset)
        values.append(result.last_metric if result.last_metric is not None else math.inf)
        if progress:
            print(f"  {workload.name} seed {seed}: {workload.metric} {values[-1]:.4f}")
    return tuple(values)
