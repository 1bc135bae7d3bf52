"""Atomic writes: a write that dies half way leaves the previous file whole."""

import json

import pytest
import torch

from everyscale.train import checkpoint
from everyscale.train.checkpoint import (
    CheckpointError,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
)


def test_checkpoint_round_trip_and_fingerprint_check(tmp_path):
    path = tmp_path / "c.pt"
    generator = torch.Generator().manual_seed(5)
    save_checkpoint(path, {"config": {"lr": 0.1}, "rng": generator.get_state(), "step": 3})
    state = load_checkpoint(path, {"lr": 0.1})
    assert state["step"] == 3 and torch.equal(state["rng"], generator.get_state())
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0\.1 vs now 0\.2"):
        load_checkpoint(path, {"lr": 0.2})


def test_a_save_that_dies_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"config": {}, "step": 1})
    before = path.read_bytes()

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"config": {}, "step": 2})
    assert path.read_bytes() == before
    assert not (tmp_path / "c.pt.tmp").exists()
    monkeypatch.undo()
    assert load_checkpoint(path, {})["step"] == 1


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an everyscale checkpoint"):
        load_checkpoint(path, {})


def test_atomic_json(tmp_path):
    atomic_write_json(tmp_path / "s.json", {"a": 1.5})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": 1.5}
    assert not (tmp_path / "s.json.tmp").exists()
