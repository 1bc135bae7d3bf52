"""Session-wide test settings.

The tests use tiny tensors, for which torch's intra-op threading costs far more than it
saves (and oversubscribes a 2-core machine): one thread keeps the suite fast. Tests that
need threads set them locally.
"""

import torch

torch.set_num_threads(1)
