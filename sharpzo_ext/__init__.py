"""sharpzo_ext: forward-only fine-tuning for PyTorch.

SharpZO (sharpness-aware CMA-ES warm-up, then sparse zeroth-order search) and the optimizers it is
built from, on fused C++/CUDA kernels registered as torch.ops.sharpzo.*.
"""

import os
import sys

import torch  # loads libtorch before the extension that links against it


def _load_ops() -> None:
    """Registers torch.ops.sharpzo from the package's _C, or from the library that
    SHARPZO_EXT_LIBRARY names (e.g. libsharpzo_ops.so built with CMake)."""
    library = os.environ.get("SHARPZO_EXT_LIBRARY")
    if library:
        if not os.path.isfile(library):
            raise ImportError(f"SHARPZO_EXT_LIBRARY={library!r} is not a file")
        torch.ops.load_library(library)
        return
    try:
        from sharpzo_ext import _C  # noqa: F401, PLC0415
    except ImportError as error:
        raise ImportError(
            "sharpzo_ext's compiled extension (sharpzo_ext._C) is missing or does not load: "
            f"{error}. Build it with `pip install --no-build-isolation -e .` (or `make test`)."
        ) from error


_load_ops()

from sharpzo_ext import distributed, ops, optim  # noqa: E402
from sharpzo_ext.ops import reference  # noqa: E402

# Note [sharpzo_ext.reference]
# The ops' oracles live with the ops (ops/reference.py); their public name is
# sharpzo_ext.reference. The module is registered under that name too, one module object with two
# names, so that `import sharpzo_ext.reference` and `from sharpzo_ext.reference import sample` work
# as `sz.reference.sample` does.
sys.modules[f"{__name__}.reference"] = reference

__version__ = "0.1.0"
__all__ = ["clip", "distributed", "ops", "optim", "reference", "__version__"]


def __getattr__(name: str):
    """`sharpzo_ext.clip`, imported when first used: a user of the optimizers alone never loads
    the CLIP engine, its families or its tasks."""
    if name == "clip":
        import importlib  # noqa: PLC0415

        return importlib.import_module("sharpzo_ext.clip")
    raise AttributeError(f"module 'sharpzo_ext' has no attribute {name!r}")
