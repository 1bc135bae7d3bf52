"""``distribute(optimizer)``: the same ``NormOptimizer`` on many processes (DDP or FSDP2).

The template (``everyscale.optim.optimizer``) is unchanged; ``distribute`` installs an
``lmo_hook`` that decides where each group's base LMOs are computed. Momentum, decay and the
step stay where they are: element-wise on every rank (replicated tensors under DDP, the local
shards of ``DTensor`` parameters under FSDP2).

DDP (every rank holds the full, all-reduced gradient)
    Each matrix with a polar-factor LMO (``spectral``, ``spectral_conv``: Newton-Schulz or
    Polar Express) gets one owner rank, balanced by its FLOPs (``owners.assign_owners``). The
    owner computes its matrices through the optimizer's own ``group_base_lmos`` (so same-shape
    matrices are still stacked into one batched call, and any layout the optimizer knows plugs
    in), and the results reach every rank by bucketed ``all_gather`` of flat buffers. Every
    other geometry (sign, colnorm, rownorm, rms, euclidean, adam, identity) runs locally: it
    costs no more than the communication would.

FSDP2 (``fully_shard``: each parameter a ``DTensor`` sharded on dimension 0)
    Polar-factor matrices: every rank sends its rows of each matrix to the matrix's owner
    (``all_to_all``), the owner computes the full polar factor, and sends each rank its rows
    back (``all_to_all``). Sign needs nothing; RowNorm reduces along the local rows; ColNorm and
    Euclidean need a reduction of column or whole norms across the shards, which ``DTensor``
    does (a partial-norm all-reduce). Vectors (gains, biases) are small: their shards are
    gathered in one call per group and each rank computes the LMO of the whole vector, which
    keeps the result bit for bit that of one process. Optimizer state is created from the
    parameters, so it is sharded like them.

The LMO runs once per ``step()``, whatever the number of micro-batches accumulated before it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Shard

from everyscale.dist.comm import CommStats, all_gather_flat, all_to_all_flat
from everyscale.dist.owners import OwnerPlan, assign_owners, polar_flops
from everyscale.optim.norms import Norm, SpectralConv
from everyscale.optim.optimizer import NormOptimizer

__all__ = ["Parallel", "distribute", "is_polar", "shard_rows"]

Parallel = Literal["auto", "ddp", "fsdp"]
#: the optimizer's own base-LMO computation for some directions of the current group
Compute = Callable[[list[Tensor]], list[Tensor]]
PARALLEL_MODES: tuple[str, ...] = ("auto", "ddp", "fsdp")


def is_polar(norm: Norm) -> bool:
    """True for geometries whose LMO is a polar factor of the whole matrix (owner compute)."""
    return bool(getattr(norm, "batchable", False))


def shard_rows(rows: int, world: int, rank: int) -> tuple[int, int]:
    """``(offset, count)`` of ``rank``'s rows under ``Shard(0)`` (``torch.chunk`` semantics)."""
    chunk = math.ceil(rows / world) if rows else 0
    offset = min(rank * chunk, rows)
    return offset, max(0, min(chunk, rows - offset))


def _require_initialized() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "everyscale.dist.distribute: torch.distributed is not initialized; call "
            "torch.distributed.init_process_group('gloo' or 'nccl') first, or launch with "
            "torchrun (everyscale train --nproc N)"
        )


def _named_params(optimizer: NormOptimizer) -> list[tuple[str, Tensor, Norm]]:
    """``(name, param, norm)`` for every parameter, in group order."""
    entries = []
    for gi, group in enumerate(optimizer.param_groups):
        norm = optimizer.norm_of(group)
        for i, p in enumerate(group["params"]):
            entries.append((optimizer._param_name(group, gi, i), p, norm))
    return entries


