"""A CLIP text transformer, run block by block by this package: the model's weights, its linear
layers at a chosen precision (precision.py), over packed tokens with an attention that the
caller lays out, which is what lets prompts that share a prefix compute it once
(encoders.py).

Each CLIP family builds its model's tower from these parts (clip/families/).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F

from sharpzo_ext.clip.engine.rows import by_rows

__all__ = ["TextTower", "Block", "Attend", "causal_attention"]

# Attention of one block over packed tokens: (layer, q, k, v), each (T, heads, head_dim) -> the
# attended values (T, width). The token layout (which tokens form a sequence, which cached keys
# they see) is the caller's: encoders.py.
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
    else:  # Note [Attention after a past]
        P = past[0].shape[2]
        hidden = torch.ones(T, P + T, dtype=torch.bool, device=q.device).tril_(P).logical_not_()
        scores = (q * q.shape[-1] ** -0.5) @ torch.cat((past[0], k), dim=2).transpose(-1, -2)
        attended = scores.masked_fill_(hidden, -math.inf).softmax(-1) @ torch.cat((past[1], v),
                                                                                  dim=2)
    return attended.transpose(1, 2).reshape(B * T, -1)


# Note [Attention after a past]
# torch's fused attention with a mask (scaled_dot_product_attention on the CPU) splits its work
# by the batch's size: on an AMD EPYC (Zen 4) a sequence's result differed in its last bits with
# the number of sequences beside it, so a candidate's suffixes (Note [Shared prefix]) scored
# differently alone and in a population. Spelled out as two batched matmuls and a softmax, each
# sequence's product has the same shape whatever the batch, and so the same bits. (The causal
# attention without a past keeps the fused kernel: its results do not depend on the batch.)


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


def _run_block(block: Block, x: torch.Tensor, attend: Attend, layer: int) -> torch.Tensor:
    """One residual attention block over packed tokens x (T, width)."""
    T, width = x.shape
    q, k, v = block.qkv(block.ln_1(x)).view(T, 3, block.heads, width // block.heads).unbind(1)
    x = x + block.ls_1(block.out(attend(layer, q, k, v)))
    return x + block.ls_2(block.proj(block.act(block.fc(block.ln_2(x)))))


class TextTower:
    """A CLIP text transformer at `precision` ("fp32", "bf16" or "int8"), from its parts; built
    by its model's family (clip/families/)."""

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
        """L2-normalized text features of pooled hidden states (rows, width)."""
        return by_rows(self._features, pooled)  # Note [Products by row]

    def _features(self, pooled: torch.Tensor) -> torch.Tensor:
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
