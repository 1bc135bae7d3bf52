"""Offline datasets: byte-level text and small image sets, no downloads at run time.

Every dataset offers the same small interface to the training loop:

- ``kind``: ``"text"`` or ``"image"``;
- ``sample_batch(batch_size, generator) -> (x, y)``: a random training batch drawn only from the
  ``torch.Generator`` the caller owns, so saving that generator's state makes resume exact;
- ``val_batches(batch_size)``: an iterator over a FIXED validation set (same examples, same
  order, every call);
- ``vocab_size`` (text) or ``num_classes`` (images), ``input_shape`` (one example, no batch),
  ``tokens_per_example`` (``context`` for text, 1 for an image: the loop counts images as tokens).

Text is byte level (vocabulary 256): ``x`` is a window of ``context`` bytes and ``y`` the same
window shifted by one. The split is deterministic: the last ``VAL_FRACTION`` of the bytes is the
validation split (as nanoGPT does for Shakespeare), and the validation set is up to
``max_val_windows`` non-overlapping windows spread evenly across it.

Sources (see :func:`load_dataset`): ``stdlib`` (this Python's own ``.py`` sources), ``shakespeare``,
``digits`` (scikit-learn), ``fashion-mnist`` (Debian's ``dataset-fashion-mnist`` IDX files), or a
path to a text file, a ``.npy`` array of token ids, or a directory of Fashion-MNIST-style IDX
files.
"""

from __future__ import annotations

import functools
import gzip
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "ImageDataset",
    "TextDataset",
    "find_fashion_mnist",
    "load_dataset",
    "read_idx",
]

