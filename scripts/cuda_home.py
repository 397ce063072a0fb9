"""Prints the CUDA toolkit directory (nothing, and exit status 1, when there is none).

Used by setup.py (imported) and by CMakeLists.txt (run), so that both builds find the same
toolkit. CUDA_HOME or CUDA_PATH win; otherwise nvcc on PATH is asked. torch and CMake guess the
toolkit from nvcc's location, which is wrong where nvcc is a wrapper script (as on our CI
machines); nvcc itself knows its toolkit: `nvcc -v --dryrun` prints it as TOP. Standard library
only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys


def find_cuda_home() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "-v", "--dryrun", "-x", "cu", os.devnull], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    if match is None:
        return None
    return os.path.realpath(match.group(1).strip())


if __name__ == "__main__":
    home = find_cuda_home()
    if home is None:
        sys.exit(1)
    print(home)
