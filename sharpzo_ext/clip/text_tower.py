"""A CLIP text transformer, run block by block by this package: the model's weights, its linear
layers at a chosen precision (precision.py), over packed tokens with an attention that the
caller lays out, which is what lets prompts that share a prefix compute it once
(text_features.py).

Built from open_clip's CLIP and CustomTextCLIP with a TextTransformer of standard residual
attention blocks (nn.MultiheadAttention, optional LayerScale) and a causal mask, or from a
Hugging Face CLIPModel (hf_clip.py); anything else is refused with a message that says what is
missing.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F

from sharpzo_ext.clip import precision as precision_lib

__all__ = ["TextTower", "Block", "Attend", "causal_attention", "build", "width",
           "open_clip_tower"]

# Attention of one block over packed tokens: (layer, q, k, v), each (T, heads, head_dim) -> the
# attended values (T, width). The token layout (which tokens form a sequence, which cached keys
# they see) is the caller's: text_features.py.
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     past: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Causal attention of sequences q, k, v (B, T, heads, head_dim) that follow the positions
    of `past` (their keys and values, (B, heads, P, head_dim) each, or None): (B * T, width).
    Every position sees the whole past, itself and the positions before it."""
    B, T = q.shape[:2]
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if past is None:
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        P = past[0].shape[2]
        visible = torch.ones(T, P + T, dtype=torch.bool, device=q.device).tril_(P)
        attended = F.scaled_dot_product_attention(q, torch.cat((past[0], k), dim=2),
                                                  torch.cat((past[1], v), dim=2),
                                                  attn_mask=visible)
    return attended.transpose(1, 2).reshape(B * T, -1)


@dataclasses.dataclass(frozen=True)
class Block:
    ln_1: Callable
    qkv: Callable
    out: Callable
    ls_1: Callable
    ln_2: Callable
    fc: Callable
    act: Callable
    proj: Callable
    ls_2: Callable
    heads: int


def _open_clip_block(module: torch.nn.Module, precision: str) -> Block:
    attn = getattr(module, "attn", None)
    if (not isinstance(attn, torch.nn.MultiheadAttention) or attn.in_proj_weight is None
            or hasattr(module, "ln_1_kv") or not hasattr(module, "mlp")):
        raise TypeError(f"PromptTask runs open_clip's standard residual attention blocks; a "
                        f"{type(module).__name__} is not one")
    mlp = module.mlp
    return Block(
        ln_1=module.ln_1, ln_2=module.ln_2, ls_1=module.ls_1, ls_2=module.ls_2, act=mlp.gelu,
        qkv=precision_lib.linear(attn.in_proj_weight, attn.in_proj_bias, precision),
        out=precision_lib.linear(attn.out_proj.weight, attn.out_proj.bias, precision),
        fc=precision_lib.linear(mlp.c_fc.weight, mlp.c_fc.bias, precision),
        proj=precision_lib.linear(mlp.c_proj.weight, mlp.c_proj.bias, precision),
        heads=attn.num_heads)


