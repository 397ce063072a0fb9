import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import sharpzo_ext  # noqa: F401  (registers torch.ops.sharpzo)
from sharpzo_ext.clip import precision


def cuda_kernels_available() -> bool:
    return torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key(
        "sharpzo::perturb_", "CUDA")


CUDA = pytest.mark.skipif(not cuda_kernels_available(), reason="needs a GPU and CUDA kernels")


# int8 text towers need oneDNN's int8 kernels, exact at least with 7-bit weights (Note [int8
# without VNNI]); elsewhere they are refused
INT8 = pytest.mark.skipif(not precision.runs("int8", "cpu"),
                          reason="int8 is refused by this CPU or torch")

# Parametrize a test over every device the build supports; CUDA cases are marked and skipped
# without a GPU.
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, CUDA])]


# Note [Fuzzing profiles]
# The property-based tests (test_fuzz_*.py) run derandomized under `make test`: the same
# examples every time, so CI is deterministic and a failure reproduces. Set
# HYPOTHESIS_PROFILE=explore to draw new examples (and more of them) on every run.
settings.register_profile("ci", max_examples=60, derandomize=True, deadline=None,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