def _layout_errors(entries: list[tuple[str, Tensor, Norm]], parallel: str) -> list[str]:
    """What keeps each parameter from running under ``parallel`` (empty: nothing)."""
    errors = []
    for name, p, _ in entries:
        sharded = isinstance(p, DTensor)
        if parallel == "ddp" and sharded:
            errors.append(
                f"{name} is a DTensor (placements {p.placements}); use parallel='fsdp' for "
                "fully_shard models, parallel='ddp' for DistributedDataParallel"
            )
        elif parallel == "fsdp" and not sharded:
            errors.append(
                f"{name} is a plain tensor, not a DTensor: apply fully_shard to the module "
                "that holds it (or to the whole model) before building the optimizer"
            )
        elif parallel == "fsdp" and (p.device_mesh.ndim != 1 or p.placements != (Shard(0),)):
            errors.append(
                f"{name} has placements {p.placements} on a {p.device_mesh.ndim}-D mesh; "
                "everyscale.dist supports fully_shard's layout (Shard(0) on a 1-D mesh): "
                "shard it on dimension 0, or keep it replicated under DDP"
            )
        elif parallel == "fsdp":
            mesh = p.device_mesh
            expected = shard_rows(p.shape[0], mesh.size(), mesh.get_local_rank())[1]
            if p.ndim == 0 or p.to_local().shape[0] != expected:
                errors.append(
                    f"{name}: local shard has shape {tuple(p.to_local().shape)}, but Shard(0) "
                    f"of {tuple(p.shape)} over {mesh.size()} ranks gives {expected} rows here"
                )
    return errors


def _fingerprint(entries: list[tuple[str, Tensor, Norm]]) -> list[tuple[str, tuple, str, str]]:
    return [(name, tuple(p.shape), str(p.dtype), norm.name) for name, p, norm in entries]


def _disagreement(prints: list[list[tuple]]) -> str | None:
    """A sentence naming the first rank and parameter that differ from rank 0, or None."""
    reference = prints[0]
    for rank, mine in enumerate(prints[1:], start=1):
        for a, b in zip(reference, mine):
            if a != b:
                return (
                    f"ranks disagree on the parameters: rank {rank} has {b[0]} (shape {b[1]}, "
                    f"{b[2]}, norm {b[3]}) where rank 0 has {a[0]} (shape {a[1]}, {a[2]}, "
                    f"norm {a[3]}); build the same model and optimizer on every rank"
                )
        if len(mine) != len(reference):
            return (
                f"ranks disagree on the parameters: rank {rank} has {len(mine)}, rank 0 has "
                f"{len(reference)}; build the same model and optimizer on every rank"
            )
    return None


def _check_everywhere(local_errors: list[str], prints: list[tuple], group: Any) -> None:
    """Share every rank's findings so that all ranks raise the same error (nobody hangs)."""
    world = dist.get_world_size(group)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (local_errors, prints), group=group)
    for rank, (errors, _) in enumerate(gathered):
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise ValueError(f"rank {rank}: {errors[0]}{more}")
    message = _disagreement([p for _, p in gathered])
    if message:
        raise ValueError(message)


def _take_norms_from_rank0(optimizer: NormOptimizer, group: Any) -> None:
    """Every rank uses rank 0's geometry options (e.g. a Newton-Schulz dtype measured there)."""
    settings = [[g["norm"], g["norm_kwargs"]] for g in optimizer.param_groups]
    box = [settings]
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0) if group else 0, group=group)
    for g, (norm, kwargs) in zip(optimizer.param_groups, box[0]):
        g["norm"], g["norm_kwargs"] = norm, dict(kwargs)
    optimizer._norm_cache.clear()


