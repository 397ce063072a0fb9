"""Plain numpy/PyTorch oracles with the same contracts as the sharpzo ops (the tests' reference).

Nothing here is fast; everything here is short enough to check by eye against DESIGN.md.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["philox4x32", "stream_values", "sample", "perturb"]

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
    counter = np.stack([blocks & _MASK32, blocks >> np.uint64(32), np.full_like(blocks, s & _MASK32),
                        np.full_like(blocks, s >> np.uint64(32))], axis=-1)
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint64)
    return philox4x32(counter, key)


def stream_values(n: int, seed: int, stream: int = 0, dist: str = "gaussian",
                  offset: int = 0) -> np.ndarray:
    """Stream elements offset .. offset + n - 1 in float64 (DESIGN.md, "The perturbation stream")."""
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
            dist: str = "gaussian", offset: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """What perturb_ makes of x, as a new tensor: x + scale * z in float32 (float64 for float64
    tensors), rounded once to x's dtype, only where mask is True."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    z = sample(x.shape, seed, stream, dist, offset, dtype=acc).to(x.device)
    xa = x.to(acc)
    y = xa + torch.tensor(scale, dtype=acc) * z
    if mask is not None:
        y = torch.where(mask, y, xa)
    return y.to(x.dtype)
