"""Session-wide test settings.

The tests use tiny tensors, for which torch's intra-op threading costs far more than it
saves (OpenMP spin-waits oversubscribe a 2-core machine): every test runs on one thread,
and the previous setting comes back after it. Tests that need threads set them locally.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
