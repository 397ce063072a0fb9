"""Skip conditions and device parameters that tests in every folder use (import them from here:
conftest files hold fixtures only)."""

import pytest
import torch

import sharpzo_ext  # noqa: F401  (registers torch.ops.sharpzo)
from sharpzo_ext.clip.engine import precision


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
