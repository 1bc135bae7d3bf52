"""everyscale.train: offline data, models, schedules, and a training loop that never loses a run.

    from everyscale.train import TrainConfig, run
    summary = run(TrainConfig(model="gpt", data="stdlib", steps=200, out="runs/demo"))

See ``loop.py`` for the files a run writes and how resume stays exact, and ``reuse.py`` for
``run_or_reuse``: the one rule by which sweeps and ladders reuse a finished run.
"""

from everyscale.train.checkpoint import CheckpointError
from everyscale.train.config import TrainConfig
from everyscale.train.data import load_dataset
from everyscale.train.loop import NonFiniteLossError, TrainingInterrupted, evaluate, run
from everyscale.train.models import build_model
from everyscale.train.reuse import reusable_summary, run_or_reuse
from everyscale.train.schedules import get_schedule

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainingInterrupted",
    "build_model",
    "evaluate",
    "get_schedule",
    "load_dataset",
    "reusable_summary",
    "run",
    "run_or_reuse",
]
