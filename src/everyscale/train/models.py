"""Models: a small GPT for byte-level text, an MLP and a CNN for small images.

Every model offers:

- ``num_params(embeddings=True) -> int``: unique parameters (tied weights counted once);
  ``embeddings=False`` leaves out the vocabulary matrices (token embedding and output head),
  Kaplan et al.'s "non-embedding" count N [K]. Images models have no embeddings.
- ``flops_per_token(attention=True) -> float``: training FLOPs per token (forward + backward
  = 3x forward, one multiply-add = 2 FLOPs), see each model's docstring. For the image models
  a "token" is one image.
- ``example_input(batch_size=2) -> Tensor``: a valid input batch on the model's device (the
  optimizer's role finder runs one forward pass on it to find the first and last layers).

No linear or convolution has a bias: every weight is a matrix (or a kernel) with a norm, and
the only vectors are the RMSNorm gains.

References: [K] Kaplan et al. 2020, *Scaling Laws for Neural Language Models* (the 6N rule and
its attention term); [H] Hoffmann et al. 2022 (Chinchilla, FLOP accounting); Su et al. 2021,
*RoFormer* (rotary position embeddings); Zhang & Sennrich 2019 (RMSNorm).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CNN", "GPT", "MLP", "MODELS", "build_model"]

MODELS = ("gpt", "mlp", "cnn")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_input_shape(input_shape) -> tuple[int, ...]:
    """``(channels, height, width)``-like: a non-empty sequence of positive integers."""
    ok = isinstance(input_shape, (tuple, list)) and len(input_shape) > 0
    if not ok or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in input_shape):
        raise ValueError(
            f"input_shape must be a sequence of positive integers such as [1, 28, 28], "
            f"got {input_shape!r}"
        )
    return tuple(input_shape)


# ----------------------------------------------------------------------------- GPT


def rotary_tables(context: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, ...]:
    """Cosine and sine tables ``(context, head_dim/2)`` of rotary embeddings (Su et al. 2021).

    Pair ``i`` of a head's channels is rotated by the angle ``t * base^(-2i/head_dim)`` at
    position ``t``, so ``<q_t, k_s>`` depends on ``t - s`` only.
    """
    freqs = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x1, x2)`` (the two halves of the head dimension of ``x``)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate q, k, v, o projections (no biases)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width, bias=False)
        self.k = nn.Linear(width, width, bias=False)
        self.v = nn.Linear(width, width, bias=False)
        self.o = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, time, self.heads, width // self.heads).transpose(1, 2)

        q = apply_rotary(split_heads(self.q(x)), cos, sin)
        k = apply_rotary(split_heads(self.k(x)), cos, sin)
        y = F.scaled_dot_product_attention(q, k, split_heads(self.v(x)), is_causal=True)
        return self.o(y.transpose(1, 2).reshape(batch, time, width))


class FeedForward(nn.Module):
    """``W_out gelu(W_in x)`` with a 4x hidden width."""

    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, 4 * width, bias=False)
        self.proj = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm residual block: ``x + m attn(norm(x))``, then ``x + m mlp(norm(x))``."""

    def __init__(self, width: int, heads: int, residual_multiplier: float):
        super().__init__()
        self.residual_multiplier = residual_multiplier
        self.norm1 = nn.RMSNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.norm2 = nn.RMSNorm(width)
        self.mlp = FeedForward(width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.residual_multiplier * self.attn(self.norm1(x), cos, sin)
        return x + self.residual_multiplier * self.mlp(self.norm2(x))


class GPT(nn.Module):
    """A decoder-only transformer: token embedding, ``depth`` pre-norm blocks, RMSNorm, head.

    Positions enter through rotary embeddings (no parameters). Each residual branch is
    multiplied by ``residual_multiplier`` (the scale package sets it to ``depth^-alpha``:
    alpha = 1 is CompleteP [CP], alpha = 1/2 depth-muP). Weights start at N(0, 0.02^2)
    (GPT-2's init); norm gains at 1.

    Counting (``d`` = width, ``L`` = depth, ``V`` = vocab, ``T`` = context):
    non-embedding parameters ``N = L (12 d^2 + 2 d) + d`` (q, k, v, o: 4 d^2; MLP: 8 d^2;
    two gains per block and a final gain); the embedding adds ``V d`` and an untied head
    another ``V d``. Training FLOPs per token ``6 (12 L d^2 + V d)`` (every weight matrix,
    including the head, is used once per token; the embedding is a lookup and costs nothing;
    the O(d) gains are ignored), plus with ``attention=True`` the attention term ``6 L T d``
    of [K, Table 1]: scores and value mixing cost ``2 T d`` each per token and layer over the
    full window, halved because the causal mask leaves on average half the window.
    """

    def __init__(
        self,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        context: int = 128,
        vocab: int = 256,
        tied: bool = False,
        residual_multiplier: float = 1.0,
    ):
        super().__init__()
        _check_positive(width=width, depth=depth, heads=heads, context=context, vocab=vocab)
        if width % heads:
            raise ValueError(
                f"width={width} is not divisible by heads={heads}: choose a width that is a "
                f"multiple of heads (e.g. {heads * max(1, round(width / heads))})"
            )
        if (width // heads) % 2:
            raise ValueError(
                f"width/heads = {width // heads} is odd; rotary embeddings rotate channel "
                "pairs, so choose width and heads with an even head dimension"
            )
        if not isinstance(tied, bool):
            raise ValueError(f"tied must be True or False (true/false), got {tied!r}")
        if (
            isinstance(residual_multiplier, bool)
            or not isinstance(residual_multiplier, (int, float))
            or not math.isfinite(residual_multiplier)
            or residual_multiplier <= 0
        ):
            raise ValueError(
                f"residual_multiplier must be a positive finite number, got {residual_multiplier!r}"
            )
        self.width, self.depth, self.heads = width, depth, heads
        self.context, self.vocab, self.tied = context, vocab, tied
        self.residual_multiplier = residual_multiplier
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(Block(width, heads, residual_multiplier) for _ in range(depth))
        self.norm = nn.RMSNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        cos, sin = rotary_tables(context, width // heads)
        # Not persistent: derived from the shape, so checkpoints hold only learned tensors.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab)`` for token ids ``(B, T)`` with ``T <= context``."""
        time = tokens.shape[1]
        if time > self.context:
            raise ValueError(
                f"input has {time} tokens, more than the model's context {self.context}"
            )
        cos, sin = self.rope_cos[:time], self.rope_sin[:time]
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.norm(x))

    def num_params(self, embeddings: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())  # parameters() skips the tied copy
        if embeddings:
            return total
        vocab_matrices = self.vocab * self.width * (1 if self.tied else 2)
        return total - vocab_matrices

    def flops_per_token(self, attention: bool = True) -> float:
        # Every nn.Linear weight (the head included, tied or not) is one multiply-add per token.
        matmul_params = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        flops = 6.0 * matmul_params
        if attention:
            flops += 6.0 * self.depth * self.context * self.width
        return flops

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(self.vocab, (batch_size, self.context), generator=generator)
        return tokens.to(self.embed.weight.device)


# ----------------------------------------------------------------------------- images


class MLP(nn.Module):
    """Flatten, ``depth`` hidden layers of ``width`` with ReLU, a linear classifier.

    Parameters ``N = in*w + (depth-1) w^2 + w*classes``; training FLOPs per image ``6N``.
    """

    def __init__(
        self,
        width: int = 128,
        depth: int = 2,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
    ):
        super().__init__()
        _check_positive(width=width, depth=depth, num_classes=num_classes)
        self.input_shape = _check_input_shape(input_shape)
        fan_in = math.prod(self.input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(fan_in if i == 0 else width, width, bias=False), nn.ReLU()]
        layers.append(nn.Linear(width, num_classes, bias=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def num_params(self, embeddings: bool = True) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, attention: bool = True) -> float:
        return 6.0 * self.num_params()

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, *self.input_shape, generator=generator)
        return x.to(next(self.parameters()).device)


class CNN(nn.Module):
    """``depth`` 3x3 convolutions of ``width`` channels with ReLU, global average pool, linear.

    A 2x2 max-pool follows each convolution while the feature map is at least 8 pixels wide
    (28 -> 14 -> 7, or 8 -> 4), so the same recipe fits 28x28 and 8x8 images.

    Training FLOPs per image ``6 sum_l (9 c_in c_out H_l W_l) + 6 w * classes``: each
    kernel weight is used once per output pixel (pooling and ReLU are ignored).
    """

    def __init__(
        self,
        width: int = 32,
        depth: int = 3,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
    ):
        super().__init__()
        _check_positive(width=width, depth=depth, num_classes=num_classes)
        if len(input_shape) != 3:
            raise ValueError(
                f"cnn needs images shaped (channels, height, width), got {input_shape}"
            )
        self.input_shape = _check_input_shape(input_shape)
        channels, height, wide = self.input_shape
        layers: list[nn.Module] = []
        self._conv_macs = 0  # multiply-adds of all convolutions for one image
        for i in range(depth):
            c_in = channels if i == 0 else width
            layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.ReLU()]
            self._conv_macs += 9 * c_in * width * height * wide
            if min(height, wide) >= 8:
                layers.append(nn.MaxPool2d(2))
                height, wide = height // 2, wide // 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes, bias=False)]
        self.layers = nn.Sequential(*layers)
        self._head_macs = width * num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def num_params(self, embeddings: bool = True) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, attention: bool = True) -> float:
        return 6.0 * (self._conv_macs + self._head_macs)

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, *self.input_shape, generator=generator)
        return x.to(next(self.parameters()).device)


def build_model(name: str, **shape) -> nn.Module:
    """Build ``gpt``, ``mlp`` or ``cnn`` from keyword shape arguments.

    gpt: ``width, depth, heads, context, vocab, tied, residual_multiplier``;
    mlp and cnn: ``width, depth, input_shape, num_classes``.
    Unknown names or shape keywords raise ``ValueError`` naming the valid ones.
    """
    classes = {"gpt": GPT, "mlp": MLP, "cnn": CNN}
    if name not in classes:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    cls = classes[name]
    import inspect

    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(shape) - set(allowed))
    if unknown:
        raise ValueError(
            f"model {name!r} does not take {', '.join(unknown)}; its shape arguments are "
            f"{', '.join(allowed)}"
        )
    return cls(**shape)