def _run_block(block: Block, x: torch.Tensor, attend: Attend, layer: int) -> torch.Tensor:
    """One residual attention block over packed tokens x (T, width)."""
    T, width = x.shape
    q, k, v = block.qkv(block.ln_1(x)).view(T, 3, block.heads, width // block.heads).unbind(1)
    x = x + block.ls_1(block.out(attend(layer, q, k, v)))
    return x + block.ls_2(block.proj(block.act(block.fc(block.ln_2(x)))))


class TextTower:
    """A CLIP text transformer at `precision` ("fp32", "bf16" or "int8"), from its parts; built
    by `build` from an open_clip or a Hugging Face CLIP."""

    def __init__(self, token_embedding: torch.nn.Embedding, positional_embedding: torch.Tensor,
                 blocks: list[Block], ln_final: Callable, projection, pool_type: str,
                 eos_id: int | None, precision: str):
        if pool_type not in ("argmax", "eos", "last"):
            raise TypeError(f"PromptTask supports argmax, eos or last pooling, not {pool_type!r}")
        self.token_embedding = token_embedding
        self.positional_embedding = positional_embedding
        self.blocks = blocks
        self.ln_final = ln_final
        self.projection = projection  # a module, a (width, E) matrix, or None
        self.pool_type, self.eos_id = pool_type, eos_id
        self.precision = precision

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    def pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """The position each tokenized prompt (rows of `tokens`) is pooled at."""
        if self.pool_type == "argmax":  # int32: ONNX's ArgMax takes no int64 in older opsets
            return tokens.int().argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        return torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long,
                          device=tokens.device)

    def positions(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Token embeddings x (..., T, width) at positions start, ..., start + T - 1."""
        return x + self.positional_embedding[start:start + x.shape[-2]].float()

    def run(self, x: torch.Tensor, attend: Attend) -> torch.Tensor:
        """Every block over packed, positioned token embeddings x (T, width), with the
        attention `attend`: the last hidden states (T, width)."""
        for layer, block in enumerate(self.blocks):
            x = _run_block(block, x, attend, layer)
        return x

    def features(self, pooled: torch.Tensor) -> torch.Tensor:
        """L2-normalized text features of pooled hidden states (..., width)."""
        x = self.ln_final(pooled)
        proj = self.projection
        if proj is not None:
            x = proj(x) if isinstance(proj, torch.nn.Module) else x @ proj
        return F.normalize(x.float(), dim=-1)

    def prompt_features(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """L2-normalized features (B, E) of whole prompts: `tokens` (B, L) with the context
        vectors `context` (B, n_ctx, width) in place of tokens 1 .. n_ctx. This is the text
        tower's interface to every backend (the ONNX export is this function)."""
        B, L = tokens.shape
        embedded = self.token_embedding(tokens).float()
        x = torch.cat((embedded[:, :1], context.float(), embedded[:, 1 + context.shape[1]:]), 1)

        def attend(layer, q, k, v):
            return causal_attention(*(t.reshape(B, L, *t.shape[1:]) for t in (q, k, v)))

        hidden = self.run(self.positions(x, 0).reshape(B * L, -1), attend).view(B, L, -1)
        return self.features(hidden[torch.arange(B, device=tokens.device),
                                    self.pool_index(tokens)])


def open_clip_tower(model: torch.nn.Module, precision: str = "fp32") -> TextTower:
    """The text tower of an open_clip CLIP or CustomTextCLIP."""
    tower = getattr(model, "text", model)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final",
              "text_projection", "attn_mask")
    missing = [name for name in needed if not hasattr(tower, name)]
    if missing:
        raise TypeError(f"PromptTask needs an open_clip or Hugging Face CLIP with its own text "
                        f"transformer; {type(model).__name__} has no {', '.join(missing)}")
    if getattr(tower, "cls_emb", None) is not None:
        raise TypeError("PromptTask does not support text towers with a class-token "
                        "embedding (embed_cls)")
    mask = tower.attn_mask
    if mask is None or not torch.equal(torch.isinf(mask), torch.ones_like(
            mask, dtype=torch.bool).triu_(1)):
        raise TypeError("PromptTask needs a causal text transformer (its prompts are cut "
                        "after their end token and share their prefix); this one has "
                        "no causal mask")
    return TextTower(
        tower.token_embedding, tower.positional_embedding,
        [_open_clip_block(module, precision) for module in tower.transformer.resblocks],
        tower.ln_final, tower.text_projection,
        getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax")),
        getattr(tower, "text_eos_id", getattr(tower, "eos_id", None)), precision)


def width(model: torch.nn.Module) -> int:
    """The width of `model`'s text tower (its token embeddings' size)."""
    from sharpzo_ext.clip import hf_clip  # noqa: PLC0415

    if hf_clip.is_hf_clip(model):
        return model.config.text_config.hidden_size
    return getattr(model, "text", model).token_embedding.weight.shape[1]


def build(model: torch.nn.Module, precision: str = "fp32") -> TextTower:
    """The text tower of `model`: a Hugging Face transformers CLIPModel, or an open_clip CLIP."""
    from sharpzo_ext.clip import hf_clip  # noqa: PLC0415

    if hf_clip.is_hf_clip(model):
        return hf_clip.text_tower(model, precision)
    return open_clip_tower(model, precision)
