"""Which parameter plays which role: input, hidden, output, vector (or tied).

Scion's per-layer geometry depends on where a weight sits in the network [S, Rec. 3.1]: the
first layer maps the data in (ColNorm for token embeddings, a max(1, .)-scaled Spectral norm
for images), hidden layers are Spectral, the last layer maps to logits (Sign scaled 1/d_in),
and vectors (biases, norm gains) use the RMS norm. A weight shared by the first and the last
layer (tied embeddings) gets the tied rule (Sign at both ends).

"First" and "last" are found by the order in which a forward pass *uses* the parameters: one
pass of an example input runs under a ``TorchFunctionMode`` that records, for every parameter,
the first and last time it appears as an argument of a torch operation. This finds raw
``nn.Parameter`` matrices, shared weights and modules called out of registration order
alike. Without an example input (neither ``example_input=`` nor a ``model.example_input()``
method), the registration order stands in, with a warning.

Rules, in order:

1. a parameter whose name matches an ``overrides`` pattern (fnmatch, first match wins);
2. ``ndim <= 1`` (biases, gains, scalars): ``vector``;
3. a matrix that is both the first and the last one used, by two modules or twice (a tied
   embedding/head): ``tied``;
4. every ``nn.Embedding`` weight, and the first-used matrix: ``input``;
5. the last-used matrix: ``output``;
6. every other matrix or kernel: ``hidden``.

A parameter the forward pass never touches keeps its registration position and falls back to
rules 2 and 6 (``vector`` or ``hidden``), with a warning: nothing is dropped.

Reference: [S] Pethick et al., *Training Deep Learning Models with Norm-Constrained LMOs*,
ICML 2025 (arXiv 2502.07529), Rec. 3.1.
"""

from __future__ import annotations

import enum
import fnmatch
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["Role", "assign_roles", "parameter_modules"]


class Role(str, enum.Enum):
    """The role of a parameter in the network (its value is the lowercase name)."""

    INPUT = "input"
    HIDDEN = "hidden"
    OUTPUT = "output"
    VECTOR = "vector"
    TIED = "tied"  # one matrix used as both the input embedding and the output head

    def __str__(self) -> str:
        return self.value


def _as_role(value: Role | str, pattern: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        valid = ", ".join(r.value for r in Role)
        raise ValueError(
            f"overrides[{pattern!r}]: unknown role {value!r}; valid roles are {valid}"
        ) from None


class _UsageRecorder(TorchFunctionMode):
    """Records the first and last operation index at which each watched tensor is used."""

    def __init__(self, watched: dict[int, str]) -> None:
        super().__init__()
        self.watched = watched
        self.counter = 0
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}

    def _scan(self, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            name = self.watched.get(id(value))
            if name is not None:
                self.first.setdefault(name, self.counter)
                self.last[name] = self.counter
        elif isinstance(value, (list, tuple)):
            for item in value:
                self._scan(item)
        elif isinstance(value, dict):
            for item in value.values():
                self._scan(item)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        self._scan(args)
        self._scan(kwargs)
        self.counter += 1
        return func(*args, **kwargs)


def parameter_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The module that owns each (deduplicated) parameter name of ``model``."""
    owners: dict[str, nn.Module] = {}
    for module_name, module in model.named_modules():
        for local, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{local}" if module_name else local
            owners[full] = module
    return owners


def _usage_order(
    model: nn.Module, params: dict[str, nn.Parameter], example_input: Any
) -> tuple[dict[str, int], dict[str, int]]:
    """First and last use of each parameter in one forward pass of ``example_input``.

    A model sharded by ``torch.distributed.fsdp.fully_shard`` (FSDP2) is gathered for the pass
    (``unshard``: the full tensors are what the forward touches) and resharded after it.
    """
    sharded = [m for m in model.modules() if callable(getattr(m, "unshard", None))]
    for module in sharded:
        module.unshard()
    watched = {id(p): name for name, p in params.items()}
    watched.update({id(p): n for n, p in model.named_parameters() if n in params})
    recorder = _UsageRecorder(watched)
    was_training = model.training
    model.eval()  # no dropout randomness; the pass only watches which weights are touched
    try:
        with torch.no_grad(), recorder:
            if isinstance(example_input, tuple):
                model(*example_input)
            elif isinstance(example_input, dict):
                model(**example_input)
            else:
                model(example_input)
    finally:
        model.train(was_training)
        for module in sharded:
            module.reshard()
    return recorder.first, recorder.last


def assign_roles(
    model: nn.Module,
    example_input: Any = None,
    overrides: Mapping[str, Role | str] | None = None,
) -> dict[str, Role]:
    """The role of every trainable parameter of ``model``, keyed by its name.

    Args:
        model: the network. Tied parameters appear once, under their first name.
        example_input: a batch to run one forward pass on (a tensor, a tuple of positional
            arguments or a dict of keyword arguments). Default: ``model.example_input()`` if
            the model has that method, else the registration order (with a warning).
        overrides: ``{fnmatch pattern: role}``; the first matching pattern decides. A pattern
            that matches no parameter is an error (it is probably a typo).

    Returns:
        ``{name: Role}`` in ``model.named_parameters()`` order, covering every parameter with
        ``requires_grad``.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("assign_roles: the model has no trainable parameters")
    owners = parameter_modules(model)
    all_names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        all_names.setdefault(id(p), []).append(name)

    overrides = dict(overrides or {})
    override_roles = {pattern: _as_role(role, pattern) for pattern, role in overrides.items()}
    for pattern in override_roles:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in params):
            raise ValueError(
                f"overrides: pattern {pattern!r} matches no parameter; names look like "
                f"{', '.join(list(params)[:4])}"
            )

    if example_input is None and callable(getattr(model, "example_input", None)):
        example_input = model.example_input()
    if example_input is None:
        warnings.warn(
            "assign_roles: no example input (pass example_input= or give the model an "
            "example_input() method); the first and last layers are taken from the "
            "registration order of the parameters, which may not be the order of use",
            stacklevel=2,
        )
        order = {name: i for i, name in enumerate(params)}
        first, last = dict(order), dict(order)
    else:
        first, last = _usage_order(model, params, example_input)
        unused = [n for n in params if n not in first]
        if unused:
            warnings.warn(
                f"assign_roles: the forward pass never used {', '.join(unused)}; they fall back "
                "to 'vector' (1-D) or 'hidden' (matrices)",
                stacklevel=2,
            )

    matrices = [n for n in params if params[n].ndim >= 2 and n in first]
    first_matrix = min(matrices, key=lambda n: first[n]) if matrices else None
    last_matrix = max(matrices, key=lambda n: last[n]) if matrices else None

    roles: dict[str, Role] = {}
    for name, p in params.items():
        matched = next(
            (r for pat, r in override_roles.items() if fnmatch.fnmatchcase(name, pat)), None
        )
        if matched is not None:
            roles[name] = matched
        elif p.ndim <= 1:
            roles[name] = Role.VECTOR
        elif name == first_matrix == last_matrix and (
            len(all_names[id(p)]) > 1 or first[name] != last[name]
        ):
            # One matrix that opens and closes the network: shared by two modules, or
            # reused (e.g. logits = h @ embed.weight.T), it is a tied embedding.
            roles[name] = Role.TIED
        elif isinstance(owners.get(name), nn.Embedding) or name == first_matrix:
            roles[name] = Role.INPUT
        elif name == last_matrix:
            roles[name] = Role.OUTPUT
        else:
            roles[name] = Role.HIDDEN
    return roles