def distribute(
    optimizer: NormOptimizer,
    *,
    parallel: Parallel = "auto",
    group: dist.ProcessGroup | None = None,
    bucket_mb: float = 32.0,
) -> NormOptimizer:
    """Make ``optimizer`` compute its LMOs across the ranks of ``group``; returns it.

    Call it on every rank, after ``init_process_group`` and after building the optimizer on
    the (DDP-wrapped or ``fully_shard``-ed) model's parameters. ``parallel="auto"`` picks
    ``"fsdp"`` when the parameters are ``DTensor`` s and ``"ddp"`` otherwise. Under DDP the
    optimizer expects gradients that are already averaged over the ranks (what
    ``DistributedDataParallel`` does in ``backward``); under FSDP2 the sharded gradients
    ``fully_shard`` leaves. ``bucket_mb`` bounds the size of one all-gather.

    Raises ``ValueError`` (on every rank) when torch.distributed is not initialized, when a
    parameter's layout cannot run as asked (naming it), or when the ranks' parameter lists
    differ (naming the rank and the parameter).
    """
    _require_initialized()
    if not isinstance(optimizer, NormOptimizer):
        raise ValueError(
            f"distribute: expected an everyscale NormOptimizer (everyscale.optimizer(...)), got "
            f"{type(optimizer).__name__}"
        )
    if parallel not in PARALLEL_MODES:
        raise ValueError(
            f"distribute: parallel must be one of {', '.join(PARALLEL_MODES)}, got {parallel!r}"
        )
    if not (isinstance(bucket_mb, (int, float)) and bucket_mb > 0):
        raise ValueError(f"distribute: bucket_mb must be a number > 0, got {bucket_mb!r}")
    entries = _named_params(optimizer)
    if parallel == "auto":
        parallel = "fsdp" if any(isinstance(p, DTensor) for _, p, _ in entries) else "ddp"
    _check_everywhere(_layout_errors(entries, parallel), _fingerprint(entries), group)
    _take_norms_from_rank0(optimizer, group)
    names = {id(p): name for name, p, _ in entries}
    hook_type = FSDPLMO if parallel == "fsdp" else DDPLMO
    optimizer.lmo_hook = hook_type(group, int(bucket_mb * 2**20), names)
    return optimizer


