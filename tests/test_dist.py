"""everyscale.dist on real spawned gloo processes against one process (tests/dist_workers.py).

One spawn per world size runs all of its cases (a spawn costs seconds of imports); the tests
below read what the ranks saved. At 2 ranks gloo's sum of two gradients is exact, so DDP and
FSDP2 runs must equal one process with ``grad_accum=2`` bit for bit; at 4 ranks the order of
the sum differs and presets without a sign geometry must agree within 1e-5.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import dist_workers as workers
from everyscale.dist import assign_owners, distribute, shard_rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(world: int, folder: Path) -> list[dict]:
    mp.spawn(workers.worker, args=(world, _free_port(), str(folder)), nprocs=world)
    return [torch.load(folder / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[list[dict], Path]:
    folder = tmp_path_factory.mktemp("dist2")
    return _spawn(2, folder), folder


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> list[dict]:
    return _spawn(4, tmp_path_factory.mktemp("dist4"))


def _assert_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), (
            f"{name}: max diff {(got[name] - want[name]).abs().max().item():.3g}"
        )


def _max_diff(got: dict, want: dict) -> float:
    return max((got[k] - want[k]).abs().max().item() for k in want)


@pytest.mark.parametrize("preset", ["sgd", "adamw", "muon", "scion"])
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_equal_one_process_bit_for_bit(two, parallel, preset):
    ranks, _ = two
    want = workers.train_single(preset, accum=2)
    for results in ranks:
        _assert_equal(results[f"{parallel}/{preset}"], want)
    # and training moved the weights (a frozen model would also "agree")
    start = workers.full_params(workers.build())
    assert _max_diff(want, start) > 1e-3


@pytest.mark.parametrize("preset", ["clipped_scion", "sharp_spectral"])
def test_clipped_and_sharp_steps_two_ranks(two, preset):
    ranks, _ = two
    want = workers.train_single(preset, steps=workers.SHORT, accum=2)
    _assert_equal(ranks[0][f"ddp/{preset}"], want)
    # FSDP2 sums the dual norm <d, lmo(d)> of a matrix from its shards: float tolerance
    assert _max_diff(ranks[1][f"fsdp/{preset}"], want) < 1e-5


@pytest.mark.parametrize("name, preset, parallel", workers.HF_CASES)
def test_transformers_layouts_under_ddp_and_fsdp(two, name, preset, parallel):
    pytest.importorskip("transformers")
    ranks, _ = two
    got = ranks[0][f"hf/{name}/{preset}/{parallel}"]
    # GPT-2 ties its head to the embedding: one process adds the two uses' gradients of each
    # micro-batch in another order than DDP, an ulp apart, so compare to float tolerance
    assert _max_diff(got, workers.hf_single(name, preset)) < 1e-4


def test_uneven_split_one_matrix_of_a_shape_for_two_ranks(two):
    ranks, _ = two
    _assert_equal(ranks[0]["ddp/muon/depth1"], workers.train_single("muon", depth=1))


def test_accumulating_four_micro_batches_equals_one_big_batch(two):
    ranks, _ = two
    got = ranks[0]["ddp/muon/micro4"]  # 2 ranks x 2 accumulated micro-batches
    assert _max_diff(got, workers.train_single("muon", steps=3, accum=1)) < 1e-6


def test_lmo_runs_once_per_step_and_the_work_splits(two):
    ranks, _ = two
    counter = workers.count_polar_calls()
    workers.train_single("muon", steps=3, accum=1)
    alone = counter[0]
    for results in ranks:
        # micro-batches do not add polar-factor calls
        assert results["polar_calls/micro4"] == results["polar_calls/micro1"]
        # each rank computes only its owned shape stacks: fewer calls than one process
        assert 0 < results["polar_calls/micro1"] < alone
    assert ranks[0]["polar_calls/micro1"] + ranks[1]["polar_calls/micro1"] >= alone


@pytest.mark.parametrize("preset", ["muon", "adamw"])
def test_checkpoint_saved_on_two_ranks_resumes_on_two_and_on_one(two, preset):
    ranks, folder = two
    through = ranks[0][f"ckpt/{preset}/through"]
    # saving changes nothing: still one process's run, bit for bit
    _assert_equal(through, workers.train_single(preset, steps=workers.SHORT, accum=2))
    _assert_equal(ranks[0][f"ckpt/{preset}/resumed"], through)  # resumed on 2 ranks: exact
    checkpoint = folder / f"ckpt-{preset}"
    assert (checkpoint / ".metadata").is_file()
    assert not checkpoint.with_name(checkpoint.name + ".tmp").exists()
    alone = workers.train_single_resumed(preset, checkpoint, steps=workers.SHORT)  # resharded
    assert _max_diff(alone, through) < 1e-6


def test_bad_layouts_and_mismatched_ranks_fail_on_every_rank(two):
    ranks, _ = two
    for results in ranks:
        errors = results["errors"]
        assert "Shard(dim=1)" in errors["shard1"] and "weight" in errors["shard1"]
        assert "parallel='fsdp'" in errors["ddp_on_dtensor"]
        assert "rank 1" in errors["mismatch"] and "blocks.1" in errors["mismatch"]


@pytest.mark.parametrize("preset", ["sgd", "adamw", "muon"])
def test_four_ranks_within_float_tolerance(four, preset):
    want = workers.train_single(preset, accum=4)
    for results in four:
        assert _max_diff(results[f"ddp/{preset}"], want) < 1e-5
    _assert_equal(four[3][f"ddp/{preset}"], four[0][f"ddp/{preset}"])


def test_not_initialized_is_a_clear_error():
    opt = workers.make_optimizer(workers.build(), "muon")
    with pytest.raises(ValueError, match="init_process_group"):
        distribute(opt)


def test_owners_balance_flops_and_are_deterministic():
    plan = assign_owners([8, 8, 1, 1, 1, 1, 4, 4], 2)
    assert plan.loads == (14, 14)
    assert plan.owner == assign_owners([8, 8, 1, 1, 1, 1, 4, 4], 2).owner
    assert assign_owners([5], 3).owner == (0,)  # more ranks than jobs
    with pytest.raises(ValueError, match="world_size"):
        assign_owners([1], 0)


def test_shard_rows_follow_torch_chunk():
    for rows in range(0, 9):
        for world in range(1, 5):
            chunks = torch.arange(rows).chunk(world) if rows else ()
            sizes = [len(c) for c in chunks] + [0] * (world - len(chunks))
            assert [shard_rows(rows, world, r)[1] for r in range(world)] == sizes


def _metrics(folder: Path) -> list[dict]:
    """The metrics rows without the wall-clock seconds."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_training_loop_on_two_ranks_equals_one_process_and_resumes(two, parallel, tmp_path):
    from everyscale.train import run

    ranks, folder = two
    engine = ranks[0]["engine"]
    assert engine[f"{parallel}/through"]["status"] == "completed"
    assert engine[f"{parallel}/through"]["processes"] == 2
    alone = run(workers.run_config(tmp_path / "alone", grad_accum=2))
    through = _metrics(folder / f"run-{parallel}")
    assert through == _metrics(tmp_path / "alone")  # every loss, bit for bit
    assert len(through) == 7  # step 0 and 6 steps: rank 1 wrote no rows
    assert engine[f"{parallel}/through"]["final_val_loss"] == alone["final_val_loss"]
    assert engine[f"{parallel}/stopped"]["status"] == "stopped"
    assert _metrics(folder / f"run-{parallel}-resumed") == through
    assert (folder / f"run-{parallel}" / "checkpoint.dcp" / ".metadata").is_file()
    assert not (folder / f"run-{parallel}" / "checkpoint.pt").exists()


