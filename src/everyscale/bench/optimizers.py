"""The contenders: our presets and the optimizers a user would otherwise pick (the peers).

Names tell ours from theirs: ``adamw`` is everyscale's preset, ``torch_adamw`` is
``torch.optim.AdamW``. Every contender is built from a model, the trial's hyperparameters
(``space.py``: ``lr``, ``weight_decay``, ``beta1`` or ``momentum``, ``adam_lr``; ``warmup`` is
the harness's schedule) and the user's fixed options, and is stepped by the same trial loop.

Peers (the optional extra ``everyscale[bench]``):

- ``torch_adamw``: ``torch.optim.AdamW`` (Loshchilov & Hutter 2019).
- ``torch_muon``: ``torch.optim.Muon`` (Jordan et al. 2024) on the 2-D hidden matrices (the
  roles of ``everyscale.optim.assign_roles``), ``torch.optim.AdamW`` at ``adam_lr`` on the rest.
  Its Newton-Schulz iteration runs in bfloat16 whatever the CPU: fast on CPUs with AVX512-BF16
  or AMX, slow elsewhere; the report records the CPU.
- ``sfadamw``: Schedule-Free AdamW (Defazio et al. 2024, package ``schedulefree``), no learning
  rate schedule; the harness calls ``optimizer.eval()`` before each evaluation and
  ``optimizer.train()`` after, as the method requires.
- ``heavyball_soap``: SOAP (Vyas et al. 2024) and ``heavyball_psgd``: PSGD-Kron (Li 2018), from
  ``heavyball``. They clear ``p.grad`` inside their step; the harness times whole steps
  (zero_grad, forward, backward, step), so that work is counted wherever it happens. heavyball
  compiles its kernels with ``torch.compile`` by default (over a minute of autotuning per shape
  on a CPU): ``compile=False`` (the bench's default) runs them eagerly, ``compile=True`` keeps
  heavyball's own mode, with the one-off compile time reported apart from the training time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from everyscale.bench.space import space_for

__all__ = [
    "BETA2",
    "PEERS",
    "Contender",
    "OptimizerChain",
    "contender_names",
    "get_contender",
]

#: Adam's second-moment EMA for every Adam-like contender (fixed, not tuned)
BETA2 = 0.99

Builder = Callable[[nn.Module, Mapping[str, float], Mapping[str, Any], int], Any]


@dataclass(frozen=True)
class Contender:
    """One optimizer the bench can tune: ``build(model, hparams, options, steps)``."""

    name: str
    source: str
    build: Builder
    peer: bool = False
    schedule_free: bool = False
    bf16: bool = False  # runs (part of) its step in bfloat16 whatever the parameters' dtype

    def space(self):
        """Its family's search space (``space.space_for``)."""
        return space_for(self.name, _default_lr(self.name))


class OptimizerChain:
    """Several optimizers stepped as one (``torch.optim.Muon`` for matrices, AdamW for the rest).

    ``param_groups`` lists every group of every optimizer, so a schedule can scale them all.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}


# ----------------------------------------------------------------------------- ours


def _default_lr(name: str) -> float | None:
    from everyscale import optim

    return getattr(optim, "DEFAULT_LR", {}).get(name)


def _preset_kwargs(name: str, hp: Mapping[str, float]) -> dict[str, Any]:
    """Translate the search space's names into the preset's torch.optim-style options."""
    kwargs: dict[str, Any] = {}
    for key, value in hp.items():
        if key in ("lr", "warmup"):
            continue
        if key == "beta1" or (key == "momentum" and name == "lion"):
            kwargs["betas"] = (value, BETA2)
        elif key == "adam_lr":
            kwargs["rest_lr"] = value
        else:
            kwargs[key] = value
    if name == "muon":
        kwargs.setdefault("betas", (0.9, BETA2))
    return kwargs


def _ours(name: str) -> Contender:
    def build(model, hp, options, steps):
        from everyscale import optim

        return optim.optimizer(model, name, lr=hp["lr"], **{**_preset_kwargs(name, hp), **options})

    return Contender(name, f"everyscale.optimizer(model, {name!r})", build)


# ----------------------------------------------------------------------------- peers


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ValueError(
            f"the bench peers need {module!r}, which is not installed: "
            "pip install 'everyscale[bench]'"
        ) from err


def _torch_adamw(model, hp, options, steps):
    return torch.optim.AdamW(
        model.parameters(),
        lr=hp["lr"],
        betas=(hp.get("beta1", 0.9), BETA2),
        weight_decay=hp.get("weight_decay", 0.0),
        **options,
    )


def _hidden_matrices(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(2-D hidden matrices, everything else)`` by ``everyscale.optim.assign_roles``."""
    from everyscale.optim import Role, assign_roles

    roles = assign_roles(model)
    named = dict(model.named_parameters())
    matrices = [named[n] for n, r in roles.items() if r == Role.HIDDEN and named[n].ndim == 2]
    ids = {id(p) for p in matrices}
    rest = [named[n] for n in roles if id(named[n]) not in ids]
    return matrices, rest


