"""``TrainConfig``: everything that defines a training run, validated before any work starts."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from everyscale.train.checkpoint import atomic_write_bytes
from everyscale.train.models import MODELS
from everyscale.train.schedules import SCHEDULES, get_schedule

__all__ = ["RESUME_FREE_FIELDS", "TrainConfig", "cli_flag", "known_optimizers"]

# Fields that may differ between a run and its resumption: they change where and how loudly a
# run reports, not the sequence of updates.
RESUME_FREE_FIELDS = frozenset(
    {
        "out",
        "resume",
        "quiet",
        "threads",
        "device",
        "checkpoint_every",
        "keep_checkpoint",
        "eval_every",
    }
)


def cli_flag(field_name: str) -> str:
    """The ``everyscale train`` flag of a TrainConfig field: ``batch_size`` -> ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


def known_optimizers() -> tuple[str, ...]:
    """The optimizer preset names, ``everyscale.optim.PRESETS``."""
    from everyscale.optim import PRESETS  # lazy: only validation and --help need the optimizers

    return tuple(PRESETS)


@dataclass
class TrainConfig:
    """One training run. Field names match the ``everyscale train`` flags (``-`` for ``_``).

    Model shape: ``width``, ``depth`` (all models), ``heads``, ``context``, ``tied``,
    ``residual_multiplier`` (GPT only). ``cooldown=None`` means 0.3 for ``wsd`` (Scion's
    recipe [S]) and 0 for the other schedules; ``warmup_steps`` and ``cooldown_steps``, when
    given, replace those fractions by absolute step counts (what WSD branches need), and
    ``cooldown_shape`` is ``linear`` or ``sqrt`` (``1 - sqrt``, Hägele et al. 2024).
    ``power_decay`` b > 0 decays the stable phase of ``constant``/``wsd`` as
    ``(step / power_decay_from)^-b`` after step ``power_decay_from`` (a longer run ends its
    stable phase at a lower rate, as the best rate falls with the horizon).
    ``batch_size`` is examples per optimizer step, split into ``grad_accum`` equal
    micro-batches. ``clip`` is a max global gradient norm (``None``: no clipping).
    ``eval_every=0`` evaluates only at the end; otherwise also at step 0 and every
    ``eval_every`` steps. ``checkpoint_every=0`` checkpoints only at the end and on
    SIGINT/SIGTERM; ``keep_checkpoint=False`` deletes the checkpoint after a completed run
    (for sweeps of many small runs). ``device``: where the model and batches live (data is
    sampled on the CPU); exact resume is promised on the CPU only.
    """

    model: str = "gpt"
    data: str = "stdlib"
    width: int = 128
    depth: int = 4
    heads: int = 4
    context: int = 128
    tied: bool = False
    residual_multiplier: float = 1.0
    optimizer: str = "adamw"
    lr: float = 1e-3
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    schedule: str = "constant"
    warmup: float = 0.0
    cooldown: float | None = None
    warmup_steps: int | None = None
    cooldown_steps: int | None = None
    cooldown_shape: str = "linear"
    power_decay: float = 0.0
    power_decay_from: int | None = None
    steps: int = 100
    batch_size: int = 32
    grad_accum: int = 1
    clip: float | None = None
    eval_every: int = 0
    val_windows: int = 256
    checkpoint_every: int = 0
    keep_checkpoint: bool = True
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    out: str = "runs/default"
    resume: bool = False
    quiet: bool = False

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The config as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            atomic_write_bytes(path, (text + "\n").encode())
        return text

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig field(s) {', '.join(unknown)}; valid fields: "
                + ", ".join(sorted(names))
            )
        return cls(**values)

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> TrainConfig:
        """Parse JSON text, or read it from a file path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = _read_config_file(Path(text))
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"config is not valid JSON: {err}") from err
        if not isinstance(values, dict):
            raise ValueError("config JSON must be an object of field: value pairs")
        return cls.from_dict(values)

    # ------------------------------------------------------------------ validation

    @property
    def effective_cooldown(self) -> float:
        if self.cooldown is not None:
            return self.cooldown
        return 0.3 if self.schedule == "wsd" else 0.0

    def schedule_function(self):
        """The learning-rate multiplier ``step -> f(step)`` of this run
        (:func:`everyscale.train.schedules.get_schedule`)."""
        return get_schedule(
            self.schedule,
            self.steps,
            self.warmup,
            self.effective_cooldown,
            warmup_steps=self.warmup_steps,
            cooldown_steps=self.cooldown_steps,
            cooldown_shape=self.cooldown_shape,
            power_decay=self.power_decay,
            power_decay_from=self.power_decay_from,
        )

    def validate(self, check_optimizer: bool = True) -> None:
        """Raise ``ValueError`` naming the field and the fix for any inconsistent setting.

        Checks that need the data (the context against the text's length, a missing file) run
        in :func:`everyscale.train.run` right after loading it, still before training.
        """
        self._check_kinds()
        if self.model not in MODELS:
            raise ValueError(
                f"unknown model {self.model!r}: set --model to one of {', '.join(MODELS)}"
            )
        integers = {
            "width": (self.width, 1),
            "depth": (self.depth, 1),
            "heads": (self.heads, 1),
            "context": (self.context, 1),
            "steps": (self.steps, 1),
            "batch_size": (self.batch_size, 1),
            "grad_accum": (self.grad_accum, 1),
            "val_windows": (self.val_windows, 1),
            "eval_every": (self.eval_every, 0),
            "checkpoint_every": (self.checkpoint_every, 0),
            **{
                name: (getattr(self, name), 0)
                for name in ("warmup_steps", "cooldown_steps")
                if getattr(self, name) is not None
            },
            "seed": (self.seed, 0),
        }
        for name, (value, low) in integers.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(
                    f"{name} must be an integer >= {low}, got {value!r}: change {cli_flag(name)}"
                )
        if self.threads is not None and (
            not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1
        ):
            raise ValueError(
                f"threads must be a positive integer or None, got {self.threads!r}: change "
                "--threads or leave it out (torch's default)"
            )
        if self.model == "gpt" and self.width % self.heads:
            raise ValueError(
                f"width={self.width} is not divisible by heads={self.heads}: change --width "
                f"to a multiple of {self.heads} or --heads to a divisor of {self.width}"
            )
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by grad_accum={self.grad_accum}: "
                "each step splits the batch into grad_accum equal micro-batches: change "
                "--batch-size or --grad-accum"
            )
        for name in ("lr", "residual_multiplier"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"{name} must be a positive finite number, got {value!r}: "
                    f"change {cli_flag(name)}"
                )
        # JSON configs can hold anything: a string or null here would fail later as a TypeError.
        for name in ("warmup", "cooldown", "clip"):
            value = getattr(self, name)
            if value is None and name != "warmup":  # None: the default cooldown, no clipping
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}: change {cli_flag(name)}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(
                f"clip must be a positive max gradient norm or None, got {self.clip}: change "
                "--clip or leave it out (no clipping)"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}: set --schedule to one of "
                + ", ".join(SCHEDULES)
            )
        # Builds the schedule once to run its own checks (warmup and cooldown lengths).
        try:
            self.schedule_function()
        except ValueError as err:
            raise ValueError(
                f"{err} (flags --warmup, --cooldown, --warmup-steps, --cooldown-steps, "
                "--cooldown-shape)"
            ) from None
        if check_optimizer and self.optimizer not in known_optimizers():
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}: set --optimizer to one of "
                + ", ".join(known_optimizers())
            )
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device {self.device!r} is not a torch device: set --device to cpu, cuda, "
                "cuda:1, mps, ..."
            ) from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {self.device!r}: torch.cuda.is_available() is False on this machine; "
                "use --device cpu"
            )
        if not self.out:
            raise ValueError("out must name a directory for the run's files: set --out")

    def _check_kinds(self) -> None:
        """Words are strings, yes/no fields are booleans, options a dict of finite values.

        A JSON config can hold anything: ``"tied": "no"`` must not build a tied model.
        """
        for name in ("model", "data", "optimizer", "schedule", "device", "out"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ValueError(f"{name} must be text, got {value!r}: change {cli_flag(name)}")
        for name in ("tied", "keep_checkpoint", "resume", "quiet"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(
                    f"{name} must be true or false, got {value!r}: use {cli_flag(name)} or "
                    f"--no-{cli_flag(name)[2:]}"
                )
        if not isinstance(self.optimizer_options, dict):
            raise ValueError(
                "optimizer_options must be a dict of keyword arguments "
                "(on the command line: --option KEY=VALUE)"
            )
        for key, value in self.optimizer_options.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ValueError(
                    f"optimizer option name {key!r} is not a keyword: --option KEY=VALUE takes "
                    "the optimizer's torch.optim names (e.g. weight_decay)"
                )
            if key == "lr":
                raise ValueError(
                    "optimizer_options must not hold lr: the learning rate is its own field "
                    "(--lr), which the schedule multiplies"
                )
            if not _all_finite(value):
                raise ValueError(
                    f"optimizer option {key}={value!r} is not finite: give a finite number "
                    f"(--option {key}=...)"
                )

    def fingerprint(self) -> dict[str, Any]:
        """The fields that must match for a checkpoint to be resumed under this config.

        In their JSON form, so that a run resumed from its own ``config.json`` matches: JSON
        turns a tuple option such as ``betas=(0.9, 0.95)`` into a list.
        """
        values = json.loads(json.dumps(self.to_dict()))
        return {k: v for k, v in values.items() if k not in RESUME_FREE_FIELDS}


def _all_finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a number, list, tuple or dict of them."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    return True


def _read_config_file(path: Path) -> str:
    """The text of a config file; a name the OS refuses (too long, unreadable) is a clear error."""
    try:
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path} is not UTF-8 text: {err.reason}") from err
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"config file {path!s:.80} cannot be read: {err.strerror}") from err
