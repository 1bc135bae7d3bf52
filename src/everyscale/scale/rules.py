"""Rules that move hyperparameters from a proxy run to a bigger one.

Width needs no rule for the norm-based presets: the role norms ([S], Tables 2-4) already give every
layer an update of the right size at any width [S, Lemma C.6]. What does change with scale:

- **Depth**: residual branches are scaled by ``m_L^-alpha`` (``m_L = L / L_base``), with a
  learning-rate factor for the weights inside the branches (:func:`residual_multiplier`,
  :func:`depth_lr_factor`).
- **Batch size**: the largest stable learning rate grows like ``sqrt(B)`` for adaptive and
  sign-like methods and like ``B`` for SGD (:func:`batch_size_lr`).
- **Horizon** (tokens ``D``): for Scion, ``eta*(D) ~ D^-0.28`` and ``B*(D) ~ D^0.45``
  (:func:`horizon_lr`, :func:`horizon_batch_size`). The learning-rate law holds along the
  optimal batch size: it is [F]'s joint fit ``eta*(B, D) ~ B^0.62 D^-0.56`` at ``B = B*(D)``
  (``0.62 * 0.45 - 0.56 = -0.28``), so it already contains the batch growth.

References:
    [S]  Pethick et al., *Training Deep Learning Models with Norm-Constrained LMOs*, ICML 2025.
    [CP] Dey et al., *Don't be lazy: CompleteP enables compute-efficient deep transformers*, 2025.
    [TP6] Yang, Yu, Zhu, Hayou, *Tensor Programs VI: Feature Learning in Infinite-Depth Neural
         Networks*, ICLR 2024 (depth-muP, alpha = 1/2).
    [Gr] Granziol et al., *Learning Rates as a Function of Batch Size: A Random Matrix Theory
         Approach to Neural Network Training*, JMLR 2022.
    [F]  Filatov et al., *Optimal Scaling Needs Optimal Norm*, 2025 (the Scion horizon fit).
"""

from __future__ import annotations

import math

from everyscale.optim.registry import UpdateFamily, get_preset

# The update family of each preset ("linear": SGD; "normalized": sign, adaptive and LMO
# steps) is a field of its descriptor in the preset registry (everyscale.optim.registry).

# Horizon exponents of the Scion fit in [F]: eta*(D) ~ D^-0.28, B*(D) ~ D^0.45.
HORIZON_LR_EXPONENT = -0.28
HORIZON_BATCH_EXPONENT = 0.45


def update_family(preset: str) -> UpdateFamily:
    """Return ``"linear"`` (SGD) or ``"normalized"`` (sign, adaptive, LMO) for a preset name.

    Read from the preset's descriptor (:func:`everyscale.optim.registry.get_preset`).
    """
    try:
        return get_preset(preset).family
    except ValueError as err:
        raise ValueError(f"preset: {err}") from None


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return value


def _nonnegative_lr(lr: float) -> float:
    lr = float(lr)
    if not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr: must be a finite number >= 0, got {lr!r}")
    return lr


