"""A Hugging Face transformers CLIPModel as PromptTask sees it: its text tower (text_tower.py's
blocks over the model's weights), its image features and its tokenizer in open_clip's format.

transformers is imported only by callers that hold such a model (is_hf_clip looks its CLIP
module up in sys.modules), so `import sharpzo_ext` stays light.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import torch

from sharpzo_ext.clip import precision as precision_lib
from sharpzo_ext.clip.text_tower import Block, TextTower

__all__ = ["is_hf_clip", "text_tower", "encode_image", "Tokenizer"]


def is_hf_clip(model: object) -> bool:
    """Whether `model` is a transformers CLIPModel; imports nothing (open_clip imports
    transformers where it is installed, but not its CLIP module)."""
    clip = sys.modules.get("transformers.models.clip.modeling_clip")
    return clip is not None and isinstance(model, clip.CLIPModel)


def _block(layer: torch.nn.Module, precision: str) -> Block:
    attn = layer.self_attn
    qkv_weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
    qkv_bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
    identity = torch.nn.Identity()
    return Block(
        ln_1=layer.layer_norm1, ln_2=layer.layer_norm2, ls_1=identity, ls_2=identity,
        act=layer.mlp.activation_fn,
        qkv=precision_lib.linear(qkv_weight, qkv_bias, precision),
        out=precision_lib.linear(attn.out_proj.weight, attn.out_proj.bias, precision),
        fc=precision_lib.linear(layer.mlp.fc1.weight, layer.mlp.fc1.bias, precision),
        proj=precision_lib.linear(layer.mlp.fc2.weight, layer.mlp.fc2.bias, precision),
        heads=attn.num_heads)


def text_tower(model: torch.nn.Module, precision: str = "fp32") -> TextTower:
    """The text tower of a CLIPModel: causal, pooled at the end token, projected by
    text_projection. Its pooling follows transformers: configurations from before the end
    token's id was fixed (eos_token_id 2) pool at the largest token id."""
    text = model.text_model
    eos = text.config.eos_token_id
    return TextTower(
        text.embeddings.token_embedding, text.embeddings.position_embedding.weight,
        [_block(layer, precision) for layer in text.encoder.layers], text.final_layer_norm,
        model.text_projection, "argmax" if eos == 2 else "eos", eos, precision)


def encode_image(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Projected (not normalized) image features of preprocessed images (N, 3, H, W)."""
    out = model.get_image_features(pixel_values=images)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class Tokenizer:
    """A Hugging Face CLIP tokenizer with open_clip's calling convention: texts -> (N, length)
    token ids, the end token kept where a text is truncated, and 0 after it."""

    def __init__(self, tokenizer: Callable, length: int):
        self.tokenizer, self.length = tokenizer, length

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        encoded = self.tokenizer(texts, padding="max_length", max_length=self.length,
                                 truncation=True, return_tensors="pt")
        return encoded["input_ids"] * encoded["attention_mask"]
