"""Layouts: how a parameter tensor is read as a matrix, or as a stack of matrices.

The matrix geometries (Spectral, ColNorm, the ``1/d_in`` Sign head) act on ``(d_out, d_in)``
matrices, and their shape factors (``sqrt(d_out/d_in)`` [S, Table 3]) depend on which dimension
is which. Modules store their weights in several ways; a :class:`Layout` says how to cut a
tensor into its logical matrices and put them back:

======================================  ===========================  =========================
module / parameter                      stored as                    read as
======================================  ===========================  =========================
``nn.Linear.weight``                    ``(out, in)``                one matrix
HF ``Conv1D.weight`` (GPT-2)            ``(in, out)``                its transpose
GPT-2 ``c_attn.weight``                 ``(d, 3d)`` (in, out)        3 matrices q, k, v
``nn.MultiheadAttention.in_proj_weight``  ``(3d, d)``                3 matrices q, k, v
``nn.LSTM`` / ``nn.GRU`` ``weight_*``   ``(4h, in)`` / ``(3h, in)``  4 / 3 gate matrices
HF experts ``gate_up_proj`` (Mixtral)   ``(E, 2f, d)``               ``2E`` matrices (gate, up)
HF experts ``down_proj``                ``(E, d, f)``                ``E`` matrices
``nn.Conv1d/2d/3d.weight``              ``(out, in/groups, *k)``     a kernel (``spectral_conv``)
``nn.Embedding.weight``                 ``(vocab, d)``               a table of rows
class/register tokens, learned scalars  any                          a vector (RMS)
position and relative-position tables   ``(1, n, d)``, ``(n, h)``    a table of rows
======================================  ===========================  =========================

Every matrix of a stack gets the LMO on its own (one batched Newton-Schulz call for all of
them: the experts of a layer, the q, k and v of a fused projection) and its own shape factor.
``Layout(heads=H)`` cuts an attention projection into its ``H`` heads (per-head
orthogonalization, an option: register it for the module).

A module type of your own is one line::

    everyscale.optim.register_layout(MyExperts, "w", Layout(stacked=True))  # E x out x in

Lookups go from the outermost module inward, so a registration on a parent with a longer path
(``register_layout(GPT2Attention, "c_attn.weight", ...)``) wins over the owner's type
(``Conv1D``). Names are ``fnmatch`` patterns; a module type may also be given as its
qualified name (``"transformers.pytorch_utils.Conv1D"``) so that nothing is imported.

Reference: [S] Pethick et al., *Training Deep Learning Models with Norm-Constrained LMOs*,
ICML 2025 (arXiv 2502.07529), Table 3 and Rec. 3.1.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = ["Layout", "ParamKind", "layout_of", "param_layouts", "register_layout"]

#: what a parameter is for the geometry: ``"matrix"`` (one or a stack of ``(out, in)``
#: matrices), ``"conv"`` (a kernel ``(out, in, *k)``), ``"embedding"`` (a lookup table whose
#: rows are vectors) or ``"vector"`` (biases, gains, scalars, class and register tokens).
ParamKind = Literal["matrix", "conv", "embedding", "vector"]
_KINDS = ("matrix", "conv", "embedding", "vector")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one tensor is read as ``count`` matrices ``(d_out, d_in)``.

    Steps, in order, from the stored tensor ``(*lead, a, b)``:

    1. ``stacked``: the leading dimensions are a batch of matrices (experts); otherwise the
       tensor must be 2-D;
    2. ``transpose``: the storage is ``(in, out)`` (HF ``Conv1D``, transposed experts);
    3. ``split``: the output dimension holds ``split`` fused matrices of equal size, one
       after the other (q, k, v; gate, up; LSTM gates), or alternating rows when
       ``interleaved``;
    4. ``heads``: each matrix is cut into ``heads`` row blocks (per-head orthogonalization of
       q/k/v) or, with ``heads_dim="in"``, column blocks (an output projection).

    ``kind`` says what the tensor is (:data:`ParamKind`); only ``"matrix"`` layouts are cut.
    ``label`` names the pieces in tables (``"q,k,v"``, ``"experts"``).
    """

    kind: ParamKind = "matrix"
    stacked: bool = False
    transpose: bool = False
    split: int = 1
    interleaved: bool = False
    heads: int = 1
    heads_dim: Literal["out", "in"] = "out"
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Layout: kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        for field in ("split", "heads"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Layout: {field} must be a whole number >= 1, got {value!r}")
        if self.heads_dim not in ("out", "in"):
            raise ValueError(f"Layout: heads_dim must be 'out' or 'in', got {self.heads_dim!r}")

    # ------------------------------------------------------------ plain data (state_dict)
    def config(self) -> dict[str, Any]:
        """The fields that differ from the defaults (plain data for a param group)."""
        default = Layout()
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    @classmethod
    def from_config(cls, config: dict[str, Any] | Layout) -> Layout:
        if isinstance(config, Layout):
            return config
        try:
            return cls(**dict(config))
        except TypeError as err:
            raise ValueError(f"layout: bad fields {config!r}: {err}") from None

    # ------------------------------------------------------------ shapes
    def reshapes(self, shape: tuple[int, ...] | torch.Size) -> bool:
        """Whether reading ``shape`` as matrices does more than take it as it is."""
        if self.kind != "matrix":
            return False
        return len(shape) != 2 or self.transpose or self.split > 1 or self.heads > 1 or self.stacked

    def check(self, shape: tuple[int, ...] | torch.Size, name: str = "parameter") -> None:
        """``ValueError`` naming ``name`` when ``shape`` cannot be read with this layout."""
        if self.kind != "matrix":
            return
        shape = tuple(shape)
        if len(shape) < 2 or (len(shape) > 2 and not self.stacked):
            raise ValueError(
                f"{name}: layout {self.describe_layout()} reads (out, in) matrices, but the "
                f"tensor has shape {shape}; use Layout(stacked=True) for a stack of matrices"
            )
        out, inp = (shape[-1], shape[-2]) if self.transpose else (shape[-2], shape[-1])
        pieces = self.split * (self.heads if self.heads_dim == "out" else 1)
        if out % pieces or (self.heads_dim == "in" and inp % self.heads):
            raise ValueError(
                f"{name}: layout {self.describe_layout()} cuts shape {shape} into equal pieces, "
                f"but the dimensions do not divide (out {out}, in {inp})"
            )

    def matrix_shape(self, shape: tuple[int, ...] | torch.Size) -> tuple[int, int, int]:
        """``(count, d_out, d_in)`` of the logical matrices of a tensor of ``shape``."""
        shape = tuple(shape)
        lead = math.prod(shape[:-2])
        out, inp = (shape[-1], shape[-2]) if self.transpose else (shape[-2], shape[-1])
        count = lead * self.split * self.heads
        out //= self.split
        if self.heads_dim == "out":
            out //= self.heads
        else:
            inp //= self.heads
        return count, out, inp

    def to_matrices(self, t: Tensor) -> Tensor:
        """The stack ``(count, d_out, d_in)`` of logical matrices of ``t`` (a view or a copy)."""
        m = t.reshape(-1, *t.shape[-2:])
        if self.transpose:
            m = m.mT
        b, out, inp = m.shape
        k = self.split
        if k > 1:
            parts = m.reshape(b, out // k, k, inp).transpose(1, 2) if self.interleaved else m
            m = parts.reshape(b * k, out // k, inp)
        if self.heads > 1:
            b, out, inp = m.shape
            h = self.heads
            if self.heads_dim == "out":
                m = m.reshape(b * h, out // h, inp)
            else:
                m = m.reshape(b, out, h, inp // h).transpose(1, 2).reshape(b * h, out, inp // h)
        return m

    def from_matrices(self, m: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
        """The inverse of :meth:`to_matrices`: a tensor of the stored ``shape``."""
        shape = tuple(shape)
        lead = math.prod(shape[:-2])
        out, inp = (shape[-1], shape[-2]) if self.transpose else (shape[-2], shape[-1])
        if self.heads > 1:
            h = self.heads
            b = m.shape[0] // h
            if self.heads_dim == "out":
                m = m.reshape(b, m.shape[1] * h, m.shape[2])
            else:
                m = m.reshape(b, h, m.shape[1], m.shape[2]).transpose(1, 2)
                m = m.reshape(b, m.shape[1], -1)
        k = self.split
        if k > 1:
            if self.interleaved:
                m = m.reshape(lead, k, out // k, inp).transpose(1, 2)
            m = m.reshape(lead, out, inp)
        m = m.reshape(lead, out, inp)
        if self.transpose:
            m = m.mT
        return m.reshape(shape)

    # ------------------------------------------------------------ tables
    def describe_layout(self) -> str:
        parts = [self.kind]
        if self.stacked:
            parts.append("stacked")
        if self.transpose:
            parts.append("(in,out)")
        if self.split > 1:
            parts.append(f"{self.split} fused{' interleaved' if self.interleaved else ''}")
        if self.heads > 1:
            parts.append(f"{self.heads} heads ({self.heads_dim})")
        return " ".join(parts)

    def describe(self, shape: tuple[int, ...] | torch.Size) -> str:
        """A table cell: ``3x128x128 q,k,v (in,out)``, or ``-`` when nothing is cut."""
        if not self.reshapes(shape):
            return "-"
        count, out, inp = self.matrix_shape(shape)
        text = f"{count}x{out}x{inp}"
        if self.label:
            text += f" {self.label}"
        return text + (" T" if self.transpose else "")


# ---------------------------------------------------------------------------- the registry
LayoutRule = Layout | Callable[[nn.Module, str, Tensor], Layout]
_REGISTRY: dict[type | str, list[tuple[str, LayoutRule]]] = {}


def register_layout(module_type: type | str, param: str, layout: LayoutRule) -> None:
    """Say how parameter ``param`` (an fnmatch pattern of its path inside the module) of
    modules of ``module_type`` (a class, or its qualified or plain class name) is read.

    ``layout`` is a :class:`Layout` or a function ``(module, path, tensor) -> Layout`` for
    layouts that depend on the instance. A later registration for the same pattern wins.
    """
    if not isinstance(module_type, (type, str)):
        raise ValueError(
            f"register_layout: module_type must be a class or a class name, got {module_type!r}"
        )
    if not (isinstance(layout, Layout) or callable(layout)):
        raise ValueError(f"register_layout: layout must be a Layout, got {layout!r}")
    entries = _REGISTRY.setdefault(module_type, [])
    entries[:] = [(p, r) for p, r in entries if p != param]
    entries.insert(0, (param, layout))


def _registered(module: nn.Module, path: str, tensor: Tensor) -> Layout | None:
    for cls in type(module).__mro__:
        for key in (cls, f"{cls.__module__}.{cls.__qualname__}", cls.__name__):
            for pattern, rule in _REGISTRY.get(key, ()):
                if fnmatch.fnmatchcase(path, pattern):
                    return rule if isinstance(rule, Layout) else rule(module, path, tensor)
    return None


def _hf_experts(module: nn.Module, path: str, tensor: Tensor) -> Layout | None:
    """Hugging Face's experts modules (``use_experts_implementation``): 3-D tensors whose
    orientation (``is_transposed``) and gate/up fusion (``has_gate``, ``is_concatenated``)
    the module states."""
    if tensor.ndim != 3 or not hasattr(module, "is_transposed") or "." in path:
        return None
    fused = path == "gate_up_proj" and getattr(module, "has_gate", True)
    return Layout(
        stacked=True,
        transpose=bool(module.is_transposed),
        split=2 if fused else 1,
        interleaved=fused and not getattr(module, "is_concatenated", True),
        label="experts gate,up" if fused else "experts",
    )


_TOKEN_PATTERNS = ("*token*",)
_TABLE_PATTERNS = ("*pos*", "*relative*", "*bias_table*")


def _not_a_layer(path: str, tensor: Tensor) -> Layout | None:
    """Raw parameters that are not layer weights: tokens, biases and single learned vectors
    are vectors; position and relative-position tables are tables of rows."""
    leaf = path.rpartition(".")[2].lower()
    core = [s for s in tensor.shape[:-2] if s != 1]
    if any(fnmatch.fnmatchcase(leaf, p) for p in _TOKEN_PATTERNS):
        return Layout(kind="vector", label="token")
    if leaf.endswith("bias"):  # e.g. the (experts, out) biases of an experts module
        return Layout(kind="vector", label="bias")
    rows = tensor.shape[-2] if tensor.ndim >= 2 else 1
    if tensor.ndim >= 2 and not core and rows == 1:
        return Layout(kind="vector", label="token")  # (1, 1, d): one learned vector
    if any(fnmatch.fnmatchcase(leaf, p) for p in _TABLE_PATTERNS) and not core:
        return Layout(kind="embedding", stacked=tensor.ndim > 2, label="table")
    return None


def layout_of(model: nn.Module, name: str, tensor: Tensor | None = None) -> Layout | None:
    """The layout of parameter ``name`` of ``model``, or ``None`` if no rule can read it.

    Order: a registration (outermost module with a matching path first), Hugging Face's
    experts convention, vectors (``ndim <= 1``), the non-layer tables and tokens, a raw 2-D
    matrix. A tensor of 3 or more dimensions that none of these reads gives ``None``.
    """
    tensor = model.get_parameter(name) if tensor is None else tensor
    parts = name.split(".")
    modules = [model]
    for part in parts[:-1]:
        modules.append(getattr(modules[-1], part))
    for depth, module in enumerate(modules):
        found = _registered(module, ".".join(parts[depth:]), tensor)
        if found is not None:
            return found
    owner, leaf = modules[-1], parts[-1]
    found = _hf_experts(owner, leaf, tensor)
    if found is not None:
        return found
    if tensor.ndim <= 1:
        return Layout(kind="vector")
    found = _not_a_layer(name, tensor)
    if found is not None:
        return found
    return Layout() if tensor.ndim == 2 else None


def param_layouts(model: nn.Module) -> dict[str, Layout | None]:
    """``{name: layout}`` for every (deduplicated) parameter of ``model``."""
    return {name: layout_of(model, name, p) for name, p in model.named_parameters()}


def unreadable_message(model: nn.Module, name: str, tensor: Tensor) -> str:
    """The error for a tensor no layout reads: the parameter, and how to register one."""
    parts = name.split(".")
    owner = model.get_submodule(".".join(parts[:-1])) if len(parts) > 1 else model
    cls = type(owner).__name__
    return (
        f"parameter {name!r} (shape {tuple(tensor.shape)}, in a {cls}) cannot be read as "
        f"matrices: no layout is registered for {cls}.{parts[-1]}. Register one, e.g. "
        f"everyscale.optim.register_layout({cls}, {parts[-1]!r}, Layout(stacked=True)) for a "
        "stack of (out, in) matrices (add transpose=True for (in, out)), Layout(kind='conv') "
        "for a convolution kernel, or Layout(kind='vector') for a tensor that is not a layer "
        "weight; or pass roles= / use an elementwise preset (adamw, lion, ...)"
    )


def init_(norm: Any, layout: Layout | None, p: Tensor, radius: float) -> Tensor:
    """``norm.init_`` on the logical matrices of ``p`` (each on the sphere of ``radius``)."""
    if layout is None or not layout.reshapes(p.shape):
        return norm.init_(p, radius)
    with torch.no_grad():
        matrices = layout.to_matrices(p).clone(memory_format=torch.contiguous_format)
        norm.init_(matrices, radius, batched=True)
        p.copy_(layout.from_matrices(matrices, p.shape))
    return p


# ---------------------------------------------------------------------------- built-ins
def _gpt2_c_attn(module: nn.Module, path: str, tensor: Tensor) -> Layout:
    # Self-attention fuses q, k, v (d x 3d, stored (in, out)); cross-attention fuses k, v.
    fused = 2 if getattr(module, "is_cross_attention", False) else 3
    return Layout(transpose=True, split=fused, label="q,k,v" if fused == 3 else "k,v")


_LINEAR = Layout()
_CONV = Layout(kind="conv")
_TABLE = Layout(kind="embedding")

register_layout(nn.Linear, "weight", _LINEAR)
# Transposed convolutions store (in, out/groups, *k); they are read as kernels as before
# (spectral_conv on that storage), so their shape factor takes in and out the other way round.
for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d):  # fmt: skip
    register_layout(_cls, "weight", _CONV)
for _cls in (nn.Embedding, nn.EmbeddingBag):
    register_layout(_cls, "weight", _TABLE)
register_layout(nn.MultiheadAttention, "in_proj_weight", Layout(split=3, label="q,k,v"))
register_layout(nn.MultiheadAttention, "bias_[kv]", Layout(kind="vector", label="token"))
for _cls, _gates in ((nn.LSTM, 4), (nn.GRU, 3), (nn.LSTMCell, 4), (nn.GRUCell, 3)):
    register_layout(_cls, "weight_[ih]h*", Layout(split=_gates, label="gates"))
register_layout(nn.LSTM, "weight_hr_l*", _LINEAR)
# Hugging Face (by name, so that transformers is not imported here)
register_layout("transformers.pytorch_utils.Conv1D", "weight", Layout(transpose=True))
register_layout("GPT2Attention", "c_attn.weight", _gpt2_c_attn)
register_layout("Phi3MLP", "gate_up_proj.weight", Layout(split=2, label="gate,up"))
