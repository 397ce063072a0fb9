"""Typed Python wrappers of the sharpzo ops, next to their fake (meta) registrations.

Schemas live in csrc/ops.cpp, kernels in csrc/cpu and csrc/cuda, oracles in reference.py.
"""

from __future__ import annotations

from typing import Sequence

import torch

from sharpzo_ext.checks import integer, stream_integer

__all__ = ["perturb_", "sample", "sparse_zscore", "sparse_zscore_", "mask_score",
           "cma_cov_update_", "DISTRIBUTIONS"]

DISTRIBUTIONS = ("gaussian", "rademacher")


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
        stream_integer(seed, "seed"),
        stream_integer(stream, "stream"),
        float(scale),
        dist,
        stream_integer(offset, "offset"),
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
        stream_integer(seed, "seed"),
        stream_integer(stream, "stream"),
        dist,
        stream_integer(offset, "offset"),
    )
    return out


def sparse_zscore(
    g: torch.Tensor,
    k: int,
    score: torch.Tensor | None = None,
    eps: float = 1e-8,
    *,
    check_finite: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-scores of g kept on its k most important entries: ``(values, mask)``.

    ``mean`` and the population ``std`` are taken over all of g (in float64, in a fixed order
    that makes them identical on every device and thread count). ``values = (g - mean) / (std +
    eps)`` on the k entries with the largest ``score`` (default: ``|values|``) and 0 elsewhere;
    ``mask`` marks those entries. Ties in the score go to the lower index (row-major), so the mask
    is deterministic and the same on CPU and CUDA. A constant g gives zeros, never NaN.

    Non-finite input: with ``check_finite`` (default) a ValueError naming g or score (free on
    the CPU, where the statistics' pass detects it; on CUDA one synchronization for g and one
    more for a given score); without it values are all NaN and the mask all False when g holds
    a NaN or an infinity, and NaN scores rank below every number.
    """
    return torch.ops.sharpzo.sparse_zscore.default(g, integer(k, "k"), score, float(eps),
                                                   bool(check_finite))


def sparse_zscore_(
    g: torch.Tensor,
    k: int,
    score: torch.Tensor | None = None,
    eps: float = 1e-8,
    *,
    check_finite: bool = True,
) -> torch.Tensor:
    """``sparse_zscore`` writing the values into g; returns the mask. g is untouched when the
    finiteness check fails."""
    return torch.ops.sharpzo.sparse_zscore_.default(g, integer(k, "k"), score, float(eps),
                                                    bool(check_finite))


def mask_score(
    w: torch.Tensor,
    grad: torch.Tensor,
    eps: float = 1e-8,
    *,
    check_finite: bool = True,
) -> torch.Tensor:
    """``w**2 * (|grad| - mean|grad|) / (std|grad| + eps)``, fused: the score by which SparseZO
    picks the coordinates it perturbs (large weights with an informative gradient estimate).

    Statistics over all of ``|grad|`` as in ``sparse_zscore``. float32 result (float64 if w or
    grad is float64). Non-finite input: ValueError with ``check_finite`` (on CUDA, one
    synchronization each for grad and w), else NaN everywhere.
    """
    return torch.ops.sharpzo.mask_score.default(w, grad, float(eps), bool(check_finite))


def cma_cov_update_(
    C: torch.Tensor,
    pc: torch.Tensor,
    Y: torch.Tensor,
    weights: torch.Tensor,
    c1: float,
    cmu: float,
    decay: float,
) -> torch.Tensor:
    """In place, the CMA-ES covariance update
    ``C = decay * C + c1 * pc pc^T + cmu * sum_i weights[i] * Y[i] Y[i]^T``; returns C.

    One pass over C: reads its upper triangle and writes an exactly symmetric result (C is
    assumed symmetric). C (d, d), pc (d,), Y (lambda, d) and weights (lambda,) share a dtype
    (float32 or float64) and a device; weights may be negative (active CMA-ES).
    """
    torch.ops.sharpzo.cma_cov_update_.default(C, pc, Y, weights, float(c1), float(cmu),
                                              float(decay))
    return C


@torch.library.register_fake("sharpzo::perturb_")
def _perturb_fake(x, seed, stream, scale, dist, offset, mask):
    torch._check(mask is None or mask.shape == x.shape, lambda: "perturb_: mask must have x's shape")


@torch.library.register_fake("sharpzo::sample_")
def _sample_fake(out, seed, stream, dist, offset):
    return None


def _check_k(g: torch.Tensor, k: int) -> None:
    torch._check(1 <= k <= g.numel(), lambda: f"sparse_zscore: k must be in [1, {g.numel()}]")


@torch.library.register_fake("sharpzo::sparse_zscore")
def _sparse_zscore_fake(g, k, score, eps, check_finite):
    _check_k(g, k)
    return torch.empty_like(g, memory_format=torch.contiguous_format), torch.empty(
        g.shape, dtype=torch.bool, device=g.device)


@torch.library.register_fake("sharpzo::sparse_zscore_")
def _sparse_zscore_inplace_fake(g, k, score, eps, check_finite):
    _check_k(g, k)
    return torch.empty(g.shape, dtype=torch.bool, device=g.device)


@torch.library.register_fake("sharpzo::mask_score")
def _mask_score_fake(w, grad, eps, check_finite):
    wide = torch.float64 in (w.dtype, grad.dtype)
    return torch.empty(w.shape, dtype=torch.float64 if wide else torch.float32, device=w.device)


@torch.library.register_fake("sharpzo::cma_cov_update_")
def _cma_cov_update_fake(C, pc, Y, weights, c1, cmu, decay):
    return None
