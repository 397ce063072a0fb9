"""Statistics and top-k selection over a flat vector that is made a block at a time, never held
whole: SparseZO's mask refresh over a large model (Note [A mask refresh in blocks]).

Note [A mask refresh in blocks]
A "score" mask ranks every coordinate by w^2 * zscore(|G|), G a dense gradient estimate over all
of x. Held whole, x in float32, G, the scores and their z-scores are four float32 vectors of the
model's size: 3.3 times the memory of inference at OPT-125m's shape in float32, 5 times in
bfloat16. Here G is never stored: a block of it is regenerated from the perturbation stream when
a pass needs it (the directions are seeded; accumulate_ with the block's offset gives exactly
the elements the whole vector would hold), and the passes keep O(1) numbers between blocks:

    1. the ordered sum of |G| (Note [Deterministic reductions]: chunk sums of 4096 elements in
       8 lanes, added in chunk order; blocks are whole chunks, so a running total of their chunk
       sums is the sum over the whole vector, bit for bit), giving the mean;
    2. the ordered sum of squared deviations, giving the standard deviation;
    3. a histogram of the high 16 bits of the scores' order keys (Note [Score order]), which
       finds the bin that holds the k-th largest score;
    4. a histogram of the low 16 bits within that bin: the k-th largest key T, and how many of
       the keys equal to T the mask takes (ties go to the lower index);
    5. the mask, written block by block.

The mask is the one sparse_zscore selects from the whole score vector, bit for bit, and what the
refresh holds beyond the parameters and the new mask is a few vectors of BLOCK elements, the same
for every model size; the price is regenerating G five times instead of once.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch

__all__ = ["BLOCK", "BUFFER_BYTES", "CHUNK", "blocks", "ordered_sum", "moments", "top_k_mask"]

CHUNK = 4096   # elements of a chunk of the ordered reductions (csrc: kChunkElements)
LANES = 8      # accumulators of a chunk (csrc: kLanes)
BLOCK = 1 << 19  # elements of a block: a whole number of chunks
# What a pass holds for one block at most (its float64 values and their temporaries, the order
# keys): a bound measured with room to spare (30 MB at BLOCK = 2^19 with 2 threads), the memory
# a refresh adds to the parameters and the mask whatever the model's size.
BUFFER_BYTES = 64 * BLOCK

Blocks = Callable[[int, int], torch.Tensor]  # (start, end) -> the vector's elements start..end-1


def blocks(n: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the blocks of range(n), in order."""
    assert BLOCK % CHUNK == 0, "a block must be a whole number of chunks"
    for start in range(0, n, BLOCK):
        yield start, min(n, start + BLOCK)


def _chunk_sums(x: torch.Tensor) -> np.ndarray:
    """The chunk sums of float64 x in the order of Note [Deterministic reductions]: element p of
    a chunk into accumulator p % 8, each adding in index order, combined as
    ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7)). On the host (numpy runs the 511 additions of a lane
    with little overhead per call). Padding the last chunk with +0.0 changes no accumulator
    (they start at +0.0 and add values that are not -0.0)."""
    chunks = -(-x.numel() // CHUNK)
    padded = np.zeros(chunks * CHUNK)
    padded[:x.numel()] = x.cpu().numpy()
    rows = np.ascontiguousarray(padded.reshape(chunks, CHUNK // LANES, LANES).transpose(1, 0, 2))
    acc = rows[0].copy()
    for row in rows[1:]:  # every chunk's eight lanes at once, in index order
        acc += row
    a = acc.T
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


def ordered_sum(values: Blocks, n: int) -> float:
    """The sum of the float64 vector given block by block, in the order of Note [Deterministic
    reductions] (what the ops' reductions compute over the whole vector)."""
    total = 0.0
    for start, end in blocks(n):
        for s in _chunk_sums(values(start, end)).tolist():
            total += s
    return total


def moments(values: Blocks, n: int, eps: float) -> tuple[float, float, bool]:
    """(mean, std + eps, finite) of the float64 vector given block by block: two ordered sums,
    the ops' moments (csrc/include/sharpzo/moments.h) bit for bit."""
    mean = ordered_sum(values, n) / n
    if not math.isfinite(mean):
        return mean, math.nan, False
    squared = ordered_sum(lambda start, end: (values(start, end) - mean).square(), n)
    std = math.sqrt(squared / n)
    return mean, std + eps, math.isfinite(std)


def _order_keys(score: torch.Tensor) -> torch.Tensor:
    """Note [Score order] for float32 scores, as int32 whose signed order is the scores': larger
    score larger key, -0 == +0, NaN lowest (the unsigned keys of Note [Score order] less 2^31).
    A float's bits read as a signed integer order the non-negative floats; flipping all but the
    sign bit of a negative one reverses the order of the negative ones."""
    score = torch.where(score == 0, torch.zeros((), dtype=score.dtype, device=score.device),
                        score)
    bits = score.view(torch.int32)
    keys = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return keys.masked_fill_(score.isnan(), -(1 << 31))


def _high(keys: torch.Tensor) -> torch.Tensor:
    """The high 16 bits of the unsigned keys: bins 0 .. 65535 in the keys' order."""
    return (keys >> 16) + (1 << 15)


def _kth_from_top(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """(the bin holding the k-th largest element, the elements in higher bins), from a histogram
    with at least k elements."""
    above = counts.flip(0).cumsum(0)  # above[i]: elements in the top i + 1 bins
    top = int(torch.searchsorted(above, k))  # the first i with above[i] >= k
    return counts.numel() - 1 - top, int(above[top - 1]) if top else 0


def top_k_mask(scores: Blocks, n: int, k: int, device: torch.device) -> torch.Tensor:
    """The bool mask of the k largest float32 scores given block by block, ties to the lower
    index and NaN lowest: sparse_zscore's selection (Note [Score order]), in three passes over
    the scores (Note [A mask refresh in blocks])."""
    high = torch.zeros(1 << 16, dtype=torch.int64, device=device)
    for start, end in blocks(n):
        high += torch.bincount(_high(_order_keys(scores(start, end))), minlength=1 << 16)
    bin_, above = _kth_from_top(high, k)
    low = torch.zeros(1 << 16, dtype=torch.int64, device=device)
    for start, end in blocks(n):
        keys = _order_keys(scores(start, end))
        low += torch.bincount(keys[_high(keys) == bin_] & 0xFFFF, minlength=1 << 16)
    t, within = _kth_from_top(low, k - above)
    threshold = ((bin_ - (1 << 15)) << 16) | t  # the k-th largest key
    ties = k - above - within  # how many keys equal to it the mask takes, the first ones
    mask = torch.empty(n, dtype=torch.bool, device=device)
    for start, end in blocks(n):
        keys = _order_keys(scores(start, end))
        equal = keys == threshold
        taken = equal & (equal.cumsum(0) <= ties)
        ties -= int(taken.sum())
        torch.logical_or(keys > threshold, taken, out=mask[start:end])
    return mask
