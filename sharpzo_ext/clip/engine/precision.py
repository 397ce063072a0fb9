"""The arithmetic of the text tower's linear layers: float32, bfloat16 or int8.

Only the linear layers (attention projections and the MLP) change with the precision; layer
norms, attention scores, GELU and the residual stream stay in float32, so a precision changes
the cost of the matmuls, which are nearly all of the work, and little else.

Note [Row-wise int8]
A forward-only optimizer compares losses of candidates that share a batch: CMA-ES ranks them and
a two-point estimate subtracts them. If a candidate's loss depended on its batch neighbours, as it
does with one activation scale per batch (torch.ao's dynamic quantization), the neighbours would
move the ranking and the differences. So every activation row (one token of one prompt of one
candidate) is quantized with its own symmetric scale s = max|x| / 127, the weights with one scale
per output channel, and y = s * (q_x . q_w) * s_w + b: the integer products are exact, and a
row's result depends only on that row. The integer matmul is oneDNN's u8 x s8 kernel as torch
ships it for torch.ao's x86 quantization (VNNI where present, AMX on the Xeons that have it); the
rows are offset by 128 into u8, and the kernel subtracts the offset exactly with its zero-point.
The rows are quantized by this package's op quantize_rows in one pass: the same arithmetic in
eager torch took six passes over the activations, as long as the int8 matmul itself.

Note [int8 without VNNI]
Without VNNI (or AMX), as on AVX2 CPUs (AMD before Zen 4, Intel client cores before Ice Lake)
and AVX-512 Xeons before Cascade Lake, oneDNN multiplies u8 by s8 in pairs summed into 16 bits
(vpmaddubsw), which saturates when both operands use their full range: 2 * 255 * 127 > 2^15 - 1.
torch.ao narrows the activations to 7 bits there (reduce_range). This package narrows the
weights instead, to [-63, 63] (quantize_rows with qmax 63): 2 * 255 * 63 < 2^15, so the integer
products are exact again, the activations keep their row scales and 8 bits, and the weights,
quantized once, carry twice the rounding error. Which range a process uses is decided once, by
known-answer products on the kernel oneDNN actually picks (full-range rows against channels of
+qmax and -qmax, exact in float32): 127 where that is exact, else 63, else int8 is refused. So
the choice follows the CPU, ONEDNN_MAX_CPU_ISA and CPUs that are not x86 alike, and int8 losses
differ between a CPU with VNNI and one without, as any change of arithmetic makes them differ.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from sharpzo_ext import ops
from sharpzo_ext.clip.engine.rows import by_rows

__all__ = ["PRECISIONS", "check", "runs", "linear", "int8_weight_max"]

PRECISIONS = ("fp32", "bf16", "int8")


def check(precision: str, device: torch.device) -> None:
    """Raises ValueError unless `precision` can run the text tower on `device` in this torch."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "int8":
        return
    if device.type != "cpu":
        raise ValueError(f"precision 'int8' runs on the CPU only, not on {device}")
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.onednn,
                                                               "qlinear_pointwise"):
        raise ValueError("precision 'int8' needs torch's oneDNN int8 kernels "
                         "(torch.ops.onednn.qlinear_pointwise), which this torch build lacks")
    if not int8_weight_max():
        raise ValueError("precision 'int8' needs oneDNN's int8 matmul to be exact, and on this "
                         "CPU it is not, even with 7-bit weights (Note [int8 without VNNI]); "
                         "use fp32")


def runs(precision: str, device: torch.device | str) -> bool:
    """Whether `check` accepts `precision` on `device`."""
    try:
        check(precision, torch.device(device))
    except ValueError:
        return False
    return True


@functools.cache
def int8_weight_max() -> int:
    """The weights' int8 range [-qmax, qmax] this CPU's int8 matmul is exact with (Note [int8
    without VNNI]): 127 with VNNI or AMX, 63 with 16-bit pair sums, 0 where neither is exact."""
    return next((qmax for qmax in (127, 63) if _exact_int8_matmul(qmax)), 0)


def _exact_int8_matmul(qmax: int) -> bool:
    """Whether oneDNN's u8 x s8 matmul gives the exact products of 64 rows of u8 255 (int8 127 at
    zero point 128) and 256 channels of +qmax and -qmax over 512 inputs: +-127 * qmax * 512,
    exact in float32."""
    x = torch.full((64, 512), 255, dtype=torch.uint8)
    sign = torch.tensor([1, -1]).repeat(128)
    packed = torch.ops.onednn.qlinear_prepack((sign[:, None] * qmax).expand(256, 512)
                                              .to(torch.int8).contiguous(), None)
    y = torch.ops.onednn.qlinear_pointwise(x, 1.0, 128, packed, torch.ones(256),
                                           torch.zeros(256, dtype=torch.int64), None, 1.0, 0,
                                           torch.float32, "none", [], "")
    return bool((y == (sign * 127 * qmax * 512).float()).all())


def linear(weight: torch.Tensor, bias: torch.Tensor | None, precision: str):
    """y = x W^T + b for float32 x (..., in) at `precision`, as a callable returning float32."""
    if precision == "int8":
        return _Int8Linear(weight, bias)
    if precision == "bf16":
        return _Bf16Linear(weight, bias)
    return _Fp32Linear(weight, bias)


class _Fp32Linear:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # Note [Products by row]
        return by_rows(lambda rows: F.linear(rows, self.weight, self.bias), x)


class _Bf16Linear:
    """bfloat16 operands, products and bias rounded to bfloat16 (what autocast does, with the
    weights cast once), returned as float32 for the float32 residual stream."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight = weight.detach().to(torch.bfloat16)
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # Note [Products by row]
        return by_rows(lambda rows: F.linear(rows.to(torch.bfloat16), self.weight,
                                             self.bias).float(), x)


class _Int8Linear:
    """Row-wise int8 activations, per-channel int8 weights (Note [Row-wise int8]), 7-bit on CPUs
    without VNNI (Note [int8 without VNNI])."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.out_features, self.in_features = weight.shape
        # a weight row is an output channel: the same row-wise quantization as the activations
        q, scale = ops.quantize_rows(weight.detach().float(), int8_weight_max())
        self.weight_scale = scale.flatten()
        self.packed = torch.ops.onednn.qlinear_prepack((q.short() - 128).to(torch.int8), None)
        self.zero_points = torch.zeros(self.out_features, dtype=torch.int64)
        self.bias = None if bias is None else bias.detach().float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        q, scale = ops.quantize_rows(x.reshape(-1, self.in_features))
        y = torch.ops.onednn.qlinear_pointwise(q, 1.0, 128, self.packed, self.weight_scale,
                                               self.zero_points, None, 1.0, 0, torch.float32,
                                               "none", [], "")
        y = y.mul_(scale) if self.bias is None else torch.addcmul(self.bias, y, scale, out=y)
        return y.view(*x.shape[:-1], self.out_features)
