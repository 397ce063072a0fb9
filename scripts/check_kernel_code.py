"""Checks the machine code of the built CPU kernels: no clone of the perturbation tile generators
may contain a full 64 x 64-bit vector multiply (vpmullq), which Philox does not need and which
costs 3 micro-ops and about 15 cycles of latency on Intel cores (Note [Philox on x86 vector
units]). The x86-64-v4 Gaussian must use vpmuludq, so that a renamed function cannot make the
check pass by finding nothing.

    python scripts/check_kernel_code.py sharpzo_ext/_C.abi3.so

Exits 1 with the offending functions named; prints a skip message on other architectures.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from collections import defaultdict

TILE_FUNCTIONS = ("gaussian_tile", "rademacher_tile")
FORBIDDEN = "vpmullq"
FUNCTION = re.compile(r"^[0-9a-f]+ <(.*)>:$")


def mnemonics_by_function(library: str) -> dict[str, list[str]]:
    """Each function of `library` whose name contains a tile function's, with its mnemonics."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", library],
                             check=True, capture_output=True, text=True).stdout
    functions: dict[str, list[str]] = defaultdict(list)
    current = None
    for line in listing.splitlines():
        header = FUNCTION.match(line)
        if header:
            name = header.group(1)
            current = name if any(f in name for f in TILE_FUNCTIONS) else None
        elif current and "\t" in line:
            fields = line.split("\t")
            if len(fields) > 1 and fields[1].strip():
                functions[current].append(fields[1].split()[0])
    return functions


def problems(functions: dict[str, list[str]]) -> list[str]:
    found = []
    for tile in TILE_FUNCTIONS:
        if not any(tile in name for name in functions):
            found.append(f"no function named like {tile!r}: the check would be vacuous")
    for name, ops in sorted(functions.items()):
        if FORBIDDEN in ops:
            found.append(f"{name}: {ops.count(FORBIDDEN)} {FORBIDDEN}")
    v4 = [name for name in functions if "gaussian_tile" in name and "x86_64_v4" in name]
    if v4 and not any("vpmuludq" in functions[name] for name in v4):
        found.append(f"{v4[0]}: no vpmuludq (Philox is not on the vector units)")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if platform.machine() not in ("x86_64", "AMD64"):
        print(f"check_kernel_code: SKIPPED, x86-64 only (this is {platform.machine()})")
        return 0
    if shutil.which("objdump") is None:
        print("check_kernel_code: objdump not found (apt-get install binutils)", file=sys.stderr)
        return 1
    functions = mnemonics_by_function(argv[1])
    found = problems(functions)
    for problem in found:
        print(f"check_kernel_code: {problem}", file=sys.stderr)
    if found:
        return 1
    print(f"check_kernel_code: {len(functions)} tile functions, none with {FORBIDDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
