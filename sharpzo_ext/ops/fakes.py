"""Fake (meta) kernels of the sharpzo ops: output shapes for torch.compile and FakeTensor, and
the same argument checks as the ops' host code in csrc/ (same order, exception types and
wording), so that a call the real kernels refuse is refused here too.

Note [Fakes check what the kernels check]
The dispatcher sends a call to the Meta kernel as soon as one of its tensors is a meta tensor:
``sparse_zscore(cpu_g, k, score=meta_score)`` runs this fake, not the CPU kernel. A fake that
only returned empty outputs would then hand back uninitialized memory for a mismatched call,
so each fake repeats every check of its op's host code (csrc/checks.cpp and the op's .cpp),
the device check included. python_tests/ops/test_fuzz_ops.py runs random calls on the CPU and on
meta tensors and requires the same verdict. Aliasing (check_no_overlap) is a property of
memory, which meta tensors do not have: it is checked by the kernels only.
"""

from __future__ import annotations

import math

import torch

STREAM_INTEGER_NAMES = ("seed", "stream", "offset")
FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _floating(op: str, x: torch.Tensor, name: str) -> None:
    if x.dtype not in FLOATING:
        raise TypeError(f"{op}: {name} must be a float16, bfloat16, float32 or float64 tensor, "
                        f"got {x.dtype}")


def _like(op: str, x: torch.Tensor, x_name: str, other: torch.Tensor, other_name: str) -> None:
    if other.shape != x.shape:
        raise ValueError(f"{op}: {other_name} must have the shape of {x_name} {list(x.shape)}, "
                         f"got {list(other.shape)}")
    if other.device != x.device:
        raise ValueError(f"{op}: {other_name} must be on {x_name}'s device {x.device}, got "
                         f"{other.device}")


def _nonnegative(op: str, value: float, name: str) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{op}: {name} must be finite and >= 0, got {value}")


def _stream_job(op: str, seed: int, stream: int, dist: str, offset: int) -> None:
    for name, value in zip(STREAM_INTEGER_NAMES, (seed, stream, offset)):
        if value < 0:
            raise ValueError(f"{op}: {name} must be in [0, 2^63), got {value}")
    if dist not in ("gaussian", "rademacher"):
        raise ValueError(f'{op}: dist must be "gaussian" or "rademacher", got "{dist}"')


@torch.library.register_fake("sharpzo::perturb_")
def _perturb_fake(x, seed, stream, scale, dist, offset, mask):
    op = "perturb_"
    _stream_job(op, seed, stream, dist, offset)
    _floating(op, x, "x")
    if not math.isfinite(scale):
        raise ValueError(f"{op}: scale must be finite, got {scale}")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"{op}: mask must be a bool tensor, got {mask.dtype}")
        _like(op, x, "x", mask, "mask")


@torch.library.register_fake("sharpzo::sample_")
def _sample_fake(out, seed, stream, dist, offset):
    _stream_job("sample_", seed, stream, dist, offset)
    _floating("sample_", out, "out")


def _sparse_zscore_checks(op: str, g, k, score, eps) -> None:
    _floating(op, g, "g")
    if g.numel() == 0:
        raise ValueError(f"{op}: g must have at least one element")
    if not 1 <= k <= g.numel():
        raise ValueError(f"{op}: k must be in [1, {g.numel()}] (the number of elements of g), "
                         f"got {k}")
    _nonnegative(op, eps, "eps")
    if score is not None:
        _floating(op, score, "score")
        _like(op, g, "g", score, "score")


@torch.library.register_fake("sharpzo::sparse_zscore")
def _sparse_zscore_fake(g, k, score, eps, check_finite):
    _sparse_zscore_checks("sparse_zscore", g, k, score, eps)
    return torch.empty_like(g, memory_format=torch.contiguous_format), torch.empty(
        g.shape, dtype=torch.bool, device=g.device)


@torch.library.register_fake("sharpzo::sparse_zscore_")
def _sparse_zscore_inplace_fake(g, k, score, eps, check_finite):
    _sparse_zscore_checks("sparse_zscore_", g, k, score, eps)
    return torch.empty(g.shape, dtype=torch.bool, device=g.device)


@torch.library.register_fake("sharpzo::mask_score")
def _mask_score_fake(w, grad, eps, check_finite):
    op = "mask_score"
    _floating(op, w, "w")
    _floating(op, grad, "grad")
    _like(op, w, "w", grad, "grad")
    if w.numel() == 0:
        raise ValueError(f"{op}: w must have at least one element")
    _nonnegative(op, eps, "eps")
    wide = torch.float64 in (w.dtype, grad.dtype)
    return torch.empty(w.shape, dtype=torch.float64 if wide else torch.float32, device=w.device)


def _companion(C, t, name: str, shape: list) -> None:
    op = "cma_cov_update_"
    if list(t.shape) != shape:
        raise ValueError(f"{op}: {name} must have shape {shape}, got {list(t.shape)}")
    if t.dtype != C.dtype:
        raise TypeError(f"{op}: {name} must have C's dtype {C.dtype}, got {t.dtype}")
    if t.device != C.device:
        raise ValueError(f"{op}: {name} must be on C's device {C.device}, got {t.device}")


@torch.library.register_fake("sharpzo::cma_cov_update_")
def _cma_cov_update_fake(C, pc, Y, weights, c1, cmu, decay):
    op = "cma_cov_update_"
    if C.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: C must be a float32 or float64 tensor, got {C.dtype}")
    if not (C.dim() == 2 and C.shape[0] == C.shape[1] and C.shape[0] > 0):
        raise ValueError(f"{op}: C must be a non-empty square matrix, got shape {list(C.shape)}")
    d = C.shape[0]
    _companion(C, pc, "pc", [d])
    if not (Y.dim() == 2 and Y.shape[1] == d):
        raise ValueError(f"{op}: Y must have shape (lambda, {d}), got {list(Y.shape)}")
    _companion(C, Y, "Y", [Y.shape[0], d])
    _companion(C, weights, "weights", [Y.shape[0]])
    for name, value in (("c1", c1), ("cmu", cmu), ("decay", decay)):
        if not math.isfinite(value):
            raise ValueError(f"{op}: {name} must be finite, got {value}")


@torch.library.register_fake("sharpzo::quantize_rows")
def _quantize_rows_fake(x, qmax=127):
    if x.dtype != torch.float32:
        raise TypeError(f"quantize_rows: x must be a float32 tensor, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"quantize_rows: x must be 2-D (rows, columns), got shape {list(x.shape)}")
    if not 1 <= qmax <= 127:
        raise ValueError(f"quantize_rows: qmax must be in [1, 127], got {qmax}")
    return x.new_empty(x.shape, dtype=torch.uint8), x.new_empty((x.shape[0], 1))
