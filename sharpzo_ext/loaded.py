"""The one rule for values read from files: prompt files, run states, optimizer state dicts,
feature caches and the example's checkpoints. Each loader names what it expects of a value
(type, dtype, shape, range) and calls these checks before the value is used.

Note [Loaded values are checked]
A file can be damaged, truncated, written by another version or edited by hand, and a value
that is the right shape but NaN, infinite or absurd does not fail where it is read: it scores
chance accuracy, or ends in a traceback many calls later. So every value a loader reads passes
one check first: a tensor of the expected kind (floating, integer or bool), shape and, for
floating tensors, finite values within the range given; a number finite and within its range.
A value that fails raises BadValue naming it; the loader turns that into its own one-line
refusal (a prompt file or run state that cannot be used) or recomputes (a feature cache).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["BadValue", "tensor", "number"]

KINDS = ("floating", "integer", "bool")


class BadValue(ValueError):
    """A loaded value that is not what its file should hold: `name` and `problem`."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name} {problem}")
        self.name, self.problem = name, problem


def _kind(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    if t.is_floating_point():
        return "floating"
    return "integer" if not t.is_complex() else "complex"


def tensor(value, name: str, shape: Sequence[int | None] | None = None,
           dtype: torch.dtype | str = "floating", low: float | None = None,
           high: float | None = None) -> torch.Tensor:
    """`value`, a dense tensor of `dtype` (a torch dtype, or one of KINDS) and `shape` (None:
    any; a None entry: any size there), whose values, if floating, are all finite, and lie in
    [low, high] where those are given (integer tensors too)."""
    if not isinstance(value, torch.Tensor):
        raise BadValue(name, f"must be a tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise BadValue(name, f"must be a dense tensor, got {value.layout}")
    wanted = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    right_dtype = _kind(value) == dtype if isinstance(dtype, str) else value.dtype == dtype
    right_shape = shape is None or (len(shape) == value.dim() and all(
        n is None or n == m for n, m in zip(shape, value.shape)))
    if not (right_dtype and right_shape):
        expected = "" if shape is None else " of shape " + str(
            tuple("any" if n is None else n for n in shape)).replace("'", "")
        raise BadValue(name, f"must be a {wanted} tensor{expected}, got a "
                             f"{str(value.dtype).removeprefix('torch.')} tensor of shape "
                             f"{tuple(value.shape)}")
    if value.numel() == 0 or value.dtype == torch.bool:
        return value
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise BadValue(name, "holds values that are not finite (NaN or infinite)")
    if low is not None and float(value.min()) < low:
        raise BadValue(name, f"holds {float(value.min()):g}, below its least value {low:g}")
    if high is not None and float(value.max()) > high:
        raise BadValue(name, f"holds {float(value.max()):g}, above its largest value {high:g}")
    return value


def number(value, name: str, low: float | None = None, high: float | None = None) -> float:
    """`value`, an int or float (not a bool), finite, within [low, high] where given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadValue(name, f"must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise BadValue(name, f"must be finite, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        least = "-inf" if low is None else f"{low:g}"
        most = "inf" if high is None else f"{high:g}"
        raise BadValue(name, f"must be in [{least}, {most}], got {value:g}")
    return value
