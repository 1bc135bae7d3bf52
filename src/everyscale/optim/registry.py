"""The preset registry: one typed descriptor per optimizer preset.

Everything the library knows about a preset lives in its :class:`PresetSpec`: the name, the
default learning rate, the update family (how the size of a step depends on the size of the
gradient, which the batch-size and depth rules of ``scale`` and ``train`` read), what it does
per role, the roles whose geometry already makes the update width independent (``scale``'s
width rule reads it), an options dataclass (names, types and defaults of the preset's own
options) and the function that turns one parameter into its param-group settings.

Adding a preset is one descriptor::

    @dataclass(frozen=True)
    class MyOptions:
        momentum: float = 0.9
        weight_decay: float = 0.0

    def my_settings(lr, options, param):  # param: ParamInfo (name, tensor, role, kind)
        return {"norm": "sign", "step": "unconstrained", "momentum": options.momentum,
                "weight_decay": options.weight_decay}

    register_preset(PresetSpec(name="mine", default_lr=1e-3, family="normalized",
                               options=MyOptions, settings=my_settings,
                               roles={"all": "sign"}))

after which ``everyscale.optimizer(model, "mine")``, ``describe``, the CLI's ``--optimizer``
choices, ``scale.update_family`` and ``train.schedules.batch_size_rule`` all know it.
The built-in presets are registered by ``everyscale.optim.presets``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from torch import Tensor

from everyscale.optim.layouts import ParamKind
from everyscale.optim.roles import Role

__all__ = [
    "COMMON_OPTIONS",
    "DEFAULT_LR",
    "PRESETS",
    "ParamInfo",
    "PresetSpec",
    "UpdateFamily",
    "get_preset",
    "preset_options",
    "register_preset",
]

#: How the size of a preset's update depends on the size of the gradient.
#:  ``"linear"``: proportional to the gradient (SGD with heavy ball);
#:  ``"normalized"``: set by the learning rate alone (sign methods, Adam's ``m/sqrt(v)``,
#:  every LMO step; clipped Scion is steepest descent only for small gradients).
UpdateFamily = Literal["linear", "normalized"]


#: options every preset accepts besides its own (they are not preset settings)
COMMON_OPTIONS = frozenset({"weight_decay", "foreach", "nonfinite", "example_input", "roles"})


class ParamInfo(NamedTuple):
    """One parameter as a preset's ``settings`` function sees it (``kind`` from its layout)."""

    name: str
    param: Tensor
    role: Role
    kind: ParamKind


@dataclasses.dataclass(frozen=True)
class PresetSpec:
    """The descriptor of one preset (see the module docstring).

    Attributes:
        name: the preset's name (``everyscale.optimizer(model, name)``).
        default_lr: the learning rate used when none is given.
        family: the update family (:data:`UpdateFamily`).
        options: a dataclass whose fields are the preset's options and defaults.
        settings: ``(lr, options, ParamInfo) -> dict`` of param-group settings for one
            parameter (``norm``, ``norm_kwargs``, ``step``, ``radius``, ``momentum``, ...).
        roles: what the preset does per role, a short label for each (``"all"`` when roles do
            not matter), shown in the docs and used by ``describe``.
        uses_roles: the settings depend on the parameter's role (a model is needed to find
            them; without it every matrix is a hidden layer).
        reads_matrices: the geometry reads a parameter as matrices (polar factors, column or
            row norms, the ``1/d_in`` head), so the layout registry decides how a tensor is cut
            into its logical matrices.
        width_independent_roles: roles whose geometry already scales the update with the
            layer's shape (the spectral condition), so ``scale``'s muP width rule leaves them at
            factor 1.
        check: an optional validation of the options (raise ``ValueError``).
        without_model: a warning to give when the preset gets a list of tensors instead of a
            model (empty: none), e.g. what the missing input and output rules would have done.
        summary: one line for tables and ``--help``.
    """

    name: str
    default_lr: float
    family: UpdateFamily
    options: type
    settings: Callable[[float, Any, ParamInfo], dict[str, Any]]
    roles: Mapping[str, str]
    uses_roles: bool = False
    reads_matrices: bool = False
    width_independent_roles: frozenset[str] = frozenset()
    check: Callable[[Any], None] | None = None
    without_model: str = ""
    summary: str = ""

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.options):
            raise ValueError(f"preset {self.name!r}: options must be a dataclass type")
        if self.family not in ("linear", "normalized"):
            raise ValueError(
                f"preset {self.name!r}: family must be 'linear' or 'normalized', got "
                f"{self.family!r}"
            )
        if not self.default_lr > 0:
            raise ValueError(f"preset {self.name!r}: default_lr must be > 0")

    def option_names(self) -> tuple[str, ...]:
        """The names of the preset's own options."""
        return tuple(f.name for f in dataclasses.fields(self.options))


