"""The search space of each optimizer family: what a quasi-random search tunes, and over what.

Every optimizer in a family is tuned over the same ranges, with the same trial budget (AlgoPerf's
"external tuning" ruleset, Dahl et al. 2023, Section 4.3). The hyperparameters:

- ``lr``: the base learning rate, log-uniform (for Muon: of its matrices);
- ``warmup``: the fraction of the step budget spent in a linear warmup, uniform;
- ``weight_decay``: decoupled decay, uniform (0 is in the range);
- ``beta1``: Adam's first-moment EMA (``betas=(beta1, 0.99)``; beta2 is fixed at 0.99, a
  common choice at small batch), or ``momentum``: the EMA / heavy-ball momentum;
- ``adam_lr``: the learning rate of the AdamW that Muon uses for the rest (embedding, head,
  gains), log-uniform.

After the warmup the learning rate follows a cosine decay to zero at the step budget (the shape
of AlgoPerf's baselines), except for Schedule-Free AdamW, which needs no schedule.

A preset without a family of its own (one added after this table was written) gets
``FALLBACK``: ``lr`` log-uniform within a factor 30 of its default learning rate, and
``warmup``. Give it a family in ``FAMILY`` to tune more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "FALLBACK",
    "FAMILY",
    "SPACES",
    "Range",
    "check_space",
    "parse_range",
    "space_for",
]


@dataclass(frozen=True)
class Range:
    """A closed interval ``[low, high]`` searched uniformly, or uniformly in ``log`` scale."""

    low: float
    high: float
    log: bool = False

    def check(self, name: str) -> None:
        """Raise ``ValueError`` naming ``name`` for an empty or ill-formed range."""
        low, high = self.low, self.high
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"search space {name}: bounds must be finite, got [{low}, {high}]")
        if not low < high:
            raise ValueError(
                f"search space {name}: the range [{low}, {high}] is empty; give LOW < HIGH "
                f"(on the command line --space {name}=LOW:HIGH, or --option {name}=VALUE to "
                "fix the value instead of tuning it)"
            )
        if self.log and low <= 0:
            raise ValueError(f"search space {name}: a log-uniform range needs LOW > 0, got {low}")


_WARMUP = Range(0.0, 0.1)
_DECAY = Range(0.0, 0.2)
_BETA = Range(0.8, 0.98)

#: the stated search space of each family
SPACES: dict[str, dict[str, Range]] = {
    "adam": {
        "lr": Range(1e-4, 3e-2, log=True),
        "warmup": _WARMUP,
        "weight_decay": _DECAY,
        "beta1": _BETA,
    },
    "schedulefree": {  # Defazio et al. 2024 use larger learning rates than AdamW's
        "lr": Range(3e-4, 1e-1, log=True),
        "warmup": _WARMUP,
        "weight_decay": _DECAY,
        "beta1": _BETA,
    },
    "psgd": {
        "lr": Range(1e-4, 3e-2, log=True),
        "warmup": _WARMUP,
        "weight_decay": _DECAY,
        "beta1": _BETA,
    },
    "muon": {
        "lr": Range(3e-3, 1e-1, log=True),
        "warmup": _WARMUP,
        "weight_decay": _DECAY,
        "momentum": Range(0.85, 0.98),
        "adam_lr": Range(1e-4, 3e-2, log=True),
    },
    "shampoo": {
        "lr": Range(1e-4, 3e-2, log=True),
        "warmup": _WARMUP,
        "weight_decay": _DECAY,
        "momentum": _BETA,
    },
    "normuon": {  # lr on the Adam-like RMS scale (its default is 1e-3)
        "lr": Range(1e-4, 3e-2, log=True),
        "warmup": _WARMUP,
        "weight_decay": _DECAY,
        "momentum": Range(0.85, 0.98),
        "adam_lr": Range(1e-4, 3e-2, log=True),
    },
    "scion": {  # lr * radius is the step: 2^-14 .. 2^-8 with the default radii (50, 3000)
        "lr": Range(2.0**-14, 2.0**-8, log=True),
        "warmup": _WARMUP,
        "momentum": _BETA,
    },
    "sgd": {
        "lr": Range(1e-3, 1.0, log=True),
        "warmup": _WARMUP,
        "weight_decay": Range(0.0, 1e-3),
        "momentum": _BETA,
    },
    "sign": {
        "lr": Range(1e-5, 1e-2, log=True),
        "warmup": _WARMUP,
        "weight_decay": _DECAY,
        "momentum": _BETA,
    },
}

#: the family of every optimizer name the bench knows (ours and the peers)
FAMILY: dict[str, str] = {
    "adamw": "adam",
    "torch_adamw": "adam",
    "heavyball_soap": "adam",
    "sfadamw": "schedulefree",
    "heavyball_psgd": "psgd",
    "muon": "muon",
    "torch_muon": "muon",
    "scion": "scion",
    "uscion": "scion",
    "clipped_scion": "scion",
    "sgd": "sgd",
    "normalized_sgd": "sgd",
    "signsgd": "sign",
    "signum": "sign",
    "lion": "sign",
    # the adaptive presets (everyscale.optim, when this install has them)
    "soap": "adam",
    "shampoo": "shampoo",
    "normuon": "normuon",
}

#: parameters of its family that an optimizer does not have (signSGD has no momentum)
NOT_TUNED: dict[str, tuple[str, ...]] = {"signsgd": ("momentum",)}

#: the factor around a preset's default learning rate that ``FALLBACK`` searches
FALLBACK_LR_FACTOR = 30.0
FALLBACK = "fallback"


def space_for(name: str, default_lr: float | None = None) -> dict[str, Range]:
    """The search space of optimizer ``name`` (a copy, safe to edit)."""
    family = FAMILY.get(name)
    if family is not None:
        space = dict(SPACES[family])
        for param in NOT_TUNED.get(name, ()):
            space.pop(param)
        return space
    lr = default_lr if default_lr is not None else 1e-3
    return {
        "lr": Range(lr / FALLBACK_LR_FACTOR, lr * FALLBACK_LR_FACTOR, log=True),
        "warmup": _WARMUP,
    }


def check_space(
    optimizer: str, space: Mapping[str, Range], fixed: Mapping[str, object] = {}
) -> None:
    """Every range of ``optimizer``'s space is well formed (errors name ``optimizer.param``)."""
    if "lr" not in space and "lr" not in fixed:
        raise ValueError(f"search space {optimizer}: it must tune or fix lr")
    for param, rng in space.items():
        rng.check(f"{optimizer}.{param}")


def parse_range(text: str, name: str) -> Range:
    """``LOW:HIGH`` (uniform) or ``LOW:HIGH:log``; numbers like ``1e-4`` or ``2^-12``."""
    parts = text.split(":")
    log = len(parts) == 3 and parts[2].strip().lower() == "log"
    if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
        raise ValueError(
            f"--space {name}={text}: write LOW:HIGH or LOW:HIGH:log, e.g. "
            f"--space {name}=1e-4:1e-2:log"
        )
    try:
        low, high = (_number(p) for p in parts[:2])
    except ValueError as err:
        raise ValueError(f"--space {name}={text}: {err}") from None
    rng = Range(low, high, log)
    rng.check(name)
    return rng


def _number(text: str) -> float:
    text = text.strip()
    if "^" in text:
        base, _, power = text.partition("^")
        return float(base) ** float(power)
    return float(text)
