"""The two exchanges of owner compute, on flat buffers in buckets (``torch.distributed``).

``all_gather_flat``
    DDP: every rank holds its owned results as one flat buffer (lengths differ by rank); the
    buffers are padded to the longest, cut into buckets of at most ``bucket_elems`` entries,
    and each bucket is one ``all_gather_single`` (all launched, then waited on), so the
    number of calls depends on the bytes, never on the number of matrices.
``all_to_all_flat``
    FSDP2: rank ``r`` sends ``pieces[s]`` to rank ``s`` and receives what each rank sent it,
    in one ``all_to_all_single`` with split sizes.

``CommStats`` counts the calls and the bytes a rank sends (a ring all-gather sends
``(W - 1)`` buckets' worth per call), padding included, next to the payload (every result
once), so that the overhead of the padding is visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["CommStats", "all_gather_flat", "all_to_all_flat"]


@dataclass
class CommStats:
    """Running totals of one rank's collective traffic (reset with ``reset()``)."""

    calls: int = 0
    #: bytes this rank sends (ring all-gather: ``(W - 1)`` x bucket; all-to-all: the pieces
    #: it sends to other ranks), padding included
    sent_bytes: int = 0
    #: bytes of the results exchanged, each counted once (the lower bound of the total traffic)
    payload_bytes: int = 0

    def reset(self) -> None:
        self.calls = self.sent_bytes = self.payload_bytes = 0


def all_gather_flat(
    local: Tensor,
    lengths: list[int],
    group: dist.ProcessGroup | None,
    bucket_elems: int,
    stats: CommStats | None = None,
) -> list[Tensor]:
    """Every rank's 1-D ``local`` buffer (``lengths[r]`` entries on rank ``r``), everywhere."""
    world, rank = len(lengths), dist.get_rank(group)
    if local.numel() != lengths[rank]:
        raise ValueError(
            f"rank {rank}: its buffer has {local.numel()} entries, the plan says {lengths[rank]}"
        )
    longest = max(lengths)
    if longest == 0:
        return [local.new_empty(0) for _ in range(world)]
    chunk = max(1, min(bucket_elems, longest))
    buckets = math.ceil(longest / chunk)
    send = local.new_zeros(buckets * chunk)
    send[: local.numel()] = local
    recv = local.new_empty(buckets, world, chunk)
    works = [
        dist.all_gather_single(
            recv[k].view(-1), send[k * chunk : (k + 1) * chunk], group=group, async_op=True
        )
        for k in range(buckets)
    ]
    for work in works:
        work.wait()
    if stats is not None:
        item = local.element_size()
        stats.calls += buckets
        stats.sent_bytes += (world - 1) * buckets * chunk * item
        stats.payload_bytes += sum(lengths) * item
    by_rank = recv.permute(1, 0, 2).reshape(world, -1)
    return [by_rank[r, : lengths[r]] for r in range(world)]


def all_to_all_flat(
    pieces: list[Tensor],
    recv_lengths: list[int],
    group: dist.ProcessGroup | None,
    stats: CommStats | None = None,
) -> list[Tensor]:
    """Send ``pieces[s]`` (1-D) to rank ``s``; return the piece each rank sent here."""
    rank = dist.get_rank(group)
    send_lengths = [p.numel() for p in pieces]
    send = torch.cat(pieces) if pieces else torch.empty(0)
    recv = send.new_empty(sum(recv_lengths))
    dist.all_to_all_single(
        recv, send, output_split_sizes=recv_lengths, input_split_sizes=send_lengths, group=group
    )
    if stats is not None:
        item = send.element_size()
        stats.calls += 1
        stats.sent_bytes += (sum(send_lengths) - send_lengths[rank]) * item
        stats.payload_bytes += (sum(send_lengths) - send_lengths[rank]) * item
    return list(recv.split(recv_lengths))
