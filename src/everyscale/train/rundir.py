"""Run folders: one writer at a time, nothing a user made is lost.

The policy every command that writes a run folder (``train``, ``ladder``, ``transfer``) follows:

- **One writer.** :class:`RunLock` holds an OS file lock (``fcntl.flock``) on ``FOLDER/.lock``
  for the life of the run. A second writer is refused with the holder's pid, host, command and
  start time. The kernel drops the lock when its process dies, however it dies, so a lock left
  by a dead process is taken over at once; the file's inode is re-checked after locking so a
  lock file removed by its releasing holder is never mistaken for a live one. A ladder holds its
  own folder and each of its runs holds the run's folder. Under several processes only the
  launcher or rank 0 takes the lock (``rank=``, or the ``EVERYSCALE_RANK`` / ``RANK``
  environment variables that ``torchrun`` sets): the others do not write the run's files.
  ``flock`` is reliable on local file systems; on NFS it depends on the server.
- **Outputs never overwrite inputs** (:func:`refuse_inputs_in_outputs`).
- **Every file atomic** (``everyscale.train.checkpoint.atomic_write_*``).
- **Generations, never destruction.** A fresh run in a folder that holds an earlier run first
  moves that run's files to numbered generations (:func:`keep_generation`):
  ``metrics.jsonl`` becomes ``metrics.previous-1.jsonl``, the next ``previous-2``, and so on;
  an existing generation is never overwritten.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import re
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

__all__ = [
    "LOCK_NAME",
    "RunFolderLocked",
    "RunLock",
    "is_lock_holder",
    "keep_earlier_run",
    "keep_generation",
    "next_generation",
    "prepare_run_folder",
    "refuse_inputs_in_outputs",
]

LOCK_NAME = ".lock"
RANK_VARIABLES = ("EVERYSCALE_RANK", "RANK")


class RunFolderLocked(ValueError):
    """Another live process is writing the run folder; ``holder`` says who (pid, start, ...)."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}

    def __reduce__(self):  # crosses process pools (a ladder's workers) with its holder
        return type(self), (str(self), self.holder)


def is_lock_holder(rank: int | None = None) -> bool:
    """Whether this process takes run-folder locks: the launcher or rank 0.

    ``rank`` wins; else the ``EVERYSCALE_RANK`` or ``RANK`` environment variable (set by
    ``torchrun``); without either, this process is the launcher.
    """
    if rank is None:
        for name in RANK_VARIABLES:
            text = os.environ.get(name, "").strip()
            if text:
                try:
                    rank = int(text)
                except ValueError:
                    raise ValueError(f"{name}={text!r} is not an integer rank") from None
                break
    return rank is None or rank == 0


def prepare_run_folder(folder: str | os.PathLike, flag: str = "--out") -> Path:
    """Create ``folder`` (and parents) or raise ``ValueError`` naming ``flag`` and the fix.

    Refused: a path that is a file, a parent that is a file, a place that cannot be created or
    written (permissions, a read-only file system).
    """
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"{flag} {folder} is a file, not a folder; name a folder for the run's files "
            f"(e.g. {flag} {path.with_name(path.name + '-run')})"
        )
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ValueError(
            f"{flag} {folder}: a parent of it, {blocking}, is a file, not a folder; name "
            "another place"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"{flag} {folder} cannot be created ({err.strerror or err}); name a folder you can "
            "write, e.g. under your home or the current folder"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {folder} is not writable; name a folder you can write")
    return path


def _holder_record() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:500],
    }


