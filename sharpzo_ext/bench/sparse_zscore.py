"""sparse_zscore (and mask_score) against the eager PyTorch code they replace.

Eager sparse_zscore is five passes: mean, std, z-score, abs + topk, then a mask and a where.
Eager mask_score: w * w * (|grad| - mean) / (std + eps) over a materialized |grad|.
"""

from __future__ import annotations

import torch

import sharpzo_ext as sz
from sharpzo_ext.bench.common import (BenchConfig, Suite, Target, format_bytes, markdown_table,
                                      measure)

EPS = 1e-8


def eager_sparse_zscore(g: torch.Tensor, k: int):
    mean, std = g.mean(), g.std(unbiased=False)
    values = (g - mean) / (std + EPS)
    mask = torch.zeros_like(g, dtype=torch.bool)
    mask[values.abs().topk(k).indices] = True
    return torch.where(mask, values, 0), mask


def eager_mask_score(w: torch.Tensor, grad: torch.Tensor):
    a = grad.abs()
    return w * w * (a - a.mean()) / (a.std(unbiased=False) + EPS)


def run(config: BenchConfig) -> Suite:
    sizes = (1 << 11, 1 << 20) if config.quick else (1 << 11, 1 << 20, 1 << 24)
    gen = torch.Generator().manual_seed(0)
    records, rows, targets = [], [], []
    for size in sizes:
        g = torch.randn(size, generator=gen).to(config.device)
        w = torch.randn(size, generator=gen).to(config.device)
        scratch = g.clone()

        def in_place(k):
            scratch.copy_(g)
            return sz.ops.sparse_zscore_(scratch, k)

        for density in (0.01, 0.1):
            k = max(1, int(size * density))
            results = {
                "sharpzo_ext": measure(lambda: sz.ops.sparse_zscore(g, k), config),
                "sharpzo_ext in-place (+ copy_)": measure(lambda: in_place(k), config),
                "eager": measure(lambda: eager_sparse_zscore(g, k), config),
            }
            case = {"op": "sparse_zscore", "size": size, "k": k, "density": density}
            records += [{**case, "method": m, **r} for m, r in results.items()]
            ms = {m: r["median_ms"] for m, r in results.items()}
            speedup = ms["eager"] / ms["sharpzo_ext"]
            rows.append([f"sparse_zscore k={density:.0%}", f"2^{size.bit_length() - 1}",
                         f"{ms['sharpzo_ext']:.3f}", f"{ms['sharpzo_ext in-place (+ copy_)']:.3f}",
                         f"{ms['eager']:.3f}", f"{speedup:.1f}x",
                         format_bytes(results["sharpzo_ext"]["bytes_allocated"]),
                         format_bytes(results["eager"]["bytes_allocated"])])
            if size == 1 << 24 and density == 0.1:
                targets.append(Target("sparse_zscore 2^24 k=10% vs eager", speedup, ">= 5"))
        results = {"sharpzo_ext": measure(lambda: sz.ops.mask_score(w, g), config),
                   "eager": measure(lambda: eager_mask_score(w, g), config)}
        case = {"op": "mask_score", "size": size}
        records += [{**case, "method": m, **r} for m, r in results.items()]
        ms = {m: r["median_ms"] for m, r in results.items()}
        rows.append(["mask_score", f"2^{size.bit_length() - 1}", f"{ms['sharpzo_ext']:.3f}", "",
                     f"{ms['eager']:.3f}", f"{ms['eager'] / ms['sharpzo_ext']:.1f}x",
                     format_bytes(results["sharpzo_ext"]["bytes_allocated"]),
                     format_bytes(results["eager"]["bytes_allocated"])])
    header = ["op", "n", "sharpzo_ext ms", "in-place (+ copy_) ms", "eager ms", "vs eager",
              "allocated (ours)", "allocated (eager)"]
    return Suite("sparse_zscore", markdown_table(header, rows), records, targets)