_REGISTRY: dict[str, PresetSpec] = {}


def register_preset(spec: PresetSpec, *, replace: bool = False) -> PresetSpec:
    """Add ``spec`` to the registry (``replace=True`` to overwrite a preset of that name)."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(
            f"preset {spec.name!r} is already registered; pass replace=True to overwrite it"
        )
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_builtins() -> None:
    # The built-in descriptors live with their settings functions in optim.presets.
    importlib.import_module("everyscale.optim.presets")


def get_preset(name: str) -> PresetSpec:
    """The descriptor of preset ``name``; ``ValueError`` listing the valid names otherwise."""
    _ensure_builtins()
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown preset {name!r}; valid presets are {', '.join(_REGISTRY)}")
    return spec


def preset_options(name: str, overrides: Mapping[str, Any]) -> Any:
    """The preset's options dataclass with ``overrides`` applied; unknown names are an error.

    Names in :data:`COMMON_OPTIONS` are accepted and left to the caller.
    """
    spec = get_preset(name)
    own = set(spec.option_names())
    unknown = sorted(set(overrides) - own - COMMON_OPTIONS)
    if unknown:
        valid = ", ".join(sorted(own | COMMON_OPTIONS))
        raise ValueError(
            f"preset {name!r} does not take {', '.join(unknown)}; its options are {valid}"
        )
    fields = {f.name: f for f in dataclasses.fields(spec.options)}
    for key, value in overrides.items():
        if key in own:
            _check_option_kind(name, key, fields[key].type, value)
    options = spec.options(**{k: v for k, v in overrides.items() if k in own})
    if spec.check is not None:
        spec.check(options)
    return options


def _check_option_kind(preset: str, key: str, annotation: Any, value: Any) -> None:
    """A value of the kind the options dataclass declares: True/False, a number or a word.

    Tuples (``betas``) and other kinds are checked where they are used. ``ValueError``
    otherwise, worded for both callers (``radius=abc`` in Python, ``--option radius=abc``).
    """
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    kinds = {part.strip() for part in text.split("|")}
    if value is None and "None" in kinds:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if "bool" in kinds:
        ok, wanted = isinstance(value, bool), "True or False"
    elif kinds & {"float", "int"}:
        ok, wanted = number, "a number"
    elif "str" in kinds:  # a word; objects such as a torch.dtype for ns_dtype pass too
        ok = not isinstance(value, (bool, int, float, list, tuple, dict, set))
        wanted = "a word (text)"
    else:
        return
    if not ok:
        raise ValueError(f"{preset}: option {key} must be {wanted}, got {value!r}")


class _Names(Sequence):
    """``PRESETS``: the registered names, read live (a preset registered later shows up)."""

    def __getitem__(self, index):  # type: ignore[override]
        _ensure_builtins()
        return tuple(_REGISTRY)[index]

    def __len__(self) -> int:
        _ensure_builtins()
        return len(_REGISTRY)

    def __contains__(self, name: object) -> bool:
        _ensure_builtins()
        return name in _REGISTRY

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


class _DefaultLR(Mapping):
    """``DEFAULT_LR``: preset name -> default learning rate, read live from the registry."""

    def __getitem__(self, name: str) -> float:
        _ensure_builtins()
        if name not in _REGISTRY:
            raise KeyError(name)
        return _REGISTRY[name].default_lr

    def __iter__(self) -> Iterator[str]:
        _ensure_builtins()
        return iter(tuple(_REGISTRY))

    def __len__(self) -> int:
        _ensure_builtins()
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


#: the registered preset names, in registration order (a live view)
PRESETS: Sequence[str] = _Names()
#: preset name -> default learning rate (a live view of the registry)
DEFAULT_LR: Mapping[str, float] = _DefaultLR()
