"""everyscale: train neural networks at any scale.

One optimizer template (steepest descent under a per-layer norm, through the
norm's linear minimization oracle), hyperparameters that transfer across
scale, and scaling laws fitted robustly, in PyTorch.

    import everyscale
    opt = everyscale.optimizer(model, "scion", lr=0.01)
    everyscale.describe(model, "scion")
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "describe", "optimizer"]


def __getattr__(name: str):
    # Lazy: `import everyscale` stays cheap (the laws need no torch).
    if name in ("optimizer", "describe"):
        from everyscale import optim

        return getattr(optim, name)
    raise AttributeError(f"module 'everyscale' has no attribute {name!r}")
