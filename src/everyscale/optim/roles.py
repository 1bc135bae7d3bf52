"""Which parameter plays which role: input, hidden, output, vector (or tied).

Scion's per-layer geometry depends on where a weight sits in the network [S, Rec. 3.1]: the
first layer maps the data in (ColNorm for token embeddings, a max(1, .)-scaled Spectral norm
for images), hidden layers are Spectral, the last layer maps to logits (Sign scaled 1/d_in),
and vectors (biases, norm gains) use the RMS norm. A weight shared by the first and the last
layer (tied embeddings) gets the tied rule (Sign at both ends).

The two ends are found from the structure first, then from the order of use:

- **structure**: a parameter reached from two modules (``named_parameters(remove_duplicate=
  False)``), one of them an embedding, is a tied embedding/head; the layout registry
  (``layouts.py``) says which tensors are embeddings and tables (input) and which are not
  layer weights at all (class and register tokens, single learned vectors: vector);
  ``nn.Sequential`` runs its children in order, so its first and last layers are known;
- **conventions** a model offers: Hugging Face's ``get_input_embeddings()``,
  ``get_output_embeddings()`` (the head) and ``config.tie_word_embeddings``;
- **the order of use** in one forward pass of an example input (``example_input=``, a
  ``model.example_input()`` method, or one built for a Hugging Face model: its
  ``dummy_inputs`` for text models, ``pixel_values`` of the configured size for vision
  models; a built input that fails is dropped). The pass runs under a ``TorchFunctionMode``
  that records, for every parameter, the first and last operation that uses it, which finds
  raw ``nn.Parameter`` matrices, shared weights and modules called out of registration order.

Rules, in order:

1. a parameter whose name matches an ``overrides`` pattern (fnmatch, first match wins);
2. ``ndim <= 1`` (biases, gains, scalars) or a non-layer tensor (tokens): ``vector``;
3. a matrix shared by an embedding and a head, or used both first and last (e.g.
   ``logits = h @ embed.weight.T``): ``tied``;
4. embeddings and position tables, the input-embedding module's weights and the first-used
   (or first ``nn.Sequential``) matrix: ``input``;
5. the head (``get_output_embeddings()``, else the last-used or last ``nn.Sequential``
   matrix): ``output``;
6. every other matrix or kernel: ``hidden``.

When nothing tells where an end is, no matrix gets that end's geometry: they stay ``hidden``,
the safe choice (never "output" because a matrix was registered last), and one warning lists
the parameters whose role was guessed. Models whose structure decides both ends get no warning.
A parameter the forward pass never touches falls back to rules 2 and 6 (``vector`` or
``hidden``), with a warning: nothing is dropped.

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

from everyscale.optim.layouts import Layout, layout_of

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
    model = getattr(model, "_orig_mod", model)  # torch.compile: watch the eager module
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


def _hf_ends(model: nn.Module) -> tuple[set[int], set[int]]:
    """Ids of the input-embedding parameters and of the head weight a model names."""
    inputs: set[int] = set()
    outputs: set[int] = set()
    for method, into in (("get_input_embeddings", inputs), ("get_output_embeddings", outputs)):
        getter = getattr(model, method, None)
        if not callable(getter):
            continue
        try:
            module = getter()
        except Exception:  # many models raise NotImplementedError here
            continue
        if isinstance(module, nn.Module):
            weights = [p for p in module.parameters() if p.ndim >= 2]
            into.update(id(p) for p in (weights[:1] if into is outputs else weights))
    config = getattr(model, "config", None)
    if outputs and getattr(config, "tie_word_embeddings", None) is False:
        inputs -= outputs  # an untied model whose getter returns a shared module: trust config
    return inputs, outputs


def _built_example(model: nn.Module) -> Any:
    """An example input for a Hugging Face model (``dummy_inputs`` or ``pixel_values``)."""
    config = getattr(model, "config", None)
    main = getattr(model, "main_input_name", None)
    if config is None or main is None:
        return None
    if main == "pixel_values":
        size = getattr(config, "image_size", 32)
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        channels = getattr(config, "num_channels", 3)
        return {"pixel_values": torch.zeros(1, channels, *size[-2:])}
    dummy = getattr(model, "dummy_inputs", None)
    if isinstance(dummy, dict) and main in dummy:
        return dummy
    return None


def _sequential_ends(model: nn.Module, matrices: dict[int, str]) -> tuple[str | None, str | None]:
    """The first and last matrix of an ``nn.Sequential`` (run in order) when its end layers
    are simple modules; ``None`` where that is not known."""
    if not isinstance(model, nn.Sequential):
        return None, None

    def leaves(module: nn.Module):
        if isinstance(module, nn.Sequential):
            for child in module:
                yield from leaves(child)
        else:
            yield module

    holders = [m for m in leaves(model) if any(id(p) in matrices for p in m.parameters())]
    if not holders:
        return None, None

    def single(module: nn.Module) -> str | None:
        own = [p for p in module.parameters(recurse=False) if id(p) in matrices]
        nested = any(id(p) in matrices for c in module.children() for p in c.parameters())
        return matrices[id(own[0])] if len(own) == 1 and not nested else None

    return single(holders[0]), single(holders[-1])


def _is_structural_tie(names: list[str], owners: dict[str, nn.Module]) -> bool:
    """A tensor reached by two modules, one an embedding and one not (the head)."""
    kinds = {isinstance(owners.get(n), nn.Embedding) for n in names}
    return len(names) > 1 and kinds == {True, False}


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=4)


def _check_overrides(
    overrides: Mapping[str, Role | str] | None, params: Mapping[str, Any]
) -> dict[str, Role]:
    override_roles = {
        pattern: _as_role(role, pattern) for pattern, role in (overrides or {}).items()
    }
    for pattern in override_roles:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in params):
            raise ValueError(
                f"overrides: pattern {pattern!r} matches no parameter; names look like "
                f"{', '.join(list(params)[:4])}"
            )
    return override_roles


def _order(
    model: nn.Module, params: dict[str, nn.Parameter], example_input: Any
) -> tuple[dict[str, int], dict[str, int]] | None:
    """First and last use from a forward pass, or ``None`` when no example input is at hand."""
    if example_input is None and callable(getattr(model, "example_input", None)):
        example_input = model.example_input()
    if example_input is not None:
        first, last = _usage_order(model, params, example_input)
    else:
        built = _built_example(model)
        if built is None:
            return None
        try:
            first, last = _usage_order(model, params, built)
        except Exception:  # a built input that does not fit this model: use the structure
            return None
    unused = [n for n in params if n not in first]
    if unused:
        warnings.warn(
            f"assign_roles: the forward pass never used {', '.join(unused)}; they fall back "
            "to 'vector' (1-D) or 'hidden' (matrices)",
            stacklevel=4,
        )
    return first, last


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
            the model has that method, else one built for a Hugging Face model, else the
            structure alone (module docstring).
        overrides: ``{fnmatch pattern: role}``; the first matching pattern decides. A pattern
            that matches no parameter is an error (it is probably a typo).

    Returns:
        ``{name: Role}`` in ``model.named_parameters()`` order, covering every parameter with
        ``requires_grad``.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("assign_roles: the model has no trainable parameters")
    override_roles = _check_overrides(overrides, params)
    owners = parameter_modules(model)
    all_names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        all_names.setdefault(id(p), []).append(name)
    layouts = {n: layout_of(model, n, p) or Layout() for n, p in params.items()}
    is_vector = {n: p.ndim <= 1 or layouts[n].kind == "vector" for n, p in params.items()}
    matrices = {id(p): n for n, p in params.items() if not is_vector[n]}

    hf_inputs, hf_outputs = _hf_ends(model)
    inputs = {n for n in matrices.values() if layouts[n].kind == "embedding"}
    inputs |= {matrices[i] for i in hf_inputs if i in matrices}
    outputs = {matrices[i] for i in hf_outputs if i in matrices}
    tied = {
        n for n in matrices.values()
        if _is_structural_tie(all_names[id(params[n])], owners)
        or (n in inputs and n in outputs)
    }  # fmt: skip

    order = _order(model, params, example_input)
    if order is not None:
        first, last = order
        used = [n for n in matrices.values() if n in first]
        if used:
            head = min(used, key=lambda n: first[n])
            tail = max(used, key=lambda n: last[n])
            inputs.add(head)
            if not outputs:
                outputs.add(tail)
            if head == tail and first[head] != last[head]:
                tied.add(head)  # reused, e.g. logits = h @ embed.weight.T
    else:
        head, tail = _sequential_ends(model, matrices)
        inputs |= {head} if head else set()
        outputs |= {tail} if tail and not outputs else set()
        decided = {n for n in matrices.values() if any(
            fnmatch.fnmatchcase(n, pat) for pat in override_roles)}  # fmt: skip
        _warn_about_guesses(model, matrices, inputs | decided, outputs | tied | decided)

    roles: dict[str, Role] = {}
    for name in params:
        matched = next(
            (r for pat, r in override_roles.items() if fnmatch.fnmatchcase(name, pat)), None
        )
        if matched is not None:
            roles[name] = matched
        elif is_vector[name]:
            roles[name] = Role.VECTOR
        elif name in tied:
            roles[name] = Role.TIED
        elif name in inputs:
            roles[name] = Role.INPUT
        elif name in outputs:
            roles[name] = Role.OUTPUT
        else:
            roles[name] = Role.HIDDEN
    return roles


def _warn_about_guesses(
    model: nn.Module, matrices: dict[int, str], inputs: set[str], ends: set[str]
) -> None:
    """One warning naming the matrices whose role was guessed, when an end is unknown."""
    missing = [end for end, found in (("input layer", inputs), ("head", ends)) if not found]
    if not missing or not matrices:
        return
    guessed = [n for n in matrices.values() if n not in inputs and n not in ends]
    if len(guessed) > 6:  # the ends are what matters: the first and the last ones
        shown = (
            f"{', '.join(guessed[:3])}, ... ({len(guessed) - 6} more), {', '.join(guessed[-3:])}"
        )
    else:
        shown = ", ".join(guessed)
    _warn_once(
        f"assign_roles: {type(model).__name__}: no example input, and the structure does not "
        f"say which matrix is the {' or the '.join(missing)}; {shown} take the hidden "
        "geometry (the safe default, guessed). Pass example_input= (or give the model an "
        "example_input() method), or roles={'name': 'input'/'output'} to say it"
    )
