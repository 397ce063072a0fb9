"""Checks of a loaded optimizer state, one rule per kind of entry, so that ``load_state_dict``
refuses a bad state dict at once, naming the entry, instead of failing at a later ``step``.

Entries are named by their path in ``state_dict()["sharpzo"]``, e.g. "cma.mean".
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from sharpzo_ext import loaded
from sharpzo_ext.ops import checks

__all__ = ["InvalidState", "keys", "tensor", "count", "seed", "number", "losses", "one_of"]


class InvalidState(ValueError):
    """A state dict entry that this optimizer cannot continue from."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"invalid state dict: {name} {problem}")


def keys(record, name: str, expected: Iterable[str]) -> dict:
    """`record`, a dict with exactly the keys `expected`."""
    if not isinstance(record, dict):
        raise InvalidState(name, f"must be a dict, got {type(record).__name__}")
    expected = set(expected)
    missing, unknown = sorted(expected - set(record)), sorted(set(record) - expected)
    if missing:
        raise InvalidState(name, f"lacks {', '.join(map(repr, missing))}")
    if unknown:
        raise InvalidState(name, f"has unknown entries {', '.join(map(repr, unknown))}")
    return record


def tensor(value, name: str, shape: tuple[int, ...], dtype: torch.dtype | None) -> torch.Tensor:
    """`value`, a tensor of `shape` and `dtype` (None: any floating dtype) with finite values
    (Note [Loaded values are checked])."""
    try:
        return loaded.tensor(value, name, shape, "floating" if dtype is None else dtype)
    except loaded.BadValue as error:
        raise InvalidState(name, error.problem) from None


def count(value, name: str, least: int = 0) -> int:
    """`value`, an int >= least."""
    try:
        return checks.integer(value, name, least)
    except (TypeError, ValueError) as error:
        raise InvalidState(name, str(error).removeprefix(f"{name} ")) from None


def seed(value, name: str) -> int:
    """`value`, a seed of the perturbation stream: an int in [0, 2^63)."""
    try:
        return checks.stream_integer(value, name)
    except (TypeError, ValueError) as error:
        raise InvalidState(name, str(error).removeprefix(f"{name} ")) from None


def number(value, name: str, *, positive: bool = False) -> float:
    """`value`, a float (or int), > 0 and finite if `positive`, else any value but NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidState(name, f"must be a number, got {type(value).__name__}")
    if math.isnan(value) or (positive and not (math.isfinite(value) and value > 0)):
        raise InvalidState(name, f"must be {'finite and > 0' if positive else 'a number'}, "
                           f"got {value}")
    return value


def losses(value, name: str) -> list:
    """`value`, a list of losses (numbers, not NaN)."""
    if not isinstance(value, list):
        raise InvalidState(name, "must be a list of losses")
    for loss in value:
        number(loss, f"{name}[...]")
    return value


def one_of(value, name: str, choices: tuple) -> object:
    """`value`, one of `choices`."""
    if value not in choices:
        raise InvalidState(name, f"must be one of {choices}, got {value!r}")
    return value
