"""Offline datasets: deterministic splits, exact windows, fixed validation, the IDX reader."""

import gzip
import struct

import numpy as np
import pytest
import torch

from everyscale.train.data import (
    FASHION_MNIST_DEBIAN_DIR,
    TextDataset,
    find_fashion_mnist,
    load_dataset,
    read_idx,
    stdlib_bytes,
)


def test_text_windows_are_contiguous_and_targets_shift_by_one():
    data = bytes(range(256)) * 8
    ds = TextDataset(data, context=16)
    x, y = ds.sample_batch(5, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    # In this corpus each byte is followed by the next one modulo 256.
    assert torch.equal(y, (x + 1) % 256)


def test_training_batches_depend_only_on_the_generator_state():
    ds = load_dataset("stdlib", context=32)
    g = torch.Generator().manual_seed(3)
    ds.sample_batch(4, g)
    state = g.get_state()
    a = ds.sample_batch(4, g)
    g2 = torch.Generator()
    g2.set_state(state)
    b = ds.sample_batch(4, g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_validation_is_fixed_and_disjoint_from_training():
    text = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
    ds = TextDataset(text, context=20, max_val_windows=10)
    first = [torch.cat(b) for b in ds.val_batches(3)]
    second = [torch.cat(b) for b in ds.val_batches(3)]
    assert len(first) == 4 and all(torch.equal(a, b) for a, b in zip(first, second))
    assert ds.num_val_examples == 10
    assert len(ds.train_tokens) == 4500 and len(ds.val_tokens) == 500
    assert bytes(ds.val_tokens.tolist()) == text[4500:]


def test_context_longer_than_the_data_is_refused():
    with pytest.raises(ValueError, match="choose --context at most"):
        TextDataset(b"x" * 100, context=64)
    with pytest.raises(ValueError, match="pass a context length"):
        load_dataset("stdlib")


def test_stdlib_corpus_is_large_and_deterministic():
    data = stdlib_bytes()
    assert len(data) > 5_000_000
    assert b"def " in data[:1_000_000]
    ds = load_dataset("stdlib", context=64)
    assert ds.vocab_size == 256 and ds.kind == "text" and ds.input_shape == (64,)


def test_stdlib_corpus_skips_installed_packages_and_reads_in_path_order(tmp_path, monkeypatch):
    from everyscale.train import data

    for name, text in {
        "b.py": "B",
        "a/z.py": "AZ",
        "a-b/x.py": "AB",  # "a-b" < "a/..." as strings, but "a" < "a-b" as path components
        "a/notes.txt": "not python",
        "site-packages/pkg/mod.py": "installed",
        "a/dist-packages/mod.py": "installed",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(data.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    data.stdlib_bytes.cache_clear()
    try:
        assert data.stdlib_bytes() == b"AZABB"
    finally:
        data.stdlib_bytes.cache_clear()


def test_text_file_path_and_missing_path(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("hello world\n" * 200)
    ds = load_dataset(str(path), context=8)
    assert ds.kind == "text"
    with pytest.raises(FileNotFoundError, match="neither a known dataset"):
        load_dataset(str(tmp_path / "absent.txt"), context=8)


def test_shakespeare_env_var_pointing_nowhere_falls_back_or_names_the_variable(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("EVERYSCALE_SHAKESPEARE", str(tmp_path / "none.txt"))
    from everyscale.train import data

    monkeypatch.setattr(data, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="EVERYSCALE_SHAKESPEARE"):
        data.shakespeare_path()


def test_digits_split_is_seeded_and_standardized():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10 and a.kind == "image"
    assert len(a.train_x) + len(a.val_x) == 1797
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)
    assert abs(float(a.train_x.mean())) < 1e-5 and float(a.train_x.std()) == pytest.approx(
        1, abs=1e-3
    )
    x, y = a.sample_batch(7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 1, 8, 8) and y.shape == (7,)


def write_idx(path, array, gz):
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_reader_round_trips_a_file_it_did_not_write(tmp_path, gz, dtype):
    array = (np.arange(2 * 3 * 4) * 7 - 5).astype(dtype).reshape(2, 3, 4)
    if dtype is np.uint8:
        array = (np.arange(24) * 11 % 256).astype(np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array, gz)
    got = read_idx(path)
    assert got.dtype == dtype and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, array)


def test_idx_reader_refuses_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "t.idx"
    write_idx(path, np.zeros((4, 5), np.uint8), gz=False)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)
    (tmp_path / "f.idx").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "f.idx")


def test_fashion_mnist_directory_of_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 30), ("t10k", 10)):
        write_idx(
            tmp_path / f"{stem}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28)).astype(np.uint8),
            True,
        )
        write_idx(
            tmp_path / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8), True
        )
    ds = load_dataset(str(tmp_path))
    assert ds.input_shape == (1, 28, 28) and len(ds.train_x) == 30 and len(ds.val_x) == 10


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        find_fashion_mnist(tmp_path)


@pytest.mark.skipif(
    not (FASHION_MNIST_DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist is not installed",
)
def test_debian_fashion_mnist_has_the_standard_sizes():
    ds = load_dataset("fashion-mnist")
    assert len(ds.train_x) == 60_000 and len(ds.val_x) == 10_000
    assert ds.input_shape == (1, 28, 28)
    assert sorted(torch.bincount(ds.val_y).tolist()) == [1000] * 10


def test_npy_token_ids_become_a_text_dataset(tmp_path):
    ids = (np.arange(3000) * 7 % 1000).astype(np.uint16)  # ids above 255: not bytes
    np.save(tmp_path / "tokens.npy", ids)
    ds = load_dataset(str(tmp_path / "tokens.npy"), context=12)
    assert ds.vocab_size == 1000 and ds.kind == "text"
    x, y = ds.sample_batch(4, torch.Generator().manual_seed(0))
    assert torch.equal(y, (x + 7) % 1000)  # the array's own successor rule
    np.save(tmp_path / "floats.npy", ids.astype(np.float32))
    with pytest.raises(ValueError, match="must hold integers"):
        load_dataset(str(tmp_path / "floats.npy"), context=12)
    with pytest.raises(ValueError, match="outside vocab_size"):
        TextDataset(torch.tensor([0, 5, 9] * 100), context=4, vocab_size=8)
