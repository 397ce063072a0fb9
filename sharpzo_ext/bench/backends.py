"""The text tower on each backend: torch eager (shared prefixes, and full prompts as the ONNX
graph runs them) against ONNX Runtime fp32 and int8 (engine/onnx_export.py, engine/onnx_int8.py), on the
embedded model and on ViT-B-16's architecture with random weights (enough for timing), for a
population of 20 candidates.

Every row is measured in a fresh process, so that its peak resident memory is its own: the
memory the task adds on top of the loaded model (ONNX Runtime's session holds its own copy of
the weights) until its population has been evaluated. ONNX Runtime rows first build their task
in another process with an empty export cache of its own, which exports (and for int8 also
calibrates and quantizes): the measured process loads the cached file, as every run after the
first does, and the first build's time is reported apart. Per row also: ms per candidate, and the
largest relative difference of a candidate's loss from torch fp32's.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
import time

import torch

from sharpzo_ext import resident_memory
from sharpzo_ext.bench.common import (BenchConfig, Suite, markdown_table, measure_ms,
                                      row_progress)

POPULATION = 20
REALSIZE = "ViT-B-16"
DIM = 64  # the intrinsic dimension of the candidates
PATHS = (  # (name, backend, share_prefix, precision)
    ("torch, shared prefix, fp32", "torch", True, "fp32"),
    ("torch, full prompts, fp32", "torch", False, "fp32"),
    ("torch, shared prefix, int8", "torch", True, "int8"),
    ("onnxruntime, full prompts, fp32", "onnxruntime", False, "fp32"),
    ("onnxruntime, full prompts, int8", "onnxruntime", False, "int8"),
)


def _model(name: str, classes: int | None, device: str):
    """(model, tokenizer, class names): the embedded default with its task's classes, or an
    open_clip architecture with random weights (the same in every process, so that rows compare
    the same model and share its export) and the first `classes` ImageNet classes."""
    from sharpzo_ext.clip.families import load_model  # noqa: PLC0415

    if name == "embedded":
        from sharpzo_ext.clip.data.datasets import embedded_task  # noqa: PLC0415

        loaded = load_model("embedded", device=device)
        return loaded.model, loaded.tokenizer, embedded_task(1, 0).classnames
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # noqa: PLC0415

    torch.manual_seed(0)
    loaded = load_model(name, device=device)  # random weights
    return loaded.model, loaded.tokenizer, IMAGENET_CLASSNAMES[:classes]


def _row(model: str, classes: int | None, path: int, cache: str, population: int,
         device: str, quick: bool, threads: int, measure: bool) -> dict:
    """One row, measured in this (fresh) process; without `measure`, only the task's build."""
    from sharpzo_ext.clip.engine import Engine  # noqa: PLC0415
    from sharpzo_ext.clip.task.prompt_task import PromptTask  # noqa: PLC0415

    torch.set_num_threads(threads)
    config = BenchConfig(device=device, quick=quick)
    clip, tokenizer, names = _model(model, classes, device)
    _, backend, share_prefix, precision = PATHS[path]
    measured = resident_memory.reset_peak()
    before = resident_memory.status_mb("VmRSS")
    start = time.perf_counter()
    task = PromptTask(clip, tokenizer, names, intrinsic_dim=DIM, seed=0, device=device,
                      engine=Engine(share_prefix=share_prefix, precision=precision,
                      backend=backend, cache_dir=cache))
    build_s = time.perf_counter() - start
    if not measure:
        return {"build_s": build_s}
    W = torch.randn(population, DIM, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        E = task.text_features(W[:1]).shape[-1]
        g = torch.Generator().manual_seed(1)
        features = torch.nn.functional.normalize(torch.randn(200, E, generator=g), dim=-1)
        losses = task.losses(W, features.to(device), torch.arange(200, device=device) %
                             len(names))
        ms = measure_ms(functools.partial(task.text_features, W), config,
                        warm_up=functools.partial(task.text_features, W[:2])) / population
    peak = resident_memory.status_mb("VmHWM") if measured else None
    return {"ms_per_candidate": ms, "build_s": build_s, "losses": losses.tolist(),
            "peak_memory_added_mb": None if peak is None or before is None else peak - before}


def _in_process(spec: dict) -> dict:
    """_row(**spec) in a fresh Python process."""
    done = subprocess.run([sys.executable, "-m", "sharpzo_ext.bench.backends", json.dumps(spec)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"backends row {PATHS[spec['path']][0]} of {spec['model']} failed: "
                           f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(config: BenchConfig) -> Suite:
    from sharpzo_ext.clip.engine import precision as precision_lib  # noqa: PLC0415

    torch_int8 = precision_lib.runs("int8", config.device)
    paths = [i for i, (_, backend, _, precision) in enumerate(PATHS)
             if (backend == "torch" or config.device == "cpu")
             and (backend != "torch" or precision != "int8" or torch_int8)]
    models = [("embedded", None)] + ([] if config.quick else [(REALSIZE, 10), (REALSIZE, 100)])
    population = 4 if config.quick else POPULATION
    rows, records = [], []
    with tempfile.TemporaryDirectory() as caches, row_progress(
            "backends", len(models) * len(paths)) as bar:
        for model, classes in models:
            reference = baseline = None
            for path in paths:
                cache = f"{caches}/{model}-{classes}-{path}"  # empty: the first build exports
                spec = {"model": model, "classes": classes, "path": path, "cache": cache,
                        "population": population, "device": config.device,
                        "quick": config.quick, "threads": torch.get_num_threads()}
                first = (_in_process({**spec, "measure": False})["build_s"]
                         if PATHS[path][1] == "onnxruntime" else None)
                row = _in_process({**spec, "measure": True})
                row["first_build_s"] = row["build_s"] if first is None else first
                losses = torch.tensor(row["losses"])
                if reference is None:
                    reference, baseline = losses, row["ms_per_candidate"]
                difference = float(((losses - reference).abs() / reference.abs()).max())
                ms, peak = row["ms_per_candidate"], row["peak_memory_added_mb"]
                label = model if classes is None else f"{model}, {classes} classes"
                name, backend, share_prefix, precision = PATHS[path]
                rows.append([label, name, f"{ms:.2f}", f"{baseline / ms:.2f}x",
                             "" if peak is None else f"{peak:.0f}", f"{difference:.1e}",
                             f"{row['first_build_s']:.1f}"])
                records.append({"model": label, "path": name, "backend": backend,
                                "share_prefix": share_prefix, "precision": precision,
                                "ms_per_candidate": ms, "peak_memory_added_mb": peak,
                                "max_rel_loss_difference": difference,
                                "first_build_s": row["first_build_s"],
                                "cached_build_s": row["build_s"]})
                bar.update()
    table = markdown_table(
        ["model", "backend and path", "ms per candidate", "speed vs torch shared fp32",
         "peak memory added (MB)", "max rel. loss diff. vs torch fp32", "first build (s)"],
        rows)
    header = f"Population {population}; each row in a fresh process.\n\n"
    return Suite("backends", header + table, records, [])


if __name__ == "__main__":
    print(json.dumps(_row(**json.loads(sys.argv[1]))))
