"""Session-wide test settings.

The tests use tiny tensors, for which torch's intra-op threading costs far more than it
saves (OpenMP spin-waits oversubscribe a 2-core machine): every test runs on one thread,
and the previous setting comes back after it. Tests that need threads set them locally.
The polar-factor dtype measurement (``everyscale.optim.polar_dtype``) is cached in a
temporary directory of the session, not in the user's cache.
"""

import os

import pytest
import torch
from hypothesis import settings


@pytest.fixture(autouse=True, scope="session")
def _private_polar_dtype_cache(tmp_path_factory):
    before = os.environ.get("EVERYSCALE_CACHE_DIR")
    os.environ["EVERYSCALE_CACHE_DIR"] = str(tmp_path_factory.mktemp("everyscale_cache"))
    yield
    if before is None:
        os.environ.pop("EVERYSCALE_CACHE_DIR", None)
    else:
        os.environ["EVERYSCALE_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Property tests: CI replays the same examples every run (a red CI must be reproducible);
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
