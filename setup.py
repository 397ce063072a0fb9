"""Builds sharpzo_ext._C: CPU kernels always, CUDA kernels when a CUDA toolkit and a CUDA build of
torch are present.

Environment switches:
  SHARPZO_EXT_CUDA=auto|0|1   auto (default): build CUDA kernels when nvcc is found and torch was
                              built with CUDA; 0: CPU only; 1: require CUDA (error otherwise).
                              Never decided by torch.cuda.is_available(): a CUDA build is useful
                              on a machine whose GPU is elsewhere (CI, containers).
  CUDA_HOME                   the toolkit; otherwise found from nvcc on PATH
                              (scripts/cuda_home.py).
  TORCH_CUDA_ARCH_LIST        GPU architectures; defaults to the visible GPUs, or to
                              "7.5+PTX" (runs on every GPU CUDA 13 supports) when none is visible.
  SHARPZO_EXT_DEBUG=1         -O0 -g.
"""

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from cuda_home import find_cuda_home  # noqa: E402  (the lookup CMakeLists.txt runs too)


def compile_flags(kind: str) -> list[str]:
    """The flags of `kind` (cxx, nvcc, openmp) in csrc/compile_flags.txt, shared with CMake:
    every line but comments and blank ones is exactly "<kind> <flag>"."""
    flags = []
    with open(os.path.join(ROOT, "csrc", "compile_flags.txt")) as f:
        for line in f:
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if len(words) != 2:
                sys.exit(f"csrc/compile_flags.txt: expected '<kind> <flag>', got {line.strip()!r}")
            if words[0] == kind:
                flags.append(words[1])
    return flags


def cuda_wanted():
    mode = os.environ.get("SHARPZO_EXT_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"SHARPZO_EXT_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        return False
    cuda_home = find_cuda_home()
    import torch  # noqa: PLC0415 (after CUDA_HOME is known, see below)

    reasons = []
    if cuda_home is None or not os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        reasons.append("no CUDA toolkit (nvcc) found; set CUDA_HOME")
    if torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} is not a CUDA build")
    if reasons:
        if mode == "1":
            sys.exit("SHARPZO_EXT_CUDA=1 but " + " and ".join(reasons))
        print("sharpzo_ext: building CPU kernels only: " + "; ".join(reasons))
        return False
    # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
    os.environ["CUDA_HOME"] = cuda_home
    return True


def build_extension():
    with_cuda = cuda_wanted()
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: PLC0415

    debug = os.environ.get("SHARPZO_EXT_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    openmp = compile_flags("openmp")
    cxx_flags = opt + compile_flags("cxx") + openmp
    include_dirs = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    extension = CppExtension
    extra = {"cxx": cxx_flags}
    if with_cuda:
        import torch  # noqa: PLC0415

        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.device_count() == 0:
            os.environ["TORCH_CUDA_ARCH_LIST"] = "7.5+PTX"
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        extension = CUDAExtension
        extra["nvcc"] = opt + compile_flags("nvcc")
    print(f"sharpzo_ext: building {'CPU + CUDA' if with_cuda else 'CPU'} kernels from "
          f"{len(sources)} sources")
    ext = extension("sharpzo_ext._C", sources, include_dirs=include_dirs, extra_compile_args=extra,
                    extra_link_args=openmp, py_limited_api=True)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = build_extension()
setup(ext_modules=ext_modules, cmdclass=cmdclass,
      options={"bdist_wheel": {"py_limited_api": "cp310"}})
