"""The parameters of an optimizer seen as one flat vector.

Every forward-only algorithm here searches over x, the concatenation of the parameters'
elements in order (row-major within a tensor). Element i of x takes stream index i of the
perturbation stream, so a parameter tensor starting at flat offset o is perturbed with
``perturb_(p, ..., offset=o)``: the direction is the same whether it is applied to the
tensors in place or built as one flat vector. A mask over x is one flat bool tensor; its
per-parameter pieces are views.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch

import sharpzo_ext.ops as ops

__all__ = ["offsets", "numel", "gather", "segment", "scatter_", "pieces", "perturb_", "direction",
           "snapshot", "restored_on_error"]

Params = Sequence[torch.Tensor]


def offsets(params: Params) -> list[int]:
    """The flat offset of each parameter's first element."""
    out, total = [], 0
    for p in params:
        out.append(total)
        total += p.numel()
    return out


def numel(params: Params) -> int:
    return sum(p.numel() for p in params)


def gather(params: Params, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """x as a new flat tensor."""
    return torch.cat([p.detach().reshape(-1).to(dtype) for p in params])


def segment(params: Params, start: int, end: int, dtype: torch.dtype) -> torch.Tensor:
    """x[start:end] as a new flat tensor (only the parameters it overlaps are read)."""
    parts = []
    for p, offset in zip(params, offsets(params)):
        lo, hi = max(start, offset), min(end, offset + p.numel())
        if lo < hi:
            parts.append(p.detach().reshape(-1)[lo - offset:hi - offset].to(dtype))
    return torch.cat(parts)


@torch.no_grad()
def scatter_(params: Params, x: torch.Tensor) -> None:
    """Writes the flat vector x into the parameters (cast to each one's dtype)."""
    for p, offset in zip(params, offsets(params)):
        p.copy_(x[offset:offset + p.numel()].view_as(p))


def fits(params: Params, x: torch.Tensor) -> bool:
    """Whether scatter_(params, x) writes only finite values: every element of x finite and
    within the largest value of its parameter's dtype."""
    return all(bool(x[offset:offset + p.numel()].abs().le(torch.finfo(p.dtype).max).all())
               for p, offset in zip(params, offsets(params)))


def pieces(params: Params, mask: torch.Tensor) -> list[torch.Tensor]:
    """A flat mask cut into one view per parameter, each of the parameter's shape."""
    return [m.view_as(p) for m, p in zip(mask.split([p.numel() for p in params]), params)]


@torch.no_grad()
def perturb_(params: Params, seed: int, stream: int, scale: float, dist: str,
             mask: torch.Tensor | None = None) -> None:
    """x += scale * z (only where the flat `mask` is True), z the stream (seed, stream)."""
    masks = [None] * len(params) if mask is None else pieces(params, mask)
    for p, offset, m in zip(params, offsets(params), masks):
        ops.perturb_(p, seed, stream, scale, dist, offset, m)


def direction(n: int, seed: int, stream: int, dist: str, device,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """z, the stream (seed, stream) as a flat float64 vector of length n (0 outside `mask`)."""
    z = ops.sample(n, seed, stream, dist, dtype=torch.float64, device=device)
    return z if mask is None else z * mask.to(z.dtype)


def snapshot(params: Params, mask: torch.Tensor | None = None) -> Callable[[], None]:
    """Copies the parameters (only the elements under the flat `mask`, if given) and returns a
    function that writes them back bitwise."""
    params = list(params)
    if mask is None:
        saved = [p.detach().clone() for p in params]

        @torch.no_grad()
        def restore() -> None:
            for p, b in zip(params, saved):
                p.copy_(b)
    else:
        masks = pieces(params, mask)
        saved = [p.detach()[m].clone() for p, m in zip(params, masks)]

        @torch.no_grad()
        def restore() -> None:
            for p, m, b in zip(params, masks, saved):
                p.masked_scatter_(m, b)
    return restore


@contextlib.contextmanager
def restored_on_error(restore: Callable[[], None]) -> Iterator[None]:
    """Calls `restore` (from `snapshot`) if the block raises, then re-raises."""
    try:
        yield
    except BaseException:
        restore()
        raise
