"""bench --suite memory: the measure against allocations of known size, and the quick suite's
rows, ratios and documented buffers."""

import subprocess
import sys

import pytest

from sharpzo_ext.bench import memory
from sharpzo_ext.bench.common import BenchConfig
from sharpzo_ext.optim import blockwise


MEASURE = """
import torch
from sharpzo_ext.bench import memory

def allocate():
    x = torch.ones(25 * 2**20 // 4 * 4)  # 100 MiB, written (resident)
    del x

print(memory._peak_mb("cpu", allocate), memory._peak_mb("cpu", lambda: torch.ones(16)))
"""


def test_the_measure_sees_an_allocation_of_known_size():
    # in a fresh process, as the suite measures each row: in the test process, what earlier
    # tests left to the allocator and the garbage collector made the measure flaky
    result = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True,
                            check=True)
    big, small = map(float, result.stdout.split())
    assert big == pytest.approx(100, abs=8)
    assert small < 8


def test_documented_buffers_follow_the_optimizers_memory_notes():
    measured = {"params": 1000, "param_bytes": 4000, "largest_param": 600}
    assert memory._buffers_mb("ZOSGD step", measured) * 2**20 == 4000
    assert memory._buffers_mb("ZOSGD step, exception_safe off", measured) == 0
    between = memory._buffers_mb("SparseZO step, between refreshes", measured) * 2**20
    assert between == pytest.approx(1000 + 4 * 600 + 400)
    assert memory._buffers_mb("SparseZO step, with its mask refresh",
                              measured) * 2**20 == pytest.approx(
        between + 4000 + blockwise.BUFFER_BYTES)  # the copy of every parameter; the blocks
    assert memory._buffers_mb("SparseZO step, with its mask refresh, exception_safe off",
                              measured) * 2**20 == pytest.approx(1000 + 4 * 600
                                                                 + blockwise.BUFFER_BYTES)
    assert memory._buffers_mb("Adam step (backprop)", measured) == 0


@pytest.mark.slow
def test_the_quick_suite_measures_every_row_in_its_own_process():
    suite = memory.run(BenchConfig(quick=True))
    rows = [(r["model"], r["row"], r["dtype"]) for r in suite.records]
    assert rows == ([("CLIP", row, "fp32") for row in memory.CLIP_ROWS]
                    + [("LM", row, d) for d in ("float32", "bfloat16") for row in memory.LM_ROWS])
    for r in suite.records:
        assert r["mb"] >= 0 and (r["row"] != "inference" or r["ratio_to_inference"] == 1)
    lm = [r for r in suite.records if r["model"] == "LM"]
    assert len({r["params"] for r in lm}) == 1
    assert {r["param_bytes"] for r in lm} == {4 * lm[0]["params"], 2 * lm[0]["params"]}
    adam = {r["dtype"]: r["mb"] for r in lm if r["row"].startswith("Adam")}
    zo = {r["dtype"]: r["mb"] for r in lm if r["row"] == "ZOSGD step, exception_safe off"}
    assert all(zo[d] < adam[d] for d in adam)  # backprop's grads and moments cost more
