"""Argument checks shared by the ops and the optimizers: one rule per kind of argument, and
messages that name the argument.

Integers are Python ints, numpy integers or 0-dim integer tensors (anything with
``__index__``), never bools or fractions. Integral floats (``3.0``), which the optimizers of
sharpzo_ext 0.1.0 accepted, are accepted with a FutureWarning and will be a TypeError, as in
``range(3.0)``. Wrong types raise TypeError, values out of range ValueError.
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import Sequence

__all__ = ["integer", "stream_integer", "real", "choice", "STREAM_INT_LIMIT"]

STREAM_INT_LIMIT = 1 << 63  # seeds, streams and offsets are int64 on the C++ side


def _bounds(least: int | None, most: int | None) -> str:
    if least is not None and most is not None:
        return f" in [{least}, {most}]"
    if least is not None:
        return f" >= {least}"
    return f" <= {most}" if most is not None else ""


def integer(value, name: str, least: int | None = None, most: int | None = None) -> int:
    """`value` as an int in [least, most] (either bound optional)."""
    what = f"an int{_bounds(least, most)}"
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got a bool")
    if isinstance(value, float) and value.is_integer():
        warnings.warn(f"{name} should be an int, got {value!r}; floats will be refused",
                      FutureWarning, stacklevel=3)
        value = int(value)
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}") from None
    if (least is not None and value < least) or (most is not None and value > most):
        raise ValueError(f"{name} must be {what}, got {value}")
    return value


def stream_integer(value, name: str) -> int:
    """A seed, stream or offset of the perturbation stream: an int in [0, 2^63)."""
    value = integer(value, name)
    if not 0 <= value < STREAM_INT_LIMIT:
        raise ValueError(f"{name} must be in [0, 2^63), got {value}")
    return value


def real(value, name: str, *, positive: bool = False, nonnegative: bool = False,
         below: float | None = None) -> float:
    """`value` as a finite float (> 0 if positive, >= 0 if nonnegative, < below if given)."""
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}") from None
    rule = " > 0" if positive else " >= 0" if nonnegative else ""
    rule += f" and < {below}" if below is not None else ""
    if (not math.isfinite(value) or (positive and value <= 0) or (nonnegative and value < 0)
            or (below is not None and value >= below)):
        raise ValueError(f"{name} must be finite{rule}, got {value}")
    return value


def choice(value, name: str, choices: Sequence[str]) -> str:
    """`value`, one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value
