"""everyscale.dist: the same optimizers on many processes, under DDP and FSDP2 (torchrun).

    import torch.distributed as dist
    import everyscale
    from everyscale.dist import distribute

    dist.init_process_group("gloo")  # or "nccl"; torchrun sets the rank and world size
    model = torch.nn.parallel.DistributedDataParallel(model)   # or fully_shard(model)
    opt = distribute(everyscale.optimizer(model.module, "muon", lr=0.02))

- ``optimizer.distribute``: owner compute of the polar-factor LMOs (bucketed all-gather under
  DDP, all-to-all of rows under FSDP2), element-wise geometries local.
- ``owners``: the FLOP-balanced owner of each matrix.
- ``comm``: the flat-buffer collectives and their byte counts.
- ``checkpoint``: ``save``/``load`` with ``torch.distributed.checkpoint`` (sharded state,
  written to a temporary folder renamed into place; resumes on another number of ranks).

See docs/distributed.md.
"""

from __future__ import annotations

from everyscale.dist.comm import CommStats
from everyscale.dist.optimizer import distribute, is_polar, shard_rows
from everyscale.dist.owners import OwnerPlan, assign_owners, polar_flops

__all__ = [
    "CommStats",
    "OwnerPlan",
    "assign_owners",
    "distribute",
    "is_polar",
    "polar_flops",
    "shard_rows",
]
