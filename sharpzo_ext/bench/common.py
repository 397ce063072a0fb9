"""Shared machinery of the benchmark suites: timing, the result records, tables, targets."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import platform
from typing import Callable, Sequence

import torch

# torch.utils.benchmark imports torch.utils.cpp_extension, which logs a CUDA_HOME guess at import
# on machines without a CUDA runtime: noise in a benchmark table.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils.benchmark import Timer  # noqa: E402

import sharpzo_ext as sz  # noqa: E402
from sharpzo_ext.bench.allocations import bytes_allocated  # noqa: E402
from sharpzo_ext.machine import cpu_fields, cpu_model  # noqa: E402, F401 (cpu_model: for the suites)


MAX_MIN_RUN_TIME = 60.0  # seconds per measurement; suites take dozens of measurements


@dataclasses.dataclass
class BenchConfig:
    device: str = "cpu"
    quick: bool = False               # small sizes and short runs (demo, smoke tests)
    min_run_time: float | None = None  # seconds per measurement; None: 0.5, or 0.05 if quick

    def __post_init__(self):
        if self.min_run_time is not None and not 0 < self.min_run_time <= MAX_MIN_RUN_TIME:
            raise ValueError(f"min_run_time must be in (0, {MAX_MIN_RUN_TIME:g}] seconds, got "
                             f"{self.min_run_time}")

    @property
    def effective_min_run_time(self) -> float:
        """The seconds each measurement runs: min_run_time when given, whether quick or not."""
        if self.min_run_time is not None:
            return self.min_run_time
        return 0.05 if self.quick else 0.5


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
        return (f"{'met ' if self.met else 'MISS'}  {self.name}: {self.value:.2f}{self.unit} "
                f"(target {self.goal}{self.unit})")


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


def row_progress(suite: str, rows: int):
    """A progress bar on stderr that advances once per table row (`bar.update()`), for the
    suites that run ViT-B-16 for many minutes; the tables themselves go to stdout."""
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(total=rows, desc=suite, unit="row", leave=False)


def measure(fn: Callable[[], object], config: BenchConfig) -> dict:
    return {"median_ms": measure_ms(fn, config),
            "bytes_allocated": bytes_allocated(fn, config.device)}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# The /proc/cpuinfo flags that decide the kernels' speed, in the order they are reported.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "amx_tile", "asimd", "sve")


def cpu_isa() -> str:
    """The machine and the ISA features the kernels care about, e.g. "x86_64: avx2 fma avx512f
    ...", from /proc/cpuinfo's flags (x86) or Features (ARM)."""
    fields = cpu_fields()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    present = [flag for flag in ISA_FLAGS if flag in flags]
    return f"{platform.machine()}: {' '.join(present) or 'none of ' + ' '.join(ISA_FLAGS)}"


def machine_line(device: str = "cpu") -> str:
    """The machine a table was measured on, for its heading: the CPU's model, ISA and the
    kernels' clone, and the GPU's name on CUDA."""
    line = f"{cpu_model()} ({cpu_isa()}; kernels {sz.ops.cpu_kernel_isa()})"
    if device.startswith("cuda"):
        line = f"{torch.cuda.get_device_name(device)}, host {line}"
    return line


def environment() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
            "cpu_isa": cpu_isa(), "kernel_isa": sz.ops.cpu_kernel_isa(),
            "kernel_library": os.environ.get("SHARPZO_EXT_LIBRARY", "sharpzo_ext._C"),
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
