import pytest
import torch

import sharpzo_ext  # noqa: F401  (registers torch.ops.sharpzo)


def cuda_kernels_available() -> bool:
    return torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key(
        "sharpzo::perturb_", "CUDA")


CUDA = pytest.mark.skipif(not cuda_kernels_available(), reason="needs a GPU and CUDA kernels")

# Parametrize a test over every device the build supports; CUDA cases are marked and skipped
# without a GPU.
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, CUDA])]
