"""perturb_ against the ways eager PyTorch code perturbs parameters (MeZO and friends).

Methods, all adding 1e-3 * z to x:
  sharpzo_ext       sz.ops.perturb_(x, seed, ...): in place, nothing allocated
  MeZO eager        torch.manual_seed; z = torch.normal(...) (or randint for Rademacher);
                    x = x + eps * z  (MeZO's code: two temporaries and a new x)
  MeZO in-place     torch.manual_seed; z = torch.normal(...); x.add_(z, alpha=eps)
  torch in-place    buf.normal_() (or bernoulli_) into a preallocated buffer, then x.add_
  roofline          x.mul_(c): one read and one write of x, the memory-bound floor
"""

from __future__ import annotations

import torch

import sharpzo_ext as sz
from sharpzo_ext.bench.common import (BenchConfig, Suite, Target, format_bytes, markdown_table,
                                      measure)

EPS = 1e-3
SEED = 1234
METHODS = ("sharpzo_ext", "MeZO eager", "MeZO in-place", "torch in-place", "roofline")


def _methods(x: torch.Tensor, dist: str) -> dict:
    buf = torch.empty_like(x)
    gaussian = dist == "gaussian"

    def eager_z():
        torch.manual_seed(SEED)
        if gaussian:
            return torch.normal(0.0, 1.0, size=x.shape, dtype=x.dtype, device=x.device)
        return torch.randint(0, 2, x.shape, dtype=x.dtype, device=x.device) * 2 - 1

    def torch_in_place():
        if gaussian:
            buf.normal_()
        else:
            buf.bernoulli_(0.5).mul_(2).sub_(1)
        x.add_(buf, alpha=EPS)

    return {
        "sharpzo_ext": lambda: sz.ops.perturb_(x, SEED, 0, EPS, dist),
        "MeZO eager": lambda: x + EPS * eager_z(),
        "MeZO in-place": lambda: x.add_(eager_z(), alpha=EPS),
        "torch in-place": torch_in_place,
        "roofline": lambda: x.mul_(1.0),
    }


def run(config: BenchConfig) -> Suite:
    sizes = (1 << 11, 1 << 20) if config.quick else (1 << 11, 1 << 20, 1 << 24)
    # AVX2 (and older) CPUs have half the vector width for the Gaussian's arithmetic
    gaussian_goal = ">= 15" if sz.ops.cpu_kernel_isa() == "x86-64-v4" else ">= 8"
    records, rows, targets = [], [], []
    for dist in ("gaussian", "rademacher"):
        for dtype in (torch.float32, torch.bfloat16):
            for size in sizes:
                x = torch.randn(size, dtype=dtype, device=config.device)
                results = {name: measure(fn, config) for name, fn in _methods(x, dist).items()}
                case = {"dist": dist, "dtype": str(dtype).removeprefix("torch."), "size": size}
                records += [{**case, "method": m, **r} for m, r in results.items()]
                ms = {m: r["median_ms"] for m, r in results.items()}
                ours = ms["sharpzo_ext"]
                rows.append([dist, case["dtype"], f"2^{size.bit_length() - 1}",
                             *(f"{ms[m]:.3f}" for m in METHODS),
                             f"{ms['MeZO eager'] / ours:.1f}x",
                             f"{ms['torch in-place'] / ours:.1f}x",
                             f"{ours / ms['roofline']:.2f}",
                             format_bytes(results["sharpzo_ext"]["bytes_allocated"]),
                             format_bytes(results["MeZO eager"]["bytes_allocated"])])
                if size == 1 << 24 and dtype == torch.float32:
                    label = f"perturb_ {dist} fp32 2^24"
                    targets.append(Target(f"{label} vs MeZO eager", ms["MeZO eager"] / ours,
                                          ">= 20" if dist == "rademacher" else gaussian_goal))
                    if dist == "rademacher":
                        targets.append(Target(f"{label} / roofline", ours / ms["roofline"], "<= 2"))
                    else:
                        targets.append(Target(f"{label} vs torch in-place normal_+add_",
                                              ms["torch in-place"] / ours, ">= 3"))
    allocated = max(r["bytes_allocated"] for r in records if r["method"] == "sharpzo_ext")
    targets.append(Target("bytes allocated by any perturb_ above", allocated, "<= 0", " B"))
    header = ["dist", "dtype", "n", *(f"{m} ms" for m in METHODS), "vs MeZO eager",
              "vs torch in-place", "/ roofline", "allocated (ours)", "allocated (MeZO eager)"]
    return Suite("perturb", markdown_table(header, rows), records, targets)
