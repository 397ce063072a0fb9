"""The text tower on each backend: torch eager (shared prefixes, and full prompts as the ONNX
graph runs them) against ONNX Runtime fp32 and int8 (onnx_tower.py, onnx_int8.py), on the
embedded model and on ViT-B-16's architecture with random weights (enough for timing), for a
population of 20 candidates.

Per row: ms per candidate, the resident memory the text tower adds when the task is built (ONNX
Runtime holds its own copy of the weights), the peak resident memory a population's evaluation
adds, the largest relative difference of a candidate's loss from torch fp32, and the one-time
cost of building the task the first time (export and quantization included; exports go to a
temporary directory, so every run pays it). The memory of a tower is measured on a second build,
from the export cache.
"""

from __future__ import annotations

import functools
import tempfile
import time

import torch

from sharpzo_ext import resident_memory
from sharpzo_ext.bench.common import BenchConfig, Suite, cpu_model, markdown_table, measure_ms

POPULATION = 20
REALSIZE = "ViT-B-16"
PATHS = (  # (name, backend, share_prefix, precision)
    ("torch, shared prefix, fp32", "torch", True, "fp32"),
    ("torch, full prompts, fp32", "torch", False, "fp32"),
    ("torch, shared prefix, int8", "torch", True, "int8"),
    ("onnxruntime, full prompts, fp32", "onnxruntime", False, "fp32"),
    ("onnxruntime, full prompts, int8", "onnxruntime", False, "int8"),
)


def _models(config: BenchConfig):
    """(name, model, tokenizer, class names) of each benchmarked model."""
    import logging  # noqa: PLC0415

    import open_clip  # noqa: PLC0415
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # noqa: PLC0415

    from sharpzo_ext.clip.data import embedded_task  # noqa: PLC0415
    from sharpzo_ext.clip.models import load_model  # noqa: PLC0415

    embedded = load_model("embedded", device=config.device)
    classes = embedded_task(1, 0).classnames
    yield "embedded", embedded.model, embedded.tokenizer, classes
    if config.quick:
        return
    logging.getLogger("open_clip").setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)  # "No pretrained weights loaded": intended
    model = open_clip.create_model(REALSIZE, device=config.device)
    for count in (10, 100):
        yield (f"{REALSIZE}, {count} classes", model, open_clip.get_tokenizer(REALSIZE),
               IMAGENET_CLASSNAMES[:count])


def run(config: BenchConfig) -> Suite:
    from sharpzo_ext.clip import precision as precision_lib  # noqa: PLC0415
    from sharpzo_ext.clip.prompt_task import PromptTask  # noqa: PLC0415

    torch_int8 = config.device == "cpu" and precision_lib.exact_int8_matmul()
    paths = [p for p in PATHS if (p[1] == "torch" or config.device == "cpu")
             and (p[1] != "torch" or p[3] != "int8" or torch_int8)]
    population = 4 if config.quick else POPULATION
    rows, records = [], []
    with tempfile.TemporaryDirectory() as cache:
        for model_name, model, tokenizer, classes in _models(config):
            dim = 64
            W = torch.randn(population, dim, generator=torch.Generator().manual_seed(0)) * 0.5
            features = None
            reference = baseline = None
            for name, backend, share_prefix, precision in paths:
                def build():
                    return PromptTask(model, tokenizer, classes, intrinsic_dim=dim, seed=0,
                                      share_prefix=share_prefix, precision=precision,
                                      backend=backend, cache_dir=cache, device=config.device)

                start = time.perf_counter()
                first = build()  # the first time: exports (and quantizes)
                build_s = time.perf_counter() - start
                del first
                before = resident_memory.status_mb("VmRSS")
                task = build()  # from the cache: what the tower itself holds
                built = resident_memory.status_mb("VmRSS")
                if features is None:
                    g = torch.Generator().manual_seed(1)
                    E = task.text_features(W[:1]).shape[-1]
                    features = torch.nn.functional.normalize(torch.randn(200, E, generator=g),
                                                             dim=-1).to(config.device)
                    labels = torch.arange(200, device=config.device) % len(classes)
                with torch.no_grad():
                    losses = task.losses(W, features, labels)
                    measured = resident_memory.reset_peak()
                    rss = resident_memory.status_mb("VmRSS")
                    ms = measure_ms(functools.partial(task.text_features, W), config,
                                    warm_up=functools.partial(task.text_features, W[:2]))
                    ms /= population
                    peak = resident_memory.status_mb("VmHWM") if measured else None
                if reference is None:
                    reference, baseline = losses, ms
                difference = float(((losses - reference).abs() / reference.abs()).max())
                tower_mb = None if before is None or built is None else built - before
                peak_mb = None if peak is None or rss is None else peak - rss
                rows.append([model_name, name, f"{ms:.2f}", f"{baseline / ms:.2f}x",
                             "" if tower_mb is None else f"{tower_mb:.0f}",
                             "" if peak_mb is None else f"{peak_mb:.0f}",
                             f"{difference:.1e}", f"{build_s:.1f}"])
                records.append({"model": model_name, "classes": len(classes), "path": name,
                                "backend": backend, "share_prefix": share_prefix,
                                "precision": precision, "ms_per_candidate": ms,
                                "tower_memory_mb": tower_mb, "peak_memory_added_mb": peak_mb,
                                "max_rel_loss_difference": difference, "build_s": build_s})
                del task
    table = markdown_table(
        ["model", "backend and path", "ms per candidate", "speed vs torch shared fp32",
         "tower memory (MB)", "peak memory added (MB)", "max rel. loss diff. vs torch fp32",
         "first build (s)"], rows)
    header = (f"Population {population}; measured on "
              f"{cpu_model() if config.device == 'cpu' else config.device}, "
              f"{torch.get_num_threads()} threads.\n\n")
    return Suite("backends", header + table, records, [])