def residual_multiplier(depth: int, base_depth: int = 1, alpha: float = 1.0) -> float:
    """Residual-branch multiplier ``m_L^-alpha`` with ``m_L = depth / base_depth``.

    Each block computes ``x <- x + m_L^-alpha * f(x)``. ``alpha = 1`` is CompleteP [CP]: every
    block's contribution to the residual stream stays ``Theta(1/L)``, so features keep learning
    at every depth; ``alpha = 1/2`` is depth-muP [TP6]. With ``base_depth = 1`` this is the
    plain ``L^-alpha``; stating the proxy's depth leaves the proxy itself unchanged (factor 1).
    """
    if int(depth) != depth or depth < 1:
        raise ValueError(f"depth: must be a whole number >= 1, got {depth!r}")
    if int(base_depth) != base_depth or base_depth < 1:
        raise ValueError(f"base_depth: must be a whole number >= 1, got {base_depth!r}")
    if depth < base_depth:
        raise ValueError(
            f"base_depth: the proxy's depth ({base_depth}) is larger than the target's ({depth}); "
            "state the depth of the smaller model you tuned on"
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: must lie in [0, 1] (1 = CompleteP, 0.5 = depth-muP), got {alpha}")
    return (depth / base_depth) ** (-alpha)


def depth_lr_factor(depth_mult: float, alpha: float, preset: str) -> float:
    """Learning-rate factor for the weights inside residual branches, ``m_L = L / L_base``.

    A block's branch is scaled by ``m_L^-alpha``; the change it makes to the residual stream
    in one step is that multiplier times the change of its weights. Asking every block to move
    the stream by ``Theta(1/L)`` (CompleteP's "complete feature learning" [CP]) gives:

    - normalized updates (Adam, sign, LMO: ``||dW||`` set by the learning rate alone):
      ``m_L^-alpha * eta = m_L^-1``  =>  ``eta ~ m_L^(alpha - 1)`` [CP, Table 1];
    - SGD (``dW`` proportional to the gradient, which itself carries ``m_L^-alpha``):
      ``m_L^-2alpha * eta = m_L^-1``  =>  ``eta ~ m_L^(2 alpha - 1)``
      (depth-muP's constant SGD learning rate at ``alpha = 1/2`` [TP6]).

    Weights outside the branches (embeddings, the head, the final norm) keep factor 1. Only
    learning rates are scaled: CompleteP [CP, Table 1] also rescales AdamW's epsilon (with the
    branch gradients, ``m_L^-alpha``) and its weight decay, which stay as the preset sets them.
    """
    depth_mult = _positive("depth_mult", depth_mult)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: must lie in [0, 1] (1 = CompleteP, 0.5 = depth-muP), got {alpha}")
    exponent = 2 * alpha - 1 if update_family(preset) == "linear" else alpha - 1
    return depth_mult**exponent


def batch_size_lr(lr: float, batch_size: int, base_batch_size: int, preset: str) -> float:
    """Learning rate for a new batch size: ``sqrt(B/B0)`` (normalized updates) or ``B/B0`` (SGD).

    The random-matrix analysis of [Gr] finds the largest stable learning rate grows linearly in
    the batch size for SGD and like its square root for adaptive methods; sign and LMO updates
    are normalized like Adam's and follow the square-root rule. The rules hold below the
    critical batch size; beyond it the learning rate stops growing.
    """
    from everyscale.train.schedules import scale_lr_for_batch_size  # the one implementation

    lr = _nonnegative_lr(lr)
    _positive("batch_size", batch_size)
    _positive("base_batch_size", base_batch_size)
    rule = "linear" if update_family(preset) == "linear" else "sqrt"
    return scale_lr_for_batch_size(lr, batch_size, base_batch_size, rule)


def horizon_lr(
    lr: float, tokens: float, base_tokens: float, exponent: float = HORIZON_LR_EXPONENT
) -> float:
    """Learning rate for a longer (or shorter) run: ``eta * (D / D0)^exponent``.

    The default exponent ``-0.28`` is the fit ``eta*(D) ~ D^-0.28`` for Scion in [F], measured
    with the batch size at its optimum ``B*(D) ~ D^0.45`` (:func:`horizon_batch_size`): use the
    two together, or :func:`transfer_lr` when the batch size goes elsewhere. Other optimizers
    have other exponents, so pass your own when you have one.
    """
    lr = _nonnegative_lr(lr)
    ratio = _positive("tokens", tokens) / _positive("base_tokens", base_tokens)
    return lr * ratio**exponent


def horizon_lr_exponent(preset: str, *, fixed_batch: bool = True) -> float:
    """The exponent g of ``eta*(D) ~ D^g`` that :func:`transfer_lr` applies to ``preset``.

    Along the optimal batch size ``B*(D)``: [F]'s ``-0.28``. At a fixed batch size the batch
    rule's share of that growth comes off too: ``-0.28 - 0.45 / 2 = -0.505`` for the
    normalized presets (``sqrt(B)`` rule), ``-0.28 - 0.45 = -0.73`` for SGD (``B`` rule).
    """
    family = update_family(preset)
    if not fixed_batch:
        return HORIZON_LR_EXPONENT
    batch_power = 1.0 if family == "linear" else 0.5
    return HORIZON_LR_EXPONENT - batch_power * HORIZON_BATCH_EXPONENT


def horizon_batch_size(
    batch_size: int, tokens: float, base_tokens: float, exponent: float = HORIZON_BATCH_EXPONENT
) -> int:
    """Batch size for a longer run: ``B (D/D0)^exponent``, rounded, >= 1 (``B* ~ D^0.45`` [F])."""
    batch_size = _positive("batch_size", batch_size)
    ratio = _positive("tokens", tokens) / _positive("base_tokens", base_tokens)
    return max(1, round(batch_size * ratio**exponent))


def transfer_lr(
    lr: float,
    preset: str,
    *,
    batch_size: int | None = None,
    base_batch_size: int | None = None,
    tokens: float | None = None,
    base_tokens: float | None = None,
) -> float:
    """Move a proxy's tuned learning rate to a run with another batch size and/or token count.

    Batch sizes only: :func:`batch_size_lr`. Token counts only: :func:`horizon_lr`, which
    assumes the batch size follows ``B*(D)`` (:func:`horizon_batch_size`). Both: the horizon
    rule moves the run along ``B_D = B0 (D/D0)^0.45`` and the batch-size rule covers the rest,
    ``B / B_D``; so a batch that follows ``B*(D)`` gets the horizon rule alone (multiplying
    the two rules outright would count the batch growth twice). At a fixed batch size this
    gives Scion ``eta ~ D^(-0.28 - 0.45/2) = D^-0.505``, near [F]'s joint fit ``D^-0.56``.
    Width and depth factors are per parameter and live in
    :mod:`everyscale.scale.parametrization`.
    """
    if (batch_size is None) != (base_batch_size is None):
        raise ValueError("batch_size and base_batch_size: give both (target and proxy) or neither")
    if (tokens is None) != (base_tokens is None):
        raise ValueError("tokens and base_tokens: give both (target and proxy) or neither")
    update_family(preset)  # validates the name even when no rule applies
    if batch_size is not None:
        lr = batch_size_lr(lr, batch_size, base_batch_size, preset)
    if tokens is not None:
        # With a batch size given, its growth along B*(D) was counted just above.
        exponent = horizon_lr_exponent(preset, fixed_batch=batch_size is not None)
        lr = horizon_lr(lr, tokens, base_tokens, exponent)
    return _nonnegative_lr(lr)