def _torch_muon(model, hp, options, steps):
    matrices, rest = _hidden_matrices(model)
    decay = hp.get("weight_decay", 0.0)
    parts = []
    if matrices:
        parts.append(
            torch.optim.Muon(
                matrices,
                lr=hp["lr"],
                weight_decay=decay,
                momentum=hp.get("momentum", 0.95),
                **options,
            )
        )
    if rest:
        adam_lr = hp.get("adam_lr", hp["lr"])
        parts.append(torch.optim.AdamW(rest, lr=adam_lr, betas=(0.9, BETA2), weight_decay=decay))
    return OptimizerChain(*parts)


def _sfadamw(model, hp, options, steps):
    schedulefree = _require("schedulefree")
    return schedulefree.AdamWScheduleFree(
        model.parameters(),
        lr=hp["lr"],
        betas=(hp.get("beta1", 0.9), BETA2),
        weight_decay=hp.get("weight_decay", 0.0),
        warmup_steps=round(hp.get("warmup", 0.0) * steps),
        **options,
    )


_HEAVYBALL_COMPILE_MODE: list[Any] = []  # heavyball's own default, read before we change it


def _heavyball(class_name: str) -> Builder:
    def build(model, hp, options, steps):
        heavyball = _require("heavyball")
        options = dict(options)
        compile_step = bool(options.pop("compile", False))
        # heavyball reads this module-wide switch when a kernel is first called.
        utils = importlib.import_module("heavyball.utils")
        if not _HEAVYBALL_COMPILE_MODE:
            _HEAVYBALL_COMPILE_MODE.append(utils.compile_mode)
        utils.compile_mode = _HEAVYBALL_COMPILE_MODE[0] if compile_step else None
        return getattr(heavyball, class_name)(
            model.parameters(),
            lr=hp["lr"],
            betas=(hp.get("beta1", 0.9), BETA2),
            weight_decay=hp.get("weight_decay", 0.0),
            **options,
        )

    return build


#: the peers, by name
PEERS: dict[str, Contender] = {
    "torch_adamw": Contender("torch_adamw", "torch.optim.AdamW", _torch_adamw, peer=True),
    "torch_muon": Contender(
        "torch_muon", "torch.optim.Muon + torch.optim.AdamW", _torch_muon, peer=True, bf16=True
    ),
    "sfadamw": Contender(
        "sfadamw", "schedulefree.AdamWScheduleFree", _sfadamw, peer=True, schedule_free=True
    ),
    "heavyball_soap": Contender("heavyball_soap", "heavyball.SOAP", _heavyball("SOAP"), peer=True),
    "heavyball_psgd": Contender(
        "heavyball_psgd", "heavyball.PSGDKron", _heavyball("PSGDKron"), peer=True
    ),
}


def _presets() -> tuple[str, ...]:
    from everyscale.optim import PRESETS

    return tuple(PRESETS)


def contender_names() -> tuple[str, ...]:
    """Every name ``get_contender`` accepts: our presets, then the peers."""
    return (*_presets(), *PEERS)


def get_contender(name: str) -> Contender:
    """The contender called ``name`` (``ValueError`` naming ``--optimizers`` if unknown)."""
    if name in PEERS:
        return PEERS[name]
    if name in _presets():
        return _ours(name)
    raise ValueError(
        f"unknown optimizer {name!r}: set --optimizers to names among "
        + ", ".join(contender_names())
    )
