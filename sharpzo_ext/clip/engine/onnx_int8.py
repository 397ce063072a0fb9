"""The int8 variant of an exported text tower: onnxruntime's static quantization, calibrated on
the task's prompts (Note [Static int8 for ONNX Runtime]).

Note [Static int8 for ONNX Runtime]
A candidate's loss must not depend on the candidates and classes beside it in a batch: CMA-ES
ranks candidates by their losses and two-point estimates subtract two of them. Dynamic
quantization picks each activation tensor's scale from the batch at hand, so one far-out
candidate would change its neighbours' rounding. Static quantization fixes every scale once,
from calibration data, here the task's own prompts with contexts around the initial one; every
row then rounds the same whatever shares its batch (tested). Only the products with weights are
quantized (the Gemm and MatMul nodes with a constant operand): layer norms, attention and GELU
stay float, as in the torch int8 path. Weights are int8 per output channel with 7-bit range
(reduce_range): without VNNI, x86 u8 x s8 kernels sum pairs of products in 16 bits, which
7-bit weights cannot overflow, so a file quantized on one CPU is exact on every other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from sharpzo_ext.clip.engine import onnx_export

__all__ = ["Calibration", "calibration", "quantize"]

CALIBRATION_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # context shifts, in std(ctx0) units
# what `quantize` does, in the cache key: a change of recipe is a new file
RECIPE = f"qdq u8 minmax activations, s8 per-channel 7-bit weights, scales {CALIBRATION_SCALES}"


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A task's calibration data: `feeds()` yields the inputs, `key` names them in file names."""
    key: str
    feeds: Callable[[], Iterable[dict[str, np.ndarray]]]


def calibration(tokens: torch.Tensor, ctx0: torch.Tensor, seed: int,
                max_batch_tokens: int) -> Calibration:
    """A task's calibration data: every prompt (`tokens`, cut as the task runs them) with the
    contexts ctx0 + s * std(ctx0) * N(0, I), s in CALIBRATION_SCALES, which cover the initial
    context and the steps the optimizers take around it; in batches of max_batch_tokens."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(CALIBRATION_SCALES), *ctx0.shape, generator=g)
    scales = torch.tensor(CALIBRATION_SCALES).view(-1, 1, 1) * float(ctx0.std())
    contexts = (ctx0.cpu() + scales * noise).numpy()
    tokens = tokens.cpu().numpy()
    key = hashlib.sha256(RECIPE.encode() + tokens.tobytes() + contexts.tobytes()).hexdigest()[:16]

    def feeds():
        C, L = tokens.shape
        per = max(1, max_batch_tokens // L)
        for context in contexts:
            for start in range(0, C, per):
                rows = tokens[start:start + per]
                yield {"tokens": rows, "context": np.repeat(context[None], len(rows), axis=0)}

    return Calibration(key, feeds)


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:
        raise NotImplementedError("calibration reads its data once")


def _weight_products(model) -> list[str]:
    """The Gemm and MatMul nodes with a constant (weight) operand."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type in ("Gemm", "MatMul") and any(i in constants for i in n.input[1:])]


@contextlib.contextmanager
def _quiet_root_logger():
    """Keeps onnxruntime.quantization's advice (logged on the root logger, which would also
    install a handler there for good) out of the user's output."""
    root = logging.getLogger()
    level, quiet = root.level, logging.NullHandler()
    root.addHandler(quiet)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(quiet)


def quantize(source: Path, path: Path, feeds: Iterable[dict[str, np.ndarray]]) -> None:
    """Writes the int8 variant of the fp32 export `source` to `path` (atomically), calibrated
    on `feeds`: inputs {"tokens", "context"} of the task's prompts."""
    import tempfile  # noqa: PLC0415

    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat,  # noqa: PLC0415
                                          QuantType, quantize_static)

    model = onnx.load(str(source))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch, _quiet_root_logger():
        out = Path(scratch) / "int8.onnx"
        quantize_static(model, out, _Feeds(feeds), quant_format=QuantFormat.QDQ,
                        nodes_to_quantize=_weight_products(model), per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False})
        onnx_export.save_variant(onnx.load(str(out)), model, path, "int8")
