"""Plain numpy/PyTorch oracles with the same contracts as the sharpzo ops (the tests' reference).

Nothing here is fast; everything here is short enough to check by eye against the
specification (docs/stream.md for the stream, the ops' docstrings for the rest).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["philox4x32", "stream_values", "sample", "perturb", "ordered_sum", "order_keys",
           "sparse_zscore", "mask_score", "cma_cov_update", "quantize_rows"]

_MASK32 = np.uint64(0xFFFFFFFF)
_MUL0 = np.uint64(0xD2511F53)  # multiplies counter word 0
_MUL1 = np.uint64(0xCD9E8D57)  # multiplies counter word 2
_BUMP = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))


def philox4x32(counter, key, rounds: int = 10) -> np.ndarray:
    """Philox4x32-`rounds` of uint32 counters (..., 4) under uint32 keys (..., 2)."""
    c = [np.asarray(counter, dtype=np.uint64)[..., i] for i in range(4)]
    k0 = np.asarray(key, dtype=np.uint64)[..., 0]
    k1 = np.asarray(key, dtype=np.uint64)[..., 1]
    for r in range(rounds):
        if r:
            k0 = (k0 + _BUMP[0]) & _MASK32
            k1 = (k1 + _BUMP[1]) & _MASK32
        p0 = _MUL0 * c[0]
        p1 = _MUL1 * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & _MASK32, (p0 >> np.uint64(32)) ^ c[3] ^ k1,
             p0 & _MASK32]
    return np.stack(c, axis=-1).astype(np.uint32)


def _blocks(seed: int, stream: int, blocks: np.ndarray) -> np.ndarray:
    """The stream's Philox blocks `blocks` (uint64 array): uint32 words (len, 4)."""
    s = np.uint64(stream)
    high = s >> np.uint64(32)
    counter = np.stack([blocks & _MASK32, blocks >> np.uint64(32),
                        np.full_like(blocks, s & _MASK32), np.full_like(blocks, high)], axis=-1)
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint64)
    return philox4x32(counter, key)


