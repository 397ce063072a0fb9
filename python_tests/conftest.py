import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import sharpzo_ext  # noqa: F401  (registers torch.ops.sharpzo)


def cuda_kernels_available() -> bool:
    return torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key(
        "sharpzo::perturb_", "CUDA")


CUDA = pytest.mark.skipif(not cuda_kernels_available(), reason="needs a GPU and CUDA kernels")


def int8_available() -> bool:
    from sharpzo_ext.clip import precision

    try:
        precision.check("int8", torch.device("cpu"))
        return True
    except ValueError:
        return False


# int8 text towers need VNNI or AMX (Note [int8 needs VNNI]); elsewhere they are refused
INT8 = pytest.mark.skipif(not int8_available(), reason="int8 needs a CPU with VNNI or AMX")

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