def _everyscale(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "everyscale", *args],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip


def test_train_nproc_2_launches_torchrun_and_rank_0_writes(tmp_path):
    from available_data import TEXT_DATA

    out = tmp_path / "run"
    result = _everyscale(
        "train", "--nproc", "2", "--parallel", "ddp", "--model", "gpt", "--data", TEXT_DATA,
        "--width", "16", "--depth", "1", "--heads", "2", "--context", "8", "--batch-size", "4",
        "--steps", "3", "--val-windows", "8", "--threads", "1", "--quiet", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("completed: 3 steps") == 1  # rank 0 alone reports
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["processes"], summary["parallel"]) == (2, "ddp")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_failed_rank_stops_the_run_with_its_error(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        "import torch.distributed as dist, everyscale\n"
        "from everyscale.dist import distribute\n"
        "from everyscale.train.models import build_model\n"
        "dist.init_process_group('gloo')\n"
        "model = build_model('gpt', width=16, depth=1, heads=2, context=8, vocab=32)\n"
        "opt = distribute(everyscale.optimizer(model, 'muon'))\n"
        "if dist.get_rank() == 1:\n"
        "    raise RuntimeError('boom on rank 1')\n"
        "model(model.example_input()).sum().backward()\n"
        "opt.step()  # rank 0 waits for rank 1 in the owners' all-gather\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(script)],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "boom on rank 1" in result.stderr
    assert time.perf_counter() - start < 120  # no hang until the 300 s collective timeout


def test_parallel_without_processes_is_a_clear_cli_error(capsys):
    from everyscale.cli import main

    assert main(["train", "--parallel", "fsdp", "--steps", "1", "--quiet"]) == 2
    assert "--parallel fsdp needs several processes: add --nproc N" in capsys.readouterr().err


def test_batch_that_does_not_split_over_the_ranks_is_refused():
    from everyscale.dist.engine import DistRun, check_parallel

    with pytest.raises(ValueError, match="--batch-size 6 is not divisible by 2 processes"):
        DistRun(0, 2, "ddp").check_batch(6, 2)
    with pytest.raises(ValueError, match="--parallel must be one of ddp, fsdp"):
        check_parallel("zero3")


def test_checkpoint_in_one_process_round_trips_and_never_overwrites_a_user_folder(tmp_path):
    from everyscale.dist import checkpoint

    model = workers.build()
    opt = workers.make_optimizer(model, "muon")
    workers.loss_of(model, workers.global_batch(0)).backward()
    opt.step()
    path = checkpoint.save(tmp_path / "ckpt", model, opt, extra={"step": 1})
    checkpoint.save(path, model, opt, extra={"step": 1})  # replacing our own is allowed
    fresh = workers.build(seed=5)
    fresh_opt = workers.make_optimizer(fresh, "muon")
    assert checkpoint.load(path, fresh, fresh_opt) == {"step": 1}
    _assert_equal(workers.full_params(fresh), workers.full_params(model))
    assert fresh_opt.steps_taken == 1
    for p, q in zip(model.parameters(), fresh.parameters()):
        for key, value in opt.state[p].items():
            assert torch.equal(fresh_opt.state[q][key], value)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"not a torch\.distributed\.checkpoint folder"):
        checkpoint.save(mine, model, opt)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError, match=r"no torch\.distributed\.checkpoint"):
        checkpoint.load(tmp_path / "absent", fresh, fresh_opt)
