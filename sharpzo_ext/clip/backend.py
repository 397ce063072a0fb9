"""Which backend runs the text tower, and what each can do: "torch" (eager; every precision,
shared prefixes by default) or "onnxruntime" (an ONNX export on the CPU, onnx_tower.py; fp32 or
int8, full prompts only)."""

from __future__ import annotations

import importlib.util

import torch

from sharpzo_ext.clip import precision as precision_lib

__all__ = ["BACKENDS", "ONNXRUNTIME_PRECISIONS", "check"]

BACKENDS = ("torch", "onnxruntime")
ONNXRUNTIME_PRECISIONS = ("fp32", "int8")


def check(backend: str, precision: str, device: torch.device, share_prefix: bool) -> None:
    """Raises ValueError unless `backend` can run the text tower at `precision` on `device`
    (with shared prefixes if `share_prefix`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        precision_lib.check(precision, device)
        return
    if precision not in ONNXRUNTIME_PRECISIONS:
        raise ValueError(f"the onnxruntime backend runs precision fp32 or int8, not {precision!r}")
    if device.type != "cpu":
        raise ValueError(f"the onnxruntime backend runs on the CPU only, not on {device}")
    if share_prefix:
        raise ValueError("the onnxruntime backend cannot share prefixes (its exported graph "
                         "runs whole prompts): use share_prefix=False or None")
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if not importlib.util.find_spec(m)]
    if missing:
        raise ValueError(f"the onnxruntime backend needs {', '.join(missing)}: "
                         "pip install 'sharpzo_ext[onnx]'")