DATASETS = ("stdlib", "shakespeare", "digits", "fashion-mnist")
VAL_FRACTION = 0.1
BYTE_VOCAB = 256
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Where tinyshakespeare lives relative to the repository root (src/everyscale/train/data.py
# is four levels below it): /work/main -> /work/shared/data.
_REPO_ROOT = Path(__file__).resolve().parents[3]
SHAKESPEARE_ENV = "EVERYSCALE_SHAKESPEARE"


# ----------------------------------------------------------------------------- text


class TextDataset:
    """Language-modelling data: random contiguous training windows, fixed validation.

    Args:
        data: the whole corpus as bytes (byte-level, vocabulary 256), or a 1-D integer tensor
            of token ids (vocabulary ``vocab_size``, default ``max id + 1``).
        context: window length in tokens.
        name: a label for messages.
        max_val_windows: cap on the validation windows (evaluation cost grows with it).
        vocab_size: the vocabulary of a token tensor (ignored for bytes).
    """

    kind = "text"

    def __init__(
        self,
        data: bytes | torch.Tensor,
        context: int,
        name: str = "text",
        max_val_windows: int = 256,
        vocab_size: int | None = None,
    ):
        if not isinstance(context, int) or context < 1:
            raise ValueError(f"context must be a positive integer, got {context!r}")
        self.name = name
        self.context = context
        self.tokens_per_example = context
        self.input_shape = (context,)
        if isinstance(data, (bytes, bytearray)):
            tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            self.vocab_size = BYTE_VOCAB
        else:
            tokens = data
            if tokens.ndim != 1 or tokens.is_floating_point() or tokens.is_complex():
                raise ValueError(f"data {name!r}: token ids must be a 1-D integer array")
            if len(tokens) and int(tokens.min()) < 0:
                raise ValueError(f"data {name!r}: token ids must be >= 0")
            largest = int(tokens.max()) if len(tokens) else 0
            self.vocab_size = vocab_size if vocab_size is not None else largest + 1
            if largest >= self.vocab_size:
                raise ValueError(
                    f"data {name!r}: token id {largest} is outside vocab_size={self.vocab_size}"
                )
        n_val = int(len(tokens) * VAL_FRACTION)
        self.train_tokens = tokens[: len(tokens) - n_val]
        self.val_tokens = tokens[len(tokens) - n_val :]
        # A window needs context + 1 bytes (inputs and the next-byte targets).
        for split, part in (("training", self.train_tokens), ("validation", self.val_tokens)):
            if len(part) < context + 1:
                raise ValueError(
                    f"context={context} is longer than the {split} split of {name!r} "
                    f"({len(part)} tokens; the validation split is the last {VAL_FRACTION:.0%}): "
                    f"choose --context at most {len(part) - 1} or use a larger text"
                )
        n_windows = min(max_val_windows, len(self.val_tokens) // (context + 1))
        n_windows = max(n_windows, 1)
        starts = np.linspace(0, len(self.val_tokens) - context - 1, n_windows).astype(np.int64)
        self._offsets = torch.arange(context + 1)
        self._val_windows = self._windows(self.val_tokens, torch.from_numpy(starts))

    def __repr__(self) -> str:
        return (
            f"TextDataset({self.name!r}, context={self.context}, train={len(self.train_tokens)} "
            f"bytes, val={len(self._val_windows)} windows)"
        )

    def _windows(self, tokens: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Rows ``tokens[start : start + context + 1]`` as int64 (inputs plus next tokens)."""
        return tokens[starts[:, None] + self._offsets].long()

    def sample_batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random contiguous windows: ``x`` (B, context) bytes and ``y`` shifted by one."""
        high = len(self.train_tokens) - self.context  # last valid start + 1
        starts = torch.randint(high, (batch_size,), generator=generator)
        window = self._windows(self.train_tokens, starts)
        return window[:, :-1], window[:, 1:]

    @property
    def num_val_examples(self) -> int:
        return len(self._val_windows)

    def val_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The fixed validation windows, in order, ``batch_size`` at a time."""
        for i in range(0, len(self._val_windows), batch_size):
            window = self._val_windows[i : i + batch_size]
            yield window[:, :-1], window[:, 1:]


@functools.lru_cache(maxsize=1)
def stdlib_bytes() -> bytes:
    """This Python's standard library ``.py`` sources, concatenated in sorted path order.

    Found through ``sysconfig`` (the ``stdlib`` path); installed packages (``site-packages``,
    ``dist-packages``) are excluded so the corpus is the same on every machine with the same
    Python version. Cached per process (about 30 MB, a fraction of a second to read).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    excluded = {"site-packages", "dist-packages"}
    files = []
    # os.walk prunes the installed packages instead of listing them (rglob would walk them all:
    # ten times the stdlib's files, over a second); symlinked directories are not followed.
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d not in excluded]
        files += [Path(directory, name) for name in names if name.endswith(".py")]
    files.sort()  # Path order (by path components), the same on every machine
    if not files:
        raise FileNotFoundError(
            f"data 'stdlib': no .py files under {root}; this Python has no standard-library "
            "sources installed: pass a text file path as the data instead"
        )
    return b"".join(p.read_bytes() for p in files)


def shakespeare_path() -> Path:
    """Where tinyshakespeare.txt is: ``$EVERYSCALE_SHAKESPEARE`` or ``../shared/data/``."""
    env = os.environ.get(SHAKESPEARE_ENV)
    candidates = [Path(env)] if env else []
    candidates += [
        _REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt",
        Path.cwd().parent / "shared" / "data" / "tinyshakespeare.txt",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "data 'shakespeare': tinyshakespeare.txt not found (looked in "
        + ", ".join(str(p) for p in candidates)
        + f"); set {SHAKESPEARE_ENV}=/path/to/tinyshakespeare.txt or pass the file's path as data"
    )


@functools.lru_cache(maxsize=4)
def _read_text_file(path: str) -> bytes:
    return Path(path).read_bytes()


# ----------------------------------------------------------------------------- images


class ImageDataset:
    """Labelled images held in memory as float32 tensors ``(N, C, H, W)``, standardized.

    Pixels are standardized with the mean and standard deviation of the training images
    (one scalar each), the usual preprocessing for MNIST-like data.
    """

    kind = "image"

    def __init__(
        self,
        train_x: np.ndarray,
        train_y: np.ndarray,
        val_x: np.ndarray,
        val_y: np.ndarray,
        num_classes: int,
        name: str = "images",
    ):
        self.name = name
        self.num_classes = num_classes
        self.tokens_per_example = 1
        train = torch.as_tensor(train_x, dtype=torch.float32)
        val = torch.as_tensor(val_x, dtype=torch.float32)
        mean, std = train.mean(), train.std()
        self.train_x = ((train - mean) / std).unsqueeze(1)  # add the channel axis
        self.val_x = ((val - mean) / std).unsqueeze(1)
        self.train_y = torch.as_tensor(train_y, dtype=torch.long)
        self.val_y = torch.as_tensor(val_y, dtype=torch.long)
        self.input_shape = tuple(self.train_x.shape[1:])

    def __repr__(self) -> str:
        return (
            f"ImageDataset({self.name!r}, shape={self.input_shape}, train={len(self.train_x)}, "
            f"val={len(self.val_x)}, classes={self.num_classes})"
        )

    def sample_batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images drawn uniformly with replacement; ``x`` (B, C, H, W), ``y`` (B,) labels."""
        index = torch.randint(len(self.train_x), (batch_size,), generator=generator)
        return self.train_x[index], self.train_y[index]

    @property
    def num_val_examples(self) -> int:
        return len(self.val_x)

    def val_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole validation split, in a fixed order, ``batch_size`` at a time."""
        for i in range(0, len(self.val_x), batch_size):
            yield self.val_x[i : i + batch_size], self.val_y[i : i + batch_size]


@functools.lru_cache(maxsize=4)
def _digits(seed: int) -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits; a seeded 80/20 train/validation split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)  # (1797, 8, 8), values 0..16
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = len(images) // 5
    val, train = order[:n_val], order[n_val:]
    return ImageDataset(
        images[train], bunch.target[train], images[val], bunch.target[val], 10, name="digits"
    )


# IDX element types (LeCun's MNIST format): the third magic byte.
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the MNIST / Fashion-MNIST array format.

    Layout: two zero bytes, a type byte (0x08 = uint8, ...), a byte giving the number of
    dimensions ``k``, then ``k`` big-endian uint32 sizes, then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header}; the file is truncated or corrupt"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def find_fashion_mnist(directory: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the four Fashion-MNIST IDX files (``.gz`` or plain) in ``directory``.

    ``directory`` defaults to where Debian's ``dataset-fashion-mnist`` package installs them.
    """
    directory = Path(directory) if directory is not None else FASHION_MNIST_DEBIAN_DIR
    found, missing = {}, []
    for key, stem in FASHION_MNIST_FILES.items():
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(f"{stem}.gz")
    if missing:
        raise FileNotFoundError(
            f"data 'fashion-mnist': missing {', '.join(missing)} in {directory}; install them "
            "with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass a directory "
            "that holds the four IDX files as the data"
        )
    return found


@functools.lru_cache(maxsize=2)
def _fashion_mnist(directory: str | None) -> ImageDataset:
    files = find_fashion_mnist(directory)
    arrays = {key: read_idx(path) for key, path in files.items()}
    return ImageDataset(
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        10,
        name="fashion-mnist",
    )


# ----------------------------------------------------------------------------- entry point


NPY_MAGIC = b"\x93NUMPY"  # the first bytes of every .npy file (NumPy's format spec)


def _load_token_ids(path: Path, name: str) -> np.ndarray:
    """A ``.npy`` of integer token ids; anything else is refused saying what it is."""
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        raise ValueError(
            f"data {name!r} is named .npy but is not a NumPy file (it does not start with "
            "NumPy's header); rename a text file to .txt, or save token ids with numpy.save"
        )
    try:
        ids = np.load(path, allow_pickle=False)
    except ValueError as err:  # object arrays, a damaged header
        what = "it holds pickled Python objects" if "pickle" in str(err) else str(err)
        raise ValueError(
            f"data {name!r}: not a NumPy array of token ids ({what}); save a 1-D integer "
            "array with numpy.save"
        ) from None
    except EOFError:
        raise ValueError(f"data {name!r}: the .npy file is cut short") from None
    if ids.dtype.kind not in "iu":
        raise ValueError(f"data {name!r}: a .npy token file must hold integers, not {ids.dtype}")
    return ids


def load_dataset(
    name_or_path: str | os.PathLike,
    *,
    context: int | None = None,
    seed: int = 0,
    max_val_windows: int = 256,
) -> TextDataset | ImageDataset:
    """Load a dataset by name or path (see the module docstring for the interface).

    Args:
        name_or_path: ``stdlib``, ``shakespeare``, ``digits``, ``fashion-mnist``, a text file
            (bytes), a ``.npy`` file of 1-D integer token ids (vocabulary ``max id + 1``), or a
            directory holding the four Fashion-MNIST IDX files.
        context: window length; required for text, ignored for images.
        seed: the seed of the train/validation split where one is random (``digits``);
            text splits and Fashion-MNIST's official split do not depend on it.
        max_val_windows: cap on the number of validation windows for text.

    Raises:
        ValueError: unknown name, missing or too-long ``context``.
        FileNotFoundError: the data's files are absent (the message says how to get them).
    """
    name = str(name_or_path)

    def text(data: bytes | torch.Tensor, label: str) -> TextDataset:
        if context is None:
            raise ValueError(f"data {label!r} is text: pass a context length (--context)")
        return TextDataset(data, context, name=label, max_val_windows=max_val_windows)

    if name == "stdlib":
        return text(stdlib_bytes(), "stdlib")
    if name == "shakespeare":
        return text(_read_text_file(str(shakespeare_path())), "shakespeare")
    if name == "digits":
        return _digits(seed)
    if name == "fashion-mnist":
        return _fashion_mnist(None)
    path = Path(name).expanduser()
    if path.is_dir():
        return _fashion_mnist(str(path.resolve()))
    if path.suffix == ".npy" and path.is_file():
        ids = _load_token_ids(path, name)
        # int64 keeps every id exact (torch has no general uint16/uint32 indexing).
        return text(torch.from_numpy(ids.astype(np.int64, copy=False)), name)
    if path.is_file():
        return text(_read_text_file(str(path.resolve())), name)
    raise FileNotFoundError(
        f"data {name!r} is neither a known dataset ({', '.join(DATASETS)}) nor an existing file "
        "(text, or .npy token ids) or directory: check the spelling or the path"
    )