class _OwnerCompute:
    """Shared part of the hooks: the owner plan of each group (cached) and the statistics."""

    parallel: str = ""

    def __init__(self, group: Any, bucket_bytes: int, names: dict[int, str]) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.bucket_bytes = bucket_bytes
        self.names = names
        self.stats = CommStats()
        self._plans: dict[tuple[int, ...], OwnerPlan] = {}
        self._loads = [0] * self.world

    def __call__(
        self,
        optimizer: NormOptimizer,
        group: dict[str, Any],
        norm: Norm,
        params: list[Tensor],
        directions: list[Tensor],
        foreach: bool,
    ) -> list[Tensor]:
        def compute(some: list[Tensor]) -> list[Tensor]:  # the optimizer's own per-group path
            return optimizer.group_base_lmos(group, norm, some, foreach)

        if not is_polar(norm):
            return self.local(compute, directions)
        plan = self.plan(norm, params)
        out: list[Tensor | None] = [None] * len(params)
        for indices in _by_dtype(directions).values():
            sub = OwnerPlan(tuple(plan.owner[i] for i in indices), plan.loads)
            units = self.owner_compute(compute, [directions[i] for i in indices], sub)
            for i, u in zip(indices, units):
                out[i] = u
        return out  # type: ignore[return-value]

    def plan(self, norm: Norm, params: list[Tensor]) -> OwnerPlan:
        """The owners of a group's matrices, the same on every rank (checked on first use)."""
        key = tuple(id(p) for p in params)
        plan = self._plans.get(key)
        if plan is None:
            steps = getattr(norm, "steps", 5)
            names = [self.names.get(id(p), "?") for p in params]
            shapes = [(n, tuple(p.shape)) for n, p in zip(names, params)]
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, shapes, group=self.group)
            for rank, theirs in enumerate(gathered):
                if theirs != gathered[0]:
                    missing = sorted({n for n, _ in gathered[0]} ^ {n for n, _ in theirs})
                    raise ValueError(
                        f"ranks disagree on the parameters stepped together: rank {rank} "
                        f"differs from rank 0 at {', '.join(missing) or 'a shape'} (a parameter "
                        "without a gradient on some ranks?); every rank must compute gradients "
                        "for the same parameters"
                    )
            kernel = isinstance(norm, SpectralConv)  # (out, in, *k) is one (out, in k..) matrix
            costs = [polar_flops(p.shape, steps, kernel) for p in params]
            plan = assign_owners(costs, self.world, self._loads)
            self._loads = list(plan.loads)
            self._plans[key] = plan
        return plan

    def local(self, compute: Compute, directions: list[Tensor]) -> list[Tensor]:
        return compute(directions)

    def owner_compute(
        self, compute: Compute, directions: list[Tensor], plan: OwnerPlan
    ) -> list[Tensor]:
        raise NotImplementedError

    def bucket_elems(self, dtype: torch.dtype) -> int:
        return max(1, self.bucket_bytes // torch.empty((), dtype=dtype).element_size())


def _by_dtype(tensors: list[Tensor]) -> dict[torch.dtype, list[int]]:
    """Indices of ``tensors`` by dtype, in a fixed order (the same on every rank)."""
    out: dict[torch.dtype, list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        out[t.dtype].append(i)
    return dict(sorted(out.items(), key=lambda kv: str(kv[0])))


class DDPLMO(_OwnerCompute):
    """Owners compute whole matrices from their full gradients; ``all_gather`` shares them."""

    parallel = "ddp"

    def owner_compute(
        self, compute: Compute, directions: list[Tensor], plan: OwnerPlan
    ) -> list[Tensor]:
        mine = plan.owned(self.rank)
        units = compute([directions[i] for i in mine])
        dtype = directions[0].dtype
        flat = [u.reshape(-1).to(dtype) for u in units]
        local = torch.cat(flat) if flat else directions[0].new_empty(0)
        lengths = [sum(directions[i].numel() for i in plan.owned(r)) for r in range(self.world)]
        buffers = all_gather_flat(local, lengths, self.group, self.bucket_elems(dtype), self.stats)
        out: list[Tensor | None] = [None] * len(directions)
        for r, buffer in enumerate(buffers):
            offset = 0
            for i in plan.owned(r):
                n = directions[i].numel()
                out[i] = buffer[offset : offset + n].view(directions[i].shape)
                offset += n
        return out  # type: ignore[return-value]


class FSDPLMO(_OwnerCompute):
    """Rows travel to each matrix's owner and back (``all_to_all``); the rest stays sharded."""

    parallel = "fsdp"

    def _rows(self, d: Tensor, rank: int) -> tuple[int, int]:
        return shard_rows(d.shape[0], self.world, rank)

    def _row_numel(self, d: Tensor) -> int:
        return math.prod(d.shape[1:])

    def local(self, compute: Compute, directions: list[Tensor]) -> list[Tensor]:
        """Matrices through ``DTensor`` (local, or a reduction of norms); vectors whole."""
        vectors = [i for i, d in enumerate(directions) if d.ndim <= 1]
        matrices = [i for i, d in enumerate(directions) if d.ndim > 1]
        out: list[Tensor | None] = [None] * len(directions)
        if matrices:
            for i, u in zip(matrices, compute([directions[i] for i in matrices])):
                out[i] = u
        for indices in _by_dtype([directions[i] for i in vectors]).values():
            picked = [vectors[i] for i in indices]
            fulls = self._gather_whole([directions[i] for i in picked])
            for i, u in zip(picked, compute(fulls)):
                out[i] = self._reshard(u, directions[i])
        return out  # type: ignore[return-value]

    def _gather_whole(self, shards: list[Tensor]) -> list[Tensor]:
        """The full tensors of a few small ``Shard(0)`` DTensors, in one all-gather."""
        local = torch.cat([d.to_local().reshape(-1) for d in shards])
        lengths = [
            sum(self._rows(d, r)[1] * self._row_numel(d) for d in shards) for r in range(self.world)
        ]
        buffers = all_gather_flat(
            local, lengths, self.group, self.bucket_elems(local.dtype), self.stats
        )
        pieces: list[list[Tensor]] = [[] for _ in shards]
        for r, buffer in enumerate(buffers):
            offset = 0
            for j, d in enumerate(shards):
                n = self._rows(d, r)[1] * self._row_numel(d)
                pieces[j].append(buffer[offset : offset + n])
                offset += n
        return [torch.cat(p).view(d.shape) for p, d in zip(pieces, shards)]

    def _reshard(self, full: Tensor, like: DTensor) -> DTensor:
        """``like``'s local rows of ``full``, as a DTensor with ``like``'s layout."""
        offset, count = self._rows(like, self.rank)
        return DTensor.from_local(
            full[offset : offset + count].to(like.dtype),
            like.device_mesh,
            like.placements,
            run_check=False,
            shape=like.shape,
            stride=like.stride(),
        )

    def _buckets(self, directions: list[Tensor]) -> list[list[int]]:
        """Consecutive matrices whose total bytes stay under the bucket size."""
        buckets: list[list[int]] = [[]]
        size = 0
        for i, d in enumerate(directions):
            nbytes = d.numel() * d.element_size()
            if buckets[-1] and size + nbytes > self.bucket_bytes:
                buckets.append([])
                size = 0
            buckets[-1].append(i)
            size += nbytes
        return buckets

    def owner_compute(
        self, compute: Compute, directions: list[Tensor], plan: OwnerPlan
    ) -> list[Tensor]:
        out: list[Tensor | None] = [None] * len(directions)
        for bucket in self._buckets(directions):
            sub = [directions[i] for i in bucket]
            sub_plan = OwnerPlan(tuple(plan.owner[i] for i in bucket), plan.loads)
            for i, u in zip(bucket, self._owner_bucket(compute, sub, sub_plan)):
                out[i] = u
        return out  # type: ignore[return-value]

    def _owner_bucket(
        self, compute: Compute, directions: list[Tensor], plan: OwnerPlan
    ) -> list[Tensor]:
        world, me = self.world, self.rank
        mine = plan.owned(me)
        part = [self._rows(d, me)[1] * self._row_numel(d) for d in directions]
        # 1. gather: my rows of every matrix go to its owner
        pieces = [
            _cat([directions[i].to_local().reshape(-1) for i in plan.owned(dst)], directions[0])
            for dst in range(world)
        ]
        recv_lengths = [
            sum(self._rows(directions[i], src)[1] * self._row_numel(directions[i]) for i in mine)
            for src in range(world)
        ]
        received = all_to_all_flat(pieces, recv_lengths, self.group, self.stats)
        fulls = self._assemble([directions[i] for i in mine], received)
        # 2. compute: the owner's matrices, same shapes stacked as in one process
        units = compute(fulls)
        # 3. scatter: each rank gets its rows of every result back
        back = [
            _cat(
                [
                    u[slice(*_span(self._rows(directions[i], dst)))].reshape(-1)
                    for i, u in zip(mine, units)
                ],
                directions[0],
            )
            for dst in range(world)
        ]
        back_lengths = [sum(part[i] for i in plan.owned(src)) for src in range(world)]
        returned = all_to_all_flat(back, back_lengths, self.group, self.stats)
        out: list[Tensor | None] = [None] * len(directions)
        for src, buffer in enumerate(returned):
            offset = 0
            for i in plan.owned(src):
                d = directions[i]
                rows = self._rows(d, me)[1]
                local = buffer[offset : offset + part[i]].view(rows, *d.shape[1:])
                offset += part[i]
                out[i] = DTensor.from_local(
                    local, d.device_mesh, d.placements, run_check=False,
                    shape=d.shape, stride=d.stride(),
                )  # fmt: skip
        return out  # type: ignore[return-value]

    def _assemble(self, owned: list[Tensor], received: list[Tensor]) -> list[Tensor]:
        """Full matrices from the rows each rank sent (rank order is row order)."""
        rows: list[list[Tensor]] = [[] for _ in owned]
        for src, buffer in enumerate(received):
            offset = 0
            for j, d in enumerate(owned):
                count = self._rows(d, src)[1]
                n = count * self._row_numel(d)
                rows[j].append(buffer[offset : offset + n].view(count, *d.shape[1:]))
                offset += n
        return [torch.cat(r) for r in rows]


def _span(offset_count: tuple[int, int]) -> tuple[int, int]:
    offset, count = offset_count
    return offset, offset + count


def _cat(flat: list[Tensor], like: Tensor) -> Tensor:
    """``torch.cat`` of 1-D pieces, or an empty buffer of ``like``'s dtype and device."""
    if flat:
        return torch.cat(flat)
    local = like.to_local() if isinstance(like, DTensor) else like
    return local.new_empty(0)