def stream_values(n: int, seed: int, stream: int = 0, dist: str = "gaussian",
                  offset: int = 0) -> np.ndarray:
    """Stream elements offset .. offset + n - 1 in float64 (docs/stream.md)."""
    j = np.uint64(offset) + np.arange(n, dtype=np.uint64)
    if dist == "rademacher":
        words = _blocks(seed, stream, j // np.uint64(128))
        word = words[np.arange(n), ((j // np.uint64(32)) % np.uint64(4)).astype(np.int64)]
        bit = (word.astype(np.uint64) >> (j % np.uint64(32))) & np.uint64(1)
        return np.where(bit == 1, 1.0, -1.0)
    if dist == "gaussian":
        words = _blocks(seed, stream, j // np.uint64(4))
        u = ((words >> np.uint32(9)).astype(np.float64) + 0.5) * 2.0**-23
        lane = (j % np.uint64(4)).astype(np.int64)
        pair = lane // 2  # lanes 0, 1 from (u0, u1); lanes 2, 3 from (u2, u3)
        rows = np.arange(n)
        radius = np.sqrt(-2.0 * np.log(u[rows, 2 * pair]))
        angle = 2.0 * math.pi * u[rows, 2 * pair + 1]
        return radius * np.where(lane % 2 == 0, np.cos(angle), np.sin(angle))
    raise ValueError(f"dist must be 'gaussian' or 'rademacher', got {dist!r}")


def sample(shape, seed: int, stream: int = 0, dist: str = "gaussian", offset: int = 0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    z = stream_values(math.prod(shape), seed, stream, dist, offset)
    return torch.from_numpy(z).reshape(shape).to(dtype)


def perturb(x: torch.Tensor, seed: int, stream: int = 0, scale: float = 1.0,
            dist: str = "gaussian", offset: int = 0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """What perturb_ makes of x, as a new tensor: x + scale * z in float32 (float64 for float64
    tensors), rounded once to x's dtype, only where mask is True."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    z = sample(x.shape, seed, stream, dist, offset, dtype=acc).to(x.device)
    xa = x.to(acc)
    y = xa + torch.tensor(scale, dtype=acc) * z
    if mask is not None:
        y = torch.where(mask, y, xa)
    return y.to(x.dtype)


# ---- sparse_zscore, mask_score -----------------------------------------------------------------

CHUNK_ELEMENTS = 4096
LANES = 8


def ordered_sum(x: np.ndarray) -> float:
    """The sum of float64 x in the order of Note [Deterministic reductions]: chunks of 4096,
    element p of a chunk into accumulator p % 8 (adding in index order), the accumulators combined
    as ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7)), the chunk sums added in chunk order."""
    x = np.asarray(x, dtype=np.float64).ravel()
    chunks = -(-x.size // CHUNK_ELEMENTS)
    padded = np.zeros(chunks * CHUNK_ELEMENTS)  # adding +0.0 changes no accumulator
    padded[:x.size] = x
    acc = np.add.accumulate(padded.reshape(chunks, CHUNK_ELEMENTS // LANES, LANES), axis=1)[:, -1]
    chunk_sums = ((acc[:, 0] + acc[:, 1]) + (acc[:, 2] + acc[:, 3])) + (
        (acc[:, 4] + acc[:, 5]) + (acc[:, 6] + acc[:, 7]))
    return float(np.add.accumulate(chunk_sums)[-1])


def _moments(x: np.ndarray, eps: float) -> tuple[float, float, bool]:
    """(mean, std + eps, finite) of float64 x, two passes of ordered_sum."""
    n = x.size
    mean = ordered_sum(x) / n
    if not math.isfinite(mean):  # inf - inf would only warn; the moments are not finite anyway
        return mean, math.nan, False
    d = x - mean
    std = math.sqrt(ordered_sum(d * d) / n)
    return mean, std + eps, math.isfinite(std)


def order_keys(score: np.ndarray) -> np.ndarray:
    """Note [Score order]: unsigned keys, larger score larger key, -0 == +0, NaN lowest (0)."""
    score = np.where(score == 0, np.zeros_like(score), score)  # -0.0 -> +0.0 (NaN kept)
    utype = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}[score.dtype]
    bits = score.view(utype)
    sign = utype(1) << utype(8 * score.itemsize - 1)
    keys = np.where(bits & sign, ~bits, bits | sign)
    return np.where(np.isnan(score), utype(0), keys)


def _top_k_mask(keys: np.ndarray, k: int) -> np.ndarray:
    """The k largest keys, ties to the lower index: a stable sort on descending keys."""
    mask = np.zeros(keys.size, dtype=bool)
    mask[np.argsort(~keys, kind="stable")[:k]] = True
    return mask


def _score_array(t: torch.Tensor) -> np.ndarray:
    """Scores as the kernels read them: float32 (exact for fp16/bf16), float64 stays float64."""
    wide = t.dtype == torch.float64
    return t.detach().cpu().to(torch.float64 if wide else torch.float32).numpy().ravel()


def sparse_zscore(g: torch.Tensor, k: int, score: torch.Tensor | None = None,
                  eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    x = g.detach().cpu().double().numpy().ravel()
    mean, denom, finite = _moments(x, eps)
    if not finite:
        return (torch.full_like(g, math.nan),
                torch.zeros(g.shape, dtype=torch.bool, device=g.device))
    z = (x - mean) / denom if denom > 0 else np.zeros_like(x)
    values = torch.from_numpy(z).to(g.dtype)  # one rounding, double -> dtype
    keys = order_keys(np.abs(_score_array(values)) if score is None else _score_array(score))
    mask = torch.from_numpy(_top_k_mask(keys, k))
    values = torch.where(mask, values, torch.zeros((), dtype=g.dtype))
    return values.reshape(g.shape).to(g.device), mask.reshape(g.shape).to(g.device)


def mask_score(w: torch.Tensor, grad: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    out_dtype = torch.float64 if torch.float64 in (w.dtype, grad.dtype) else torch.float32
    a = np.abs(grad.detach().cpu().double().numpy().ravel())
    mean, denom, finite = _moments(a, eps)
    if not finite:
        return torch.full(w.shape, math.nan, dtype=out_dtype, device=w.device)
    wd = w.detach().cpu().double().numpy().ravel()
    z = (a - mean) / denom if denom > 0 else np.zeros_like(a)
    out = torch.from_numpy(wd * wd * z).to(out_dtype)
    return out.reshape(w.shape).to(w.device)


# ---- cma_cov_update_ ---------------------------------------------------------------------------

def cma_cov_update(C: torch.Tensor, pc: torch.Tensor, Y: torch.Tensor, weights: torch.Tensor,
                   c1: float, cmu: float, decay: float) -> torch.Tensor:
    """decay * C + c1 * pc pc^T + cmu * Y^T diag(weights) Y from C's upper triangle, in float64."""
    upper = torch.triu(C.double())
    Cs = upper + upper.triu(1).T  # the symmetric matrix the op reads
    Yd, pd = Y.double(), pc.double()
    out = decay * Cs + c1 * torch.outer(pd, pd) + cmu * (Yd.T * weights.double()) @ Yd
    return out.to(C.dtype)


# ---- quantize_rows -----------------------------------------------------------------------------

def quantize_rows(x: torch.Tensor, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """scale = max|x| / qmax per row (1 if that is 0, NaN if not finite); q = round(x / scale) +
    128 (half to even, clamped to [-qmax, qmax]; 128 in a non-finite row), in float32
    arithmetic."""
    amax = x.abs().amax(dim=1, keepdim=True) if x.shape[1] else torch.zeros(x.shape[0], 1)
    finite = torch.isfinite(x).all(dim=1, keepdim=True)
    scale = amax / torch.tensor(float(qmax))
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    scale = torch.where(finite, scale, torch.full_like(scale, math.nan))
    y = torch.round((x / scale).clamp(-qmax, qmax))
    y = torch.where(finite, y, torch.zeros_like(y))
    return (y.to(torch.int32) + 128).to(torch.uint8), scale
