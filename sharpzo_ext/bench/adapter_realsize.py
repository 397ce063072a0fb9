"""What a candidate costs at real CLIP size, for each thing a method can tune (clip/task/tuned.py):
a population's training losses over the cached features of 16 shots of 100 classes (1,600
images), ViT-B-16's widths (final features 512, pre-projection 768), its text tower built by
open_clip with random weights (enough for timing).

Rows: the prompt (the text tower over every class prompt, shared prefixes, fp32), the
image-side adapter (d = 256: a product of width d over the cached features, against fixed class
features; no text-tower pass) and both as one vector (the prompt's text-tower pass plus the
adapter's product). The target: an adapter candidate costs at most 1% of a prompt candidate.
"""

from __future__ import annotations

import torch

from sharpzo_ext.bench.common import BenchConfig, Suite, Target, markdown_table, measure_ms, \
    row_progress

MODEL = "ViT-B-16"
CLASSES, SHOTS, POPULATION = 100, 16, 20
PRE_WIDTH = 768  # ViT-B-16's image tower width, what its projection reads


def run(config: BenchConfig) -> Suite:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # noqa: PLC0415

    from sharpzo_ext.clip.families import load_model  # noqa: PLC0415
    from sharpzo_ext.clip.task.adapter import DEFAULT_DIM, ImageAdapter  # noqa: PLC0415
    from sharpzo_ext.clip.task.features import Features  # noqa: PLC0415
    from sharpzo_ext.clip.task.joint import PromptAndAdapter  # noqa: PLC0415
    from sharpzo_ext.clip.task.prompt_task import PromptTask  # noqa: PLC0415

    classes = 10 if config.quick else CLASSES
    population = 4 if config.quick else POPULATION
    loaded = load_model(MODEL, device=config.device)  # random weights
    task = PromptTask.of(loaded, IMAGENET_CLASSNAMES[:classes], intrinsic_dim=512,
                         device=config.device)
    g = torch.Generator().manual_seed(0)
    n = classes * SHOTS
    features = Features(
        torch.nn.functional.normalize(torch.randn(n, 512, generator=g), dim=1),
        torch.nn.functional.normalize(torch.randn(n, PRE_WIDTH, generator=g), dim=1),
    ).to(config.device)
    labels = torch.arange(classes, device=config.device).repeat_interleave(SHOTS)
    adapter = ImageAdapter.beside(task, PRE_WIDTH, DEFAULT_DIM)
    tuned = {"prompt (text tower, shared prefixes, fp32)": task,
             f"image-side adapter (d = {DEFAULT_DIM})": adapter,
             "prompt + adapter, one vector": PromptAndAdapter(task, adapter)}
    rows, records, ms = [], [], {}
    with row_progress("adapter-realsize", len(tuned)) as bar:
        for name, t in tuned.items():
            W = torch.randn(population, t.dim, generator=g).to(config.device) * 0.5
            with torch.no_grad():
                ms[name] = measure_ms(lambda t=t, W=W: t.losses(W, features, labels), config,
                                      warm_up=lambda t=t, W=W: t.losses(W[:2], features,
                                                                        labels)) / population
            share = 100 * ms[name] / ms[next(iter(tuned))]
            rows.append([name, t.dim, f"{ms[name]:.3f}", f"{1000 / ms[name]:.0f}", f"{share:.2f}%"])
            records.append({"tuned": name, "dim": t.dim, "ms_per_candidate": ms[name],
                            "classes": classes, "images": n, "population": population})
            bar.update()
    prompt, adapter_ms = ms[next(iter(tuned))], ms[f"image-side adapter (d = {DEFAULT_DIM})"]
    targets = [Target(f"adapter candidate against prompt candidate, {classes} classes, fp32",
                      100 * adapter_ms / prompt, "<= 1", unit="%")]
    header = (f"{MODEL} widths, random weights; {classes} classes x {SHOTS} shots = {n} cached "
              f"images; population {population}; the training loss of each candidate.\n\n")
    table = markdown_table(["tuned", "dimension", "ms per candidate", "candidates per second",
                            "of a prompt candidate's time"], rows)
    return Suite("adapter-realsize", header + table, records, targets)
