"""The tiny GPT run the engine's tests share: seconds on one thread, on whichever corpus is here."""

from __future__ import annotations

import json
import os

from available_data import TEXT_DATA
from everyscale.train import TrainConfig

TINY_GPT = dict(
    model="gpt",
    data=TEXT_DATA,
    width=16,
    depth=1,
    heads=2,
    context=16,
    steps=12,
    batch_size=8,
    val_windows=16,
    eval_every=4,
    quiet=True,
    threads=1,  # the test machine's cores are shared: one thread avoids oversubscription
)


def tiny_config(tmp_path, name: str = "run", **overrides) -> TrainConfig:
    """``TINY_GPT`` writing to ``tmp_path / name``, with ``overrides`` on top."""
    return TrainConfig(**{**TINY_GPT, "out": str(tmp_path / name), **overrides})


def metric_rows(config: TrainConfig) -> list[dict]:
    """Every row of the run's ``metrics.jsonl``."""
    with open(os.path.join(config.out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]
