"""Run-folder locks and generations (everyscale.train.rundir), with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from everyscale.train.rundir import (
    LOCK_NAME,
    RunFolderLocked,
    RunLock,
    is_lock_holder,
    keep_generation,
    prepare_run_folder,
    refuse_inputs_in_outputs,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")

HOLDER = """
import sys, time
from everyscale.train.rundir import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _start_holder(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("RANK", None)
    env.pop("EVERYSCALE_RANK", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture(autouse=True)
def _launcher(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("EVERYSCALE_RANK", raising=False)


def test_second_writer_in_the_same_process_is_refused(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(RunFolderLocked, match=rf"pid {os.getpid()}.*started"):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released and removed
    with RunLock(tmp_path / "run"):  # free again
        pass


def test_a_live_process_holds_it_and_a_killed_one_releases_it(tmp_path):
    folder = tmp_path / "run"
    proc = _start_holder(folder)
    try:
        with pytest.raises(RunFolderLocked) as info:
            RunLock(folder, flag="--out").acquire()
        assert info.value.holder["pid"] == proc.pid
        assert f"pid {proc.pid}" in str(info.value) and "--out" in str(info.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The dead holder left its lock file behind; the kernel released its lock: taken over.
    assert (folder / LOCK_NAME).exists()
    with RunLock(folder) as lock:
        assert lock.holder()["pid"] == os.getpid()


def test_a_stale_lock_file_with_garbage_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("not json")
    with RunLock(tmp_path) as lock:
        assert lock.holder()["pid"] == os.getpid()


def test_only_the_launcher_or_rank_zero_locks(tmp_path, monkeypatch):
    with RunLock(tmp_path / "a", rank=1):
        assert not (tmp_path / "a").exists()  # rank 1 writes nothing
    monkeypatch.setenv("RANK", "2")
    assert not is_lock_holder()
    assert is_lock_holder(rank=0)
    monkeypatch.setenv("EVERYSCALE_RANK", "0")  # ours wins over torchrun's
    assert is_lock_holder()
    monkeypatch.setenv("EVERYSCALE_RANK", "x")
    with pytest.raises(ValueError, match="EVERYSCALE_RANK"):
        is_lock_holder()


def test_run_folder_that_is_a_file_or_under_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ValueError, match=r"--out .*is a file, not a folder"):
        prepare_run_folder(afile)
    with pytest.raises(ValueError, match=r"--out .*a parent of it, .*afile, is a file"):
        prepare_run_folder(afile / "sub")
    with pytest.raises(ValueError, match="--out"):
        RunLock(afile).acquire()
    assert afile.read_text() == "mine"


def test_generations_are_numbered_and_never_overwritten(tmp_path):
    names = ("metrics.jsonl", "summary.json", "checkpoint.pt")
    assert keep_generation(tmp_path, names) is None
    for generation in (1, 2, 3):
        (tmp_path / "metrics.jsonl").write_text(f"run {generation}")
        (tmp_path / "summary.json").write_text(f"summary {generation}")
        assert keep_generation(tmp_path, names) == generation
    for generation in (1, 2, 3):
        assert (
            tmp_path / f"metrics.previous-{generation}.jsonl"
        ).read_text() == f"run {generation}"
        assert (
            (tmp_path / f"summary.previous-{generation}.json").read_text().endswith(str(generation))
        )
    assert not (tmp_path / "metrics.jsonl").exists()
    # A lone summary still takes the next number, past the metrics' generations.
    (tmp_path / "checkpoint.pt").write_text("c")
    assert keep_generation(tmp_path, names) == 4


def test_an_input_that_the_run_rewrites_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--data .*metrics\.jsonl"):
        refuse_inputs_in_outputs(
            {"--data": tmp_path / "metrics.jsonl", "--config": None}, tmp_path, ["metrics.jsonl"]
        )
    refuse_inputs_in_outputs({"--data": tmp_path / "other.txt"}, tmp_path, ["metrics.jsonl"])


def test_the_lock_does_not_block_for_long(tmp_path):
    with RunLock(tmp_path):
        start = time.perf_counter()
        with pytest.raises(RunFolderLocked):
            RunLock(tmp_path).acquire()
        assert time.perf_counter() - start < 1.0  # refused at once, never waits
