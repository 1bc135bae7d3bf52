"""Atomic checkpoints and atomic small files: a crash never leaves a half-written file.

A file is written to ``NAME.tmp`` in the same directory, flushed and fsync'ed, then moved over
``NAME`` with ``os.replace`` (atomic on POSIX), and the directory is fsync'ed so the rename
itself survives a power cut. Either the old file or the new one is there, never a mix.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "atomic_save_figure",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, or written under a different config."""


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a failed or interrupted write leaves no half-written .tmp behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic_write(Path(path), lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, text.encode())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
    """``fig.savefig`` (matplotlib) into memory, then written atomically; format from the suffix."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, state dicts, numbers) atomically with ``torch.save``."""
    _atomic_write(Path(path), lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))


def load_checkpoint(path: str | os.PathLike, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint and check it was written under the same config ``fingerprint``.

    The file is never modified or deleted here: on any error it stays in place so nothing is
    lost. Raises ``CheckpointError`` (a ``ValueError``) saying what is wrong and what to do.
    """
    path = Path(path)
    try:
        # Our own file in the user's run directory; optimizer states may hold plain Python
        # objects (norm descriptions), which the weights-only unpickler would refuse.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (
        RuntimeError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        AttributeError,
        ImportError,
    ) as err:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); it was left in "
            "place. Start over without --resume in a new --out directory, or move the file "
            "away and resume from a copy you trust"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not an everyscale checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
            f"expected {CHECKPOINT_FORMAT}); it was left in place"
        )
    saved = state.get("config", {})
    differing = sorted(
        k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k)
    )
    if differing:
        details = ", ".join(
            f"{k}: checkpoint {saved.get(k)!r} vs now {fingerprint.get(k)!r}" for k in differing
        )
        raise CheckpointError(
            f"checkpoint {path} was written under a different config ({details}); it was left "
            "in place. Resume with the original settings, or start a new run in another --out"
        )
    return state
