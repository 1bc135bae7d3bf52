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

from available_data import TEXT_DATA as TEXT
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


def test_the_refusal_crosses_a_process_pool(tmp_path):
    import pickle

    with RunLock(tmp_path) as lock:
        with pytest.raises(RunFolderLocked) as info:
            RunLock(tmp_path).acquire()
        copy = pickle.loads(pickle.dumps(info.value))
        assert str(copy) == str(info.value)
        assert copy.holder == lock.holder() and copy.holder["pid"] == os.getpid()


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


# ---------------------------------------------------------------------- train.run in a folder


def _tiny(tmp_path, **overrides):
    from everyscale.train import TrainConfig

    values = dict(
        model="gpt", data=TEXT, width=16, depth=1, heads=2, context=16, steps=2, batch_size=4,
        val_windows=4, optimizer="adamw", lr=0.01, threads=1, quiet=True, out=str(tmp_path / "run"),
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != LOCK_NAME}


def test_reruns_keep_every_earlier_run(tmp_path):
    from everyscale.train import run

    run(_tiny(tmp_path, steps=1))
    first = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    run(_tiny(tmp_path, steps=2))
    run(_tiny(tmp_path, steps=3))
    folder = tmp_path / "run"
    assert (folder / "metrics.previous-1.jsonl").read_bytes() == first  # not deleted by run 3
    assert len((folder / "metrics.previous-2.jsonl").read_text().splitlines()) == 2
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 3
    assert not (folder / LOCK_NAME).exists()


def test_resume_of_a_finished_run_without_its_checkpoint(tmp_path):
    from everyscale.train import run

    done = run(_tiny(tmp_path, keep_checkpoint=False))
    folder = tmp_path / "run"
    before = _files(folder)
    # Same settings: finished, nothing to do, nothing rewritten.
    assert run(_tiny(tmp_path, resume=True))["final_val_loss"] == done["final_val_loss"]
    assert _files(folder) == before
    # Other settings: refused with what to do; the finished run is untouched.
    with pytest.raises(ValueError, match=r"--resume: .*completed run.*steps: 2 vs now 5"):
        run(_tiny(tmp_path, resume=True, steps=5, lr=0.02))
    assert _files(folder) == before


def test_train_refused_while_another_process_writes_the_folder(tmp_path, capsys):
    from everyscale.cli import main

    folder = tmp_path / "run"
    run_flags = _tiny(tmp_path)
    proc = _start_holder(folder)
    try:
        argv = ["train", "--data", run_flags.data, "--width", "16", "--heads", "2",
                "--depth", "1", "--context", "16", "--steps", "1", "--quiet",
                "--out", str(folder)]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"pid {proc.pid}" in err and "in use by another run" in err
        assert err.count("\n") == 1  # one line, no traceback
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing was written


def test_train_out_that_is_a_file_or_under_one(tmp_path, capsys):
    from everyscale.cli import main

    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    for out in (afile, afile / "run"):
        assert main(["train", "--steps", "1", "--quiet", "--out", str(out)]) == 2
        assert "--out" in capsys.readouterr().err
    assert afile.read_text() == "mine"


def test_an_input_inside_the_run_folder_is_refused(tmp_path):
    from everyscale.train import run

    run(_tiny(tmp_path))
    metrics = tmp_path / "run" / "metrics.jsonl"
    before = metrics.read_bytes()
    with pytest.raises(ValueError, match=r"--data .*metrics\.jsonl"):
        run(_tiny(tmp_path, data=str(metrics)))
    assert metrics.read_bytes() == before


def test_rank_other_than_zero_takes_no_lock(tmp_path):
    from everyscale.train import run

    folder = tmp_path / "run"
    with RunLock(folder):  # the launcher holds it; rank 1 still runs
        assert run(_tiny(tmp_path), rank=1)["status"] == "completed"


def test_a_ladder_and_a_sweep_lock_their_folder(tmp_path):
    from everyscale.ladder import make_plan, run_ladder
    from everyscale.scale.transfer import SweepConfig, sweep

    folder = tmp_path / "busy"
    proc = _start_holder(folder)
    try:
        with pytest.raises(RunFolderLocked, match=f"pid {proc.pid}"):
            run_ladder(make_plan("tiny"), folder, progress=False, workers=1)
        with pytest.raises(RunFolderLocked, match=f"pid {proc.pid}"):
            sweep(SweepConfig(widths=[16, 32], out=str(folder)), progress=False)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing was written


def test_each_ladder_run_holds_its_own_folder(tmp_path):
    from everyscale.ladder import make_plan
    from everyscale.ladder.ladder import execute_run, train_run

    plan = make_plan("tiny")
    spec = plan.sweep_runs()[0]
    run_dir = tmp_path / "runs" / spec.name
    with RunLock(run_dir):  # e.g. a leftover process still training that run
        record = None
        with pytest.raises(RunFolderLocked):
            record = execute_run(spec, plan, tmp_path, False, train_run)
    assert record is None
