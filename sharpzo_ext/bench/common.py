"""Shared machinery of the benchmark suites: timing, the result records, tables, targets."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import platform
from typing import Callable, Sequence

import torch

# torch.utils.benchmark imports torch.utils.cpp_extension, which logs a CUDA_HOME guess at import
# on machines without a CUDA runtime: noise in a benchmark table.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils.benchmark import Timer  # noqa: E402

from sharpzo_ext.bench.allocations import bytes_allocated


@dataclasses.dataclass
class BenchConfig:
    device: str = "cpu"
    quick: bool = False          # small sizes and short runs (demo, smoke tests)
    min_run_time: float = 0.5    # seconds per measurement (torch.utils.benchmark)

    @property
    def effective_min_run_time(self) -> float:
        return 0.05 if self.quick else self.min_run_time


@dataclasses.dataclass
class Target:
    """One performance target (docs/design.md, "Performance targets"), checked on a measured
    ratio."""
    name: str
    value: float
    goal: str        # e.g. ">= 20" or "<= 3"
    unit: str = "x"

    @property
    def met(self) -> bool:
        op, bound = self.goal.split()
        return self.value >= float(bound) if op == ">=" else self.value <= float(bound)

    def line(self) -> str:
        return f"{'met ' if self.met else 'MISS'}  {self.name}: {self.value:.2f}{self.unit} (target {self.goal}{self.unit})"


@dataclasses.dataclass
class Suite:
    name: str
    table: str                   # markdown
    records: list[dict]
    targets: list[Target]


def measure_ms(fn: Callable[[], object], config: BenchConfig,
               warm_up: Callable[[], object] | None = None) -> float:
    """Median milliseconds per call of fn, with the threads torch is set to use, after a call
    of warm_up (default: fn; a smaller call where fn takes seconds). Slow calls are timed
    once."""
    (warm_up or fn)()  # lazy initialisation, page faults of fresh buffers
    if config.device.startswith("cuda"):
        torch.cuda.synchronize()
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=config.effective_min_run_time).median * 1e3


def measure(fn: Callable[[], object], config: BenchConfig) -> dict:
    return {"median_ms": measure_ms(fn, config), "bytes_allocated": bytes_allocated(fn, config.device)}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine()}


def run_suites(names: Sequence[str], config: BenchConfig,
               progress: Callable[[str], None] = print) -> list[Suite]:
    suites = []
    for name in names:
        module = importlib.import_module(f"sharpzo_ext.bench.{name.replace('-', '_')}")
        progress(f"running benchmark suite {name!r} on {config.device}"
                 f"{' (quick)' if config.quick else ''} ...")
        suites.append(module.run(config))
    return suites
