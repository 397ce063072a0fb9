"""Which compilation of the CPU kernels runs, how benchmarks record it, and the guard on the
kernels' machine code (scripts/check_kernel_code.py)."""

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import sharpzo_ext as sz
from sharpzo_ext.bench import common

ROOT = Path(__file__).resolve().parents[2]


def _cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    return set()


def _check_kernel_code():
    spec = importlib.util.spec_from_file_location("check_kernel_code",
                                                  ROOT / "scripts" / "check_kernel_code.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.ops
@pytest.mark.skipif(platform.machine() != "x86_64" or not os.path.exists("/proc/cpuinfo"),
                    reason="x86-64 with /proc/cpuinfo")
def test_cpu_kernel_isa_is_the_best_level_the_cpu_has():
    flags = _cpu_flags()  # the x86-64 psABI's levels, in /proc/cpuinfo's names
    v2 = {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"} <= flags
    v3 = v2 and {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"} <= flags
    v4 = v3 and {"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512cd"} <= flags
    expected = "x86-64-v4" if v4 else "x86-64-v3" if v3 else "x86-64"
    got = sz.ops.cpu_kernel_isa()
    if got == "x86-64-v3" and v4:  # a library built without AVX-512 clones (make bench-avx2)
        assert os.environ.get("SHARPZO_EXT_LIBRARY")
        return
    assert got == expected


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs /proc/cpuinfo")
def test_benchmark_environment_names_the_cpu_and_its_isa():
    env = common.environment()
    flags = _cpu_flags()
    assert env["kernel_isa"] == sz.ops.cpu_kernel_isa()
    machine, listed = env["cpu_isa"].split(": ", 1)
    assert machine == platform.machine()
    assert [f for f in listed.split() if f in common.ISA_FLAGS] == \
        [f for f in common.ISA_FLAGS if f in flags]
    if platform.machine() == "x86_64":
        assert ", family " in env["cpu"] and " model " in env["cpu"]
    line = common.machine_line()
    assert env["cpu"] in line and env["cpu_isa"] in line and env["kernel_isa"] in line


def test_kernel_code_guard_reports_vpmullq_and_vacuous_checks():
    guard = _check_kernel_code()
    good = {"gaussian_tile_cpu [clone .arch_x86_64_v4]": ["vpmuludq", "vpsrlq"],
            "rademacher_tile_cpu [clone .arch_x86_64_v4]": ["vpsrlvd", "imul"]}
    assert guard.problems(good) == []
    v4 = "gaussian_tile_cpu [clone .arch_x86_64_v4]"
    slow = {**good, v4: ["vpmullq", "vpmullq", "vpsrlq"]}
    assert guard.problems(slow) == [
        f"{v4}: 2 vpmullq", f"{v4}: no vpmuludq (Philox is not on the vector units)"]
    renamed = {"rademacher_tile_cpu": ["imul"]}
    assert guard.problems(renamed) == [
        "no function named like 'gaussian_tile': the check would be vacuous"]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 machine code")
def test_built_kernels_pass_the_guard():
    guard = _check_kernel_code()
    library = os.environ.get("SHARPZO_EXT_LIBRARY") or sz._C.__file__
    functions = guard.mnemonics_by_function(library)
    assert guard.problems(functions) == []
    assert any("x86_64_v3" in name for name in functions)  # clones were found at all


@pytest.mark.slow
def test_bench_json_and_headings_record_the_machine(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "sharpzo_ext", "bench", "--suite", "perturb",
                          "--quick", "--json", str(out)], capture_output=True, text=True,
                         timeout=600, check=True)
    env = json.loads(out.read_text())["environment"]
    assert env == {**env, "cpu": common.cpu_model(), "cpu_isa": common.cpu_isa(),
                   "kernel_isa": sz.ops.cpu_kernel_isa()}
    assert f"## perturb ({common.machine_line()}, " in run.stdout
