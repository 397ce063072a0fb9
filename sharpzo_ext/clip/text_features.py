"""Class text features for a population of contexts: the prompts "<SOS> ctx_1..ctx_n <class
tokens> . <EOT>" of every candidate and class through the text tower, in memory-bounded
batches. Two ways, with the same results within float32 rounding:

- SharedPrefix (the default): the positions every prompt of a candidate shares are computed once
  per candidate, and each class's remaining tokens run against their cached keys and values
  (Note [Shared prefix]);
- Plain: every prompt in full, cut after the longest prompt's end token (Note [Truncated
  prompts]); kept to check the other against.

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

import torch

from sharpzo_ext.clip.text_tower import KeysValues, TextTower

__all__ = ["Plain", "SharedPrefix"]


class Plain:
    """Every prompt in full (Note [Truncated prompts] when `truncate`)."""

    def __init__(self, tower: TextTower, tokens: torch.Tensor, n_ctx: int,
                 max_batch_tokens: int, truncate: bool):
        self.tower, self.n_ctx, self.max_batch_tokens = tower, n_ctx, max_batch_tokens
        self.pool = tower.pool_index(tokens)
        length = int(self.pool.max()) + 1 if truncate else tokens.shape[1]
        self.tokens = tokens[:, :length]
        with torch.no_grad():
            self.embedded = tower.token_embedding(self.tokens).float()  # (C, L, width)

    def __call__(self, ctx: torch.Tensor) -> torch.Tensor:
        """L2-normalized text features (m, C, E) of the contexts ctx (m, n_ctx, width)."""
        (C, L, width), m = self.embedded.shape, ctx.shape[0]
        per_chunk = max(1, self.max_batch_tokens // (C * L))
        out = []
        for start in range(0, m, per_chunk):
            part = ctx[start:start + per_chunk]
            x = self.embedded.expand(part.shape[0], -1, -1, -1).clone()
            x[:, :, 1:1 + self.n_ctx] = part[:, None]
            hidden, _ = self.tower.run(self.tower.positions(x.view(-1, L, width), 0))
            pooled = hidden[torch.arange(hidden.shape[0]), self.pool.repeat(part.shape[0])]
            out.append(self.tower.features(pooled).view(part.shape[0], C, -1))
        return torch.cat(out)


class SharedPrefix:
    """Prefixes computed once per candidate, suffixes grouped by length (Note [Shared prefix])."""

    def __init__(self, tower: TextTower, tokens: torch.Tensor, n_ctx: int,
                 max_batch_tokens: int):
        self.tower, self.n_ctx, self.max_batch_tokens = tower, n_ctx, max_batch_tokens
        self.classes = tokens.shape[0]
        pool = tower.pool_index(tokens)
        ends = pool + 1  # each prompt's suffix: positions n_ctx + 1 .. pool
        self.groups: list[tuple[torch.Tensor, torch.Tensor]] = []  # (class ids, suffixes)
        with torch.no_grad():
            embedded = tower.token_embedding(tokens).float()
            for end in sorted(set(ends.tolist())):
                ids = (ends == end).nonzero().flatten()
                suffix = tower.positions(embedded[ids, 1 + n_ctx:end], 1 + n_ctx)
                self.groups.append((ids, suffix))
            self.sos_cache = tower.run(tower.positions(embedded[:1, :1], 0))[1]

    def __call__(self, ctx: torch.Tensor) -> torch.Tensor:
        """L2-normalized text features (m, C, E) of the contexts ctx (m, n_ctx, width)."""
        m = ctx.shape[0]
        sos = [(k.expand(m, -1, -1, -1), v.expand(m, -1, -1, -1)) for k, v in self.sos_cache]
        _, own = self.tower.run(self.tower.positions(ctx, 1), sos)
        prefix = [(torch.cat((k0, k), dim=2), torch.cat((v0, v), dim=2))
                  for (k0, v0), (k, v) in zip(sos, own)]
        out = None
        for ids, suffix in self.groups:
            G, length = ids.numel(), suffix.shape[1]
            pairs = m * G  # (candidate, class) pairs, candidate-major
            per_chunk = max(1, self.max_batch_tokens // length)
            for start in range(0, pairs, per_chunk):
                pair = torch.arange(start, min(start + per_chunk, pairs), device=ctx.device)
                candidate, member = pair // G, pair % G
                hidden, _ = self.tower.run(suffix[member], [(k[candidate], v[candidate])
                                                            for k, v in prefix])
                features = self.tower.features(hidden[:, -1])
                if out is None:
                    out = features.new_empty(m, self.classes, features.shape[-1])
                out[candidate, ids[member]] = features
        return out

