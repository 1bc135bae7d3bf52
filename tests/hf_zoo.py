"""Tiny ``transformers`` models built from their configs (no download), with a batch and a loss.

Each entry of :data:`ZOO` builds ``(model, batch, loss_fn)``: ``loss_fn(model, batch)`` returns
a scalar loss. Shapes are the smallest that keep each architecture's structure (two layers,
several heads, several experts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

transformers = __import__("pytest").importorskip("transformers")

VOCAB = 96


def _tokens(batch: int = 4, length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _lm_loss(model, batch):
    return model(input_ids=batch, labels=batch).loss


def _images(batch: int = 4, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, size, size, generator=g), torch.randint(
        0, 5, (batch,), generator=g
    )


def _image_loss(model, batch):
    pixels, labels = batch
    return model(pixel_values=pixels, labels=labels).loss


def gpt2():
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=128, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config), _tokens(), _lm_loss


def llama(tied: bool):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        tie_word_embeddings=tied,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config), _tokens(), _lm_loss


def bert_mlm():
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=32, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return transformers.BertForMaskedLM(config), _tokens(), _lm_loss


def vit():
    config = transformers.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=128, num_labels=5, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config), _images(), _image_loss


def resnet():
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
        layer_type="basic", num_labels=5,
    )  # fmt: skip
    return transformers.ResNetForImageClassification(config), _images(size=32), _image_loss


def mixtral():
    config = transformers.MixtralConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=32,
    )  # fmt: skip
    return transformers.MixtralForCausalLM(config), _tokens(), _lm_loss


def t5():
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return transformers.T5ForConditionalGeneration(config), _tokens(), _lm_loss


ZOO: dict[str, Callable[[], tuple]] = {
    "gpt2": gpt2,
    "llama_tied": lambda: llama(True),
    "llama_untied": lambda: llama(False),
    "bert_mlm": bert_mlm,
    "vit": vit,
    "resnet": resnet,
    "mixtral": mixtral,
    "t5": t5,
}


def build(name: str):
    """``(model, batch, loss_fn)`` of zoo entry ``name``, seeded."""
    torch.manual_seed(0)
    return ZOO[name]()