class RunLock:
    """An exclusive, non-blocking OS lock on a run folder, held while the ``with`` block runs.

    ``with RunLock("runs/x"):`` creates the folder (see :func:`prepare_run_folder`), locks
    ``runs/x/.lock`` and writes the holder's pid, host, start time and command into it.
    Entering raises :class:`RunFolderLocked` (a ``ValueError``) when a live process holds it.
    A process that is not the launcher or rank 0 (:func:`is_lock_holder`) neither creates nor
    locks anything. Not re-entrant: a second ``RunLock`` on the same folder in the same process
    is refused too (each ``open`` is its own lock).
    """

    def __init__(self, folder: str | os.PathLike, *, flag: str = "--out", rank: int | None = None):
        self.folder = Path(folder)
        self.flag = flag
        self.active = is_lock_holder(rank)
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> RunLock:
        if not self.active or self._fd is not None:
            return self
        prepare_run_folder(self.folder, self.flag)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ValueError(
                        f"{self.flag} {self.folder}: cannot lock {self.path} ({err.strerror})"
                    ) from None
                raise self._refusal() from None
            if self._same_file(fd):
                break
            os.close(fd)  # the releasing holder removed that file: lock the new one
        record = json.dumps(_holder_record()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record + b"\n", 0)
        self._fd = fd
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def holder(self) -> dict:
        """What the lock file says about its holder (``{}`` when unreadable)."""
        try:
            value = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def _refusal(self) -> RunFolderLocked:
        holder = self.holder()
        who = f"pid {holder.get('pid', '?')}"
        if holder.get("host"):
            who += f" on {holder['host']}"
        if holder.get("started"):
            who += f", started {holder['started']}"
        if holder.get("command"):
            who += f" ({holder['command']})"
        return RunFolderLocked(
            f"{self.flag} {self.folder} is in use by another run: {who}. Wait for it to "
            f"finish, stop it, or choose another {self.flag}",
            holder,
        )

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Unlink while still holding the lock; a waiter that opened the old file sees the
            # inode change in acquire() and retries on a fresh one.
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _split_name(name: str) -> tuple[str, str]:
    """``metrics.jsonl`` -> (``metrics``, ``.jsonl``); a dotfile keeps its whole name as stem."""
    stem, dot, suffix = name.partition(".")
    return (name, "") if not stem else (stem, dot + suffix)


def _generation_name(name: str, number: int) -> str:
    """``metrics.jsonl``, 2 -> ``metrics.previous-2.jsonl``."""
    stem, suffix = _split_name(name)
    return f"{stem}.previous-{number}{suffix}"


def next_generation(folder: str | os.PathLike, names: Iterable[str]) -> int:
    """The smallest generation number none of ``names`` has used in ``folder`` yet (from 1)."""
    folder = Path(folder)
    used = 0
    for name in names:
        stem, suffix = _split_name(name)
        pattern = re.compile(re.escape(stem) + r"\.previous-(\d+)" + re.escape(suffix))
        for existing in folder.glob("*.previous-*"):
            match = pattern.fullmatch(existing.name)
            if match:
                used = max(used, int(match.group(1)))
    return used + 1


def keep_generation(folder: str | os.PathLike, names: Iterable[str]) -> int | None:
    """Move the files ``names`` present in ``folder`` to the next numbered generation.

    Returns the generation number, or ``None`` when none of them existed. All files of one
    earlier run get the same number; an existing generation is never overwritten.
    """
    folder = Path(folder)
    names = list(names)
    present = [name for name in names if (folder / name).exists()]
    if not present:
        return None
    number = next_generation(folder, names)
    for name in present:
        target = folder / _generation_name(name, number)
        if target.exists():  # a race with a file made by hand: never overwrite
            raise ValueError(f"{target} exists; move it away and run again")
        os.replace(folder / name, target)
    return number


def refuse_inputs_in_outputs(
    inputs: dict[str, str | os.PathLike | None], folder: str | os.PathLike, names: Iterable[str]
) -> None:
    """Raise ``ValueError`` when an input flag names a file the run writes or moves in ``folder``.

    ``inputs`` maps a flag (``"--data"``) to its path (``None``: not given or not a file).
    """
    written = {(Path(folder) / name).expanduser().resolve(): name for name in names}
    for flag, given in inputs.items():
        if given is None:
            continue
        name = written.get(Path(given).expanduser().resolve())
        if name is not None:
            raise ValueError(
                f"{flag} {given} is the run's own {name} in {folder}, which the run rewrites; "
                f"copy it elsewhere and pass the copy to {flag}, or choose another --out"
            )


# ---------------------------------------------------------------------- the train run's folder

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
CONFIG_NAME = "config.json"
DIST_CHECKPOINT_NAME = "checkpoint.dcp"  # a torch.distributed.checkpoint folder (everyscale.dist)
RUN_FILES = (CHECKPOINT_NAME, DIST_CHECKPOINT_NAME, METRICS_NAME, SUMMARY_NAME, CONFIG_NAME)


def keep_earlier_run(folder: str | os.PathLike, *, quiet: bool = False) -> int | None:
    """Before a fresh run: move an earlier run's files in ``folder`` to the next generation."""
    number = keep_generation(folder, RUN_FILES)
    if number is not None and not quiet:
        print(
            f"{folder} held an earlier run: its files are kept as NAME.previous-{number}.EXT "
            "there (checkpoint, metrics, summary, config)",
            file=sys.stderr,
        )
    return number
