"""PromptTask population evaluations at real CLIP size: ViT-B-16's text tower (12 layers, width
512), built by open_clip with random weights (enough for timing), over the first 10, 100 and 1000
ImageNet class names, for a population of 20 candidates.

Rows: full prompts (every prompt in full, cut after the longest end token, no sharing), shared prefixes
(Note [Shared prefix]) in float32, and shared prefixes with int8 (Note [Row-wise int8]) and
bf16 linear layers. GFLOP/s counts the multiply-adds of the linear layers over the tokens each
path actually runs (attention adds under 1% at these lengths), against the float32 matmul peak
measured in the same run. A 20,000-forward SharpZO run evaluates 20,000 candidates: its
projected time is 20,000 times the time per candidate (the image features are cached).
"""

from __future__ import annotations

import torch

from sharpzo_ext import resident_memory
from sharpzo_ext.bench.common import (BenchConfig, Suite, Target, markdown_table,
                                      measure_ms, row_progress)

MODEL = "ViT-B-16"
POPULATION = 20
RUN_FORWARDS = 20_000
SMALL_BOUND = 2048  # max_batch_tokens of the last row: what bounding the memory costs
PATHS = (  # (name, share_prefix, precision, max_batch_tokens)
    ("full prompts, fp32", False, "fp32", None),
    ("shared prefix, fp32", True, "fp32", None),
    ("shared prefix, int8", True, "int8", None),
    ("shared prefix, bf16", True, "bf16", None),
    (f"shared prefix, int8, max_batch_tokens {SMALL_BOUND}", True, "int8", SMALL_BOUND),
)


def _sgemm_gflops(config: BenchConfig) -> float:
    a = torch.randn(4096, 512, device=config.device)
    b = torch.randn(512, 2048, device=config.device)
    return 2 * 4096 * 512 * 2048 / measure_ms(lambda: a @ b, config) / 1e6


def _tokens_per_candidate(task) -> int:
    """Token positions one candidate runs through the tower (the shared SOS is per task)."""
    encoder = task.encoder
    if hasattr(encoder, "lengths"):
        return task.n_ctx + int(encoder.lengths.sum())
    return encoder.tokens.numel()


def _linear_flops_per_token(model) -> int:
    return 2 * sum(m.weight.numel() for name, m in model.transformer.named_modules()
                   if isinstance(m, torch.nn.Linear)) + 2 * sum(
        block.attn.in_proj_weight.numel() for block in model.transformer.resblocks)


def _format_duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def run(config: BenchConfig) -> Suite:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # noqa: PLC0415

    from sharpzo_ext.clip.engine import precision as precision_lib  # noqa: PLC0415
    from sharpzo_ext.clip.engine import Engine  # noqa: PLC0415
    from sharpzo_ext.clip.families import load_model  # noqa: PLC0415
    from sharpzo_ext.clip.task.prompt_task import PromptTask  # noqa: PLC0415

    loaded = load_model(MODEL, device=config.device)  # random weights
    model, tokenizer = loaded.model, loaded.tokenizer
    class_counts = (10,) if config.quick else (10, 100, 1000)
    population = 4 if config.quick else POPULATION
    int8 = precision_lib.runs("int8", config.device)
    paths = [p for p in PATHS if p[2] != "int8" or int8]
    W = torch.randn(population, 512, generator=torch.Generator().manual_seed(0)) * 0.5
    peak = _sgemm_gflops(config)
    flops_per_token = _linear_flops_per_token(model)
    rows, records, ms = [], [], {}
    runs = [(classes, path) for classes in class_counts for path in paths]
    with row_progress("clip-realsize", len(runs)) as bar:
        for classes, (name, share_prefix, precision, max_batch_tokens) in runs:
            bound = {} if max_batch_tokens is None else {"max_batch_tokens": max_batch_tokens}
            engine = Engine(share_prefix=share_prefix, precision=precision, **bound)
            task = PromptTask(model, tokenizer, IMAGENET_CLASSNAMES[:classes], intrinsic_dim=512,
                              device=config.device, engine=engine)
            measured = resident_memory.reset_peak()
            before = resident_memory.status_mb("VmRSS")
            with torch.no_grad():
                seconds = measure_ms(lambda: task.text_features(W), config,
                                     warm_up=lambda: task.text_features(W[:2])) / population / 1e3
            after = resident_memory.status_mb("VmHWM") if measured else None
            tokens = _tokens_per_candidate(task)
            gflops = tokens * flops_per_token / seconds / 1e9
            ms[classes, name] = seconds * 1e3
            baseline = ms[classes, PATHS[0][0]]
            memory = None if after is None or before is None else after - before
            rows.append([classes, name, tokens, f"{seconds * 1e3:.1f}",
                         f"{baseline / (seconds * 1e3):.1f}x", f"{gflops:.0f}",
                         f"{100 * gflops / peak:.0f}%",
                         "" if memory is None else f"{memory:.0f}",
                         _format_duration(seconds * RUN_FORWARDS)])
            records.append({"classes": classes, "path": name, "share_prefix": share_prefix,
                            "precision": precision, "tokens_per_candidate": tokens,
                            "ms_per_candidate": seconds * 1e3, "gflops": gflops,
                            "sgemm_peak_gflops": peak, "peak_memory_increase_mb": memory,
                            "projected_run_s": seconds * RUN_FORWARDS,
                            "max_batch_tokens": task.encoder.max_batch_tokens,
                            "int8_weight_max": precision_lib.int8_weight_max() if int8 else None})
            bar.update()
    at = 10 if config.quick else 100
    targets = [Target(f"shared prefix fp32 vs full prompts, {at} classes",
                      ms[at, PATHS[0][0]] / ms[at, PATHS[1][0]], ">= 1.5")]
    if int8:
        targets.append(Target(f"shared prefix int8 vs full prompts, {at} classes",
                              ms[at, PATHS[0][0]] / ms[at, PATHS[2][0]], ">= 3"))
    table = markdown_table(
        ["classes", "path", "tokens per candidate", "ms per candidate", "speed-up",
         "GFLOP/s", "of sgemm peak", "peak memory added (MB)",
         f"{RUN_FORWARDS:,}-forward run"], rows)
    weights = (f"; int8 weights in [-{precision_lib.int8_weight_max()}, "
               f"{precision_lib.int8_weight_max()}]" if int8 else "")
    header = (f"{MODEL} text tower, random weights, population {population}; sgemm peak "
              f"{peak:.0f} GFLOP/s in this run{weights}.\n\n")
    return Suite("clip-realsize", header + table, records, targets)
