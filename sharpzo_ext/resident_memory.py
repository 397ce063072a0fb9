"""This process's resident memory and its high-water mark (Linux /proc), for the peak memory
that `compare` and the benchmarks report."""

from __future__ import annotations

from pathlib import Path

__all__ = ["reset_peak", "status_mb"]


def reset_peak() -> bool:
    """Resets the kernel's high-water mark of this process's resident memory (Linux >= 4.0);
    False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def status_mb(field: str) -> float | None:
    """VmHWM (peak resident memory) or VmRSS (resident memory now) of this process, in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
