"""Bytes a callable allocates: the measure behind the benchmarks' "allocated" column and the
tests' zero-allocation checks."""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

import torch

__all__ = ["bytes_allocated", "largest_allocation"]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silences file descriptor 2 (the profiler's C++ side prints start/stop lines there)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def bytes_allocated(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Total bytes allocated while fn() runs (freed or not) on `device`.

    CUDA: the caching allocator's cumulative counter. CPU: torch.profiler's memory events, the
    sum of every allocation attributed to an operator (torch has no CPU allocation counter).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_stats(device).get("allocated_bytes.all.allocated", 0)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.memory_stats(device).get("allocated_bytes.all.allocated", 0) - before
    return sum(max(event.self_cpu_memory_usage, 0) for event in _cpu_memory_events(fn))


def largest_allocation(fn: Callable[[], object]) -> int:
    """The most bytes one operator allocated (net of what it freed) while fn() runs on the CPU:
    the size of the largest tensor fn() makes, from torch.profiler's memory events."""
    return max((event.self_cpu_memory_usage for event in _cpu_memory_events(fn)), default=0)


def _cpu_memory_events(fn: Callable[[], object]) -> list:
    """torch.profiler's events of fn(), with the CPU memory each operator allocated."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415 (slow import)

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return list(prof.events())
