"""Class text features for a population of contexts: the prompts "<SOS> ctx_1..ctx_n <class
tokens> . <EOT>" of every candidate and class through the text tower, in memory-bounded
batches. Two ways, with the same results within float32 rounding:

- SharedPrefix (the default): the positions every prompt of a candidate shares are computed once
  per candidate, and each class's remaining tokens run against their cached keys and values
  (Note [Shared prefix]);
- Plain: every prompt in full, cut after the longest prompt's end token (Note [Truncated
  prompts]); what the onnxruntime backend runs, and what the torch one is checked against.

Note [Truncated prompts]
The text transformer is causal and pools at the end token, so positions after the last end token
of a batch change no pooled feature: cutting every sequence there is exact and saves most of the
77 positions.

Note [Shared prefix]
In CoOp's layout the first n + 1 positions (SOS and the context) are the same for every class of a
candidate. The transformer is causal, so their hidden states, keys and values in every block depend
on those positions only: not on the class. A candidate's prefix is therefore computed once, and
each class's suffix (its name tokens, the full stop and the end token) attends to the prefix's
cached keys and values. The SOS position does not even depend on the candidate: it is computed
once per task. Classes are grouped by suffix length, so no suffix carries padding either: the work
per candidate falls from C * L token-layers (L the longest prompt) to n + sum over classes of
their own suffix lengths.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from sharpzo_ext.clip.engine.tower import TextTower, causal_attention

if TYPE_CHECKING:
    from sharpzo_ext.clip.engine.onnx_export import OnnxTower

__all__ = ["Plain", "SharedPrefix", "truncated"]


def truncated(tower: TextTower | OnnxTower, tokens: torch.Tensor, truncate: bool) -> torch.Tensor:
    """The prompts `tokens` cut after the longest one's end token (Note [Truncated prompts]),
    or as they are unless `truncate`."""
    length = int(tower.pool_index(tokens).max()) + 1 if truncate else tokens.shape[1]
    return tokens[:, :length]


class Plain:
    """Every prompt in full (Note [Truncated prompts] when `truncate`), through any text tower
    with TextTower's pool_index and prompt_features: the torch one or onnx_export.OnnxTower."""

    def __init__(self, tower: TextTower | OnnxTower, tokens: torch.Tensor, max_batch_tokens: int,
                 truncate: bool):
        self.tower, self.max_batch_tokens = tower, max_batch_tokens
        self.tokens = truncated(tower, tokens, truncate)

    def __call__(self, ctx: torch.Tensor) -> torch.Tensor:
        """L2-normalized text features (m, C, E) of the contexts ctx (m, n_ctx, width)."""
        (C, L), m = self.tokens.shape, ctx.shape[0]
        out = []
        for pairs in torch.split(torch.arange(m * C, device=ctx.device),
                                 max(1, self.max_batch_tokens // L)):
            candidate, member = pairs // C, pairs % C  # (candidate, class) pairs, candidate-major
            out.append(self.tower.prompt_features(self.tokens[member], ctx[candidate]))
        return torch.cat(out).view(m, C, -1)


@dataclasses.dataclass
class _Chunk:
    """Packed tokens of some candidates' prefixes, then of their (candidate, class) suffixes
    grouped by length, and the attention over them (Note [Shared prefix])."""
    candidates: int                   # U candidates, prefixes first: U * n_ctx tokens
    n_ctx: int
    sos: list[tuple[torch.Tensor, torch.Tensor]]  # the SOS position's keys, values per layer
    groups: list[tuple[int, torch.Tensor]]        # (suffix length, candidate of each suffix)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> torch.Tensor:
        U, n = self.candidates, self.n_ctx
        heads = q.shape[1]
        k0, v0 = (t.expand(U, heads, 1, -1) for t in self.sos[layer])
        qp, kp, vp = (t[:U * n].view(U, n, *t.shape[1:]) for t in (q, k, v))
        out = [causal_attention(qp, kp, vp, (k0, v0))]
        keys = torch.cat((k0, kp.transpose(1, 2)), dim=2)  # the prefix's, SOS included
        values = torch.cat((v0, vp.transpose(1, 2)), dim=2)
        start = U * n
        for length, candidate in self.groups:
            end = start + candidate.numel() * length
            qs, ks, vs = (t[start:end].view(-1, length, *t.shape[1:]) for t in (q, k, v))
            out.append(causal_attention(qs, ks, vs, (keys[candidate], values[candidate])))
            start = end
        return torch.cat(out)


class SharedPrefix:
    """Prefixes computed once per candidate, suffixes grouped by length (Note [Shared prefix])."""

    def __init__(self, tower: TextTower, tokens: torch.Tensor, n_ctx: int,
                 max_batch_tokens: int):
        self.tower, self.n_ctx, self.max_batch_tokens = tower, n_ctx, max_batch_tokens
        # each prompt's suffix: its positions n_ctx + 1 .. pool (the end token)
        self.lengths = tower.pool_index(tokens) - n_ctx
        if int(self.lengths.min()) < 1:
            raise ValueError(f"a prompt ends within its {n_ctx} context tokens: no class tokens "
                             "follow the shared prefix (a shorter context, or share_prefix=False)")
        with torch.no_grad():
            embedded = tower.token_embedding(tokens[:, :1 + n_ctx + int(self.lengths.max())])
            self.suffixes = tower.positions(embedded[:, 1 + n_ctx:].float(), 1 + n_ctx)
            self.sos = []

            def record(layer, q, k, v):  # one position: it attends to itself alone
                self.sos.append((k.view(1, -1, 1, k.shape[-1]), v.view(1, -1, 1, v.shape[-1])))
                return v.reshape(1, -1)

            tower.run(tower.positions(embedded[:1, :1].float(), 0)[0], record)

    def __call__(self, ctx: torch.Tensor) -> torch.Tensor:
        """L2-normalized text features (m, C, E) of the contexts ctx (m, n_ctx, width)."""
        m, C, n = ctx.shape[0], self.lengths.numel(), self.n_ctx
        lengths = self.lengths.repeat(m)  # of the (candidate, class) pairs, candidate-major
        starts = lengths.cumsum(0) - lengths
        # a chunk holds the pairs that start within its max_batch_tokens, and their prefixes
        chunk = torch.div(starts, self.max_batch_tokens, rounding_mode="floor")
        out = None
        for pairs in torch.split(torch.arange(m * C, device=ctx.device),
                                 torch.bincount(chunk).tolist()):
            if pairs.numel() == 0:
                continue
            candidate, member = pairs // C, pairs % C
            first = int(candidate[0])
            sorted_lengths, order = torch.sort(lengths[pairs], stable=True)
            candidate, member = candidate[order], member[order]
            group_lengths, counts = torch.unique_consecutive(sorted_lengths, return_counts=True)
            groups, x, pool, begin, start = [], [], [], 0, 0  # begin: pair, start: token
            for length, count in zip(group_lengths.tolist(), counts.tolist()):
                part = slice(begin, begin + count)  # the pairs of this length, in order
                groups.append((length, candidate[part] - first))
                x.append(self.suffixes[member[part], :length].reshape(-1, ctx.shape[-1]))
                ends = torch.arange(1, count + 1, device=ctx.device) * length
                pool.append(start + ends - 1)  # each suffix's last position, its end token
                begin, start = begin + count, start + count * length
            U = int(candidate.max()) - first + 1
            prefix = self.tower.positions(ctx[first:first + U], 1).reshape(U * n, -1)
            layout = _Chunk(U, n, self.sos, groups)
            hidden = self.tower.run(torch.cat([prefix] + x), layout.attend)
            features = self.tower.features(hidden[U * n + torch.cat(pool)])
            if out is None:
                out = features.new_empty(m, C, features.shape[-1])
            out[candidate, member] = features
        return out
