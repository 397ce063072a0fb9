"""Typed Python wrappers of the sharpzo ops, next to their fake (meta) registrations.

Schemas live in csrc/ops.cpp, kernels in csrc/cpu and csrc/cuda, oracles in reference.py.
"""

from __future__ import annotations

import operator
from typing import Sequence

import torch

__all__ = ["perturb_", "sample", "DISTRIBUTIONS"]

DISTRIBUTIONS = ("gaussian", "rademacher")
_STREAM_INT_LIMIT = 1 << 63


def _stream_int(value, name: str) -> int:
    """seed, stream and offset: Python ints in [0, 2^63) (the C++ side sees them as int64)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int in [0, 2^63), got a bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int in [0, 2^63), got {type(value).__name__}") from None
    if not 0 <= value < _STREAM_INT_LIMIT:
        raise ValueError(f"{name} must be in [0, 2^63), got {value}")
    return value


def perturb_(
    x: torch.Tensor,
    seed: int,
    stream: int = 0,
    scale: float = 1.0,
    dist: str = "gaussian",
    offset: int = 0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """In place, ``x += scale * z``, z the perturbation stream (seed, stream) from index offset.

    Element i of x (row-major logical order) takes stream element ``offset + i``, so a tensor
    perturbed whole equals the same tensor perturbed in slices with matching offsets. With a bool
    ``mask`` of x's shape only the elements where it is True change. ``dist`` is "gaussian"
    (standard normal) or "rademacher" (+-1). Low-precision tensors are computed in float32 and
    rounded once. Allocates nothing for a contiguous x. Returns x.
    """
    torch.ops.sharpzo.perturb_.default(
        x,
        _stream_int(seed, "seed"),
        _stream_int(stream, "stream"),
        float(scale),
        dist,
        _stream_int(offset, "offset"),
        mask,
    )
    return x


def sample(
    shape: int | Sequence[int] | torch.Size,
    seed: int,
    stream: int = 0,
    dist: str = "gaussian",
    offset: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A new tensor holding stream elements ``offset .. offset + numel - 1`` in row-major order.

    The values are those ``perturb_`` adds: ``perturb_(x, ...)`` equals ``x + sample(...)``
    (up to rounding). Gaussian values are computed in float32 for every dtype.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    out = torch.empty(shape, dtype=dtype, device=device)
    torch.ops.sharpzo.sample_.default(
        out,
        _stream_int(seed, "seed"),
        _stream_int(stream, "stream"),
        dist,
        _stream_int(offset, "offset"),
    )
    return out


@torch.library.register_fake("sharpzo::perturb_")
def _perturb_fake(x, seed, stream, scale, dist, offset, mask):
    torch._check(mask is None or mask.shape == x.shape, lambda: "perturb_: mask must have x's shape")


@torch.library.register_fake("sharpzo::sample_")
def _sample_fake(out, seed, stream, dist, offset):
    return None
