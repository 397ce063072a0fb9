"""ZIP's prompt reparameterization: a low-rank intrinsic prompt with feature sharing.

Note [ZIP's low-rank prompt]
ZIP (ICLR 2025) tunes an intrinsic matrix R of n_ctx rows (one per context token) and k =
d // n_ctx columns, d the intrinsic dimension, built as

    R = U diag(s) V^T + 1 v^T        U: n_ctx x r,  s: r,  V: k x r,  v: k  (r = 5)

where v, added to every row, is the feature shared by all tokens. Token i's context moves by
F_i R_i, F_i a fixed random map from k to the embedding width that preserves norms on average.
The tuned vector holds U, s, V and v: n_ctx r + r + k r + k numbers (217 for 4 tokens, d = 128).
ZIP starts from U = 0, s = 1, V ~ N(0, 1), v = 0, so that R = 0 (the initial context) while V
already spans r directions for U to use. ZIP draws F_i as a Fastfood transform (Walsh-Hadamard
products); we draw dense Gaussian maps with entries N(0, 1/width) from the perturbation stream,
which have the same norm behaviour (E |F r|^2 = |r|^2) and cost nothing at these sizes.
"""

from __future__ import annotations

import torch

import sharpzo_ext.ops as ops

__all__ = ["RANK", "size", "maps", "initial", "shifts"]

RANK = 5  # ZIP's rank
# under the task's seed, next to prompt_task.PROJECTION_STREAM (1 << 60)
_MAPS_STREAM = (1 << 60) + 1     # the F_i
_INITIAL_STREAM = (1 << 60) + 2  # V's initial value


def size(n_ctx: int, k: int, rank: int) -> int:
    """Length of the tuned vector: U, s, V and the shared v."""
    return n_ctx * rank + rank + k * rank + k


def maps(n_ctx: int, k: int, width: int, seed: int, device) -> torch.Tensor:
    """The fixed maps F_i, a (n_ctx, width, k) tensor with entries N(0, 1/width)."""
    return ops.sample((n_ctx, width, k), seed, _MAPS_STREAM, device=device) / width ** 0.5


def initial(n_ctx: int, k: int, rank: int, seed: int, device) -> torch.Tensor:
    """ZIP's starting vector (R = 0): U = 0, s = 1, V ~ N(0, 1), v = 0."""
    V = ops.sample(k * rank, seed, _INITIAL_STREAM, device=device)
    return torch.cat([torch.zeros(n_ctx * rank, device=device), torch.ones(rank, device=device),
                      V, torch.zeros(k, device=device)])


def shifts(W: torch.Tensor, F: torch.Tensor, rank: int) -> torch.Tensor:
    """The context shifts (m, n_ctx, width) of the rows of W (m, size), F from `maps`."""
    m, (n_ctx, _, k) = W.shape[0], F.shape
    U, s, V, v = W.split([n_ctx * rank, rank, k * rank, k], dim=1)
    R = (U.view(m, n_ctx, rank) * s[:, None]) @ V.view(m, k, rank).transpose(1, 2)
    return torch.einsum("mnk,nwk->mnw", R + v[:, None], F)
