"""The sharpzo ops: their typed Python wrappers (here), with, by job,

    fakes.py       fake (meta) kernels, with the kernels' argument checks
    reference.py   plain numpy/PyTorch oracles with the same contracts (sharpzo_ext.reference)
    checks.py      the argument checks shared by the wrappers and the optimizers

Schemas live in csrc/ops.cpp, kernels in csrc/cpu and csrc/cuda.
"""

from __future__ import annotations

from typing import Sequence

import torch

from sharpzo_ext.ops import fakes  # noqa: F401 (registers the fake kernels)
from sharpzo_ext.ops.checks import STREAM_INT_LIMIT, integer, real, stream_integer

__all__ = ["perturb_", "sample", "sparse_zscore", "sparse_zscore_", "mask_score",
           "cma_cov_update_", "quantize_rows", "cpu_kernel_isa", "DISTRIBUTIONS"]

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
        real(scale, "scale"),
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


def _k(k) -> int:
    """k as the int64 the schema takes (its range, [1, g.numel()], is checked by the op)."""
    return integer(k, "k", most=STREAM_INT_LIMIT - 1)


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
    a NaN or an infinity, and NaN scores rank below every number. Finite values so large that
    their standard deviation overflows float64 (beyond about 1e154) are treated alike, and the
    error says so. Tensors share one device; the in-place variant refuses a score that shares
    memory with g.
    """
    return torch.ops.sharpzo.sparse_zscore.default(g, _k(k), score, real(eps, "eps"),
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
    return torch.ops.sharpzo.sparse_zscore_.default(g, _k(k), score, real(eps, "eps"),
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
    return torch.ops.sharpzo.mask_score.default(w, grad, real(eps, "eps"), bool(check_finite))


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
    (float32 or float64) and a device; weights may be negative (active CMA-ES). pc, Y and
    weights must not share memory with C (as torch.addr_ refuses).
    """
    torch.ops.sharpzo.cma_cov_update_.default(C, pc, Y, weights, real(c1, "c1"), real(cmu, "cmu"),
                                              real(decay, "decay"))
    return C


def quantize_rows(x: torch.Tensor, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise symmetric int8 quantization of a 2-D float32 ``x``: ``(q, scale)`` with
    ``scale = max|x| / qmax`` per row, shape (rows, 1), and ``q = round_half_even(x / scale) + 128``
    as uint8, so that ``x ~= (q - 128) * scale``: the u8 form (zero point 128) that oneDNN's
    int8 matmul takes, with values in [-qmax, qmax]. ``qmax`` is an int in [1, 127]: 127 for
    full int8, 63 for 7 bits. A row of zeros (or of values below qmax times the smallest
    subnormal, where max|x| / qmax would be 0) has scale 1; a row with a non-finite entry has
    scale NaN and q 128. One pass over x; the same bits on CPU and CUDA.
    """
    return torch.ops.sharpzo.quantize_rows.default(x, integer(qmax, "qmax"))


def cpu_kernel_isa() -> str:
    """Which compilation of the CPU kernels runs on this machine: ``"x86-64-v4"`` (AVX-512),
    ``"x86-64-v3"`` (AVX2 and FMA), ``"x86-64"`` (baseline), ``"aarch64"`` or ``"portable"``.
    Every one computes the same bits; they differ in speed. A library built with
    SHARPZO_CPU_NO_AVX512 (``make bench-avx2``) says ``"x86-64-v3"`` on an AVX-512 machine.
    """
    return torch.ops.sharpzo.cpu_kernel_isa.default()
