"""PromptTask loss evaluations on the embedded default: what cutting the prompts after their end
token, sharing their prefix and batching the population save.

One loss evaluation = the text tower over the 10 class prompts plus the logits and the
cross-entropy over 160 cached image features (the embedded task's train split).
"""

from __future__ import annotations

import torch

from sharpzo_ext.bench.common import BenchConfig, Suite, Target, markdown_table, measure_ms

POPULATION = 20


def run(config: BenchConfig) -> Suite:
    from sharpzo_ext.clip import data as data_lib  # noqa: PLC0415
    from sharpzo_ext.clip.models import load_model  # noqa: PLC0415
    from sharpzo_ext.clip.prompt_task import PromptTask  # noqa: PLC0415

    loaded = load_model("embedded", device=config.device)
    task_data = data_lib.embedded_task(shots=16)
    settings = {"full length (77 tokens)": {"share_prefix": False, "truncate": False},
                "truncated": {"share_prefix": False},
                "shared prefix": {}}
    tasks = {name: PromptTask(loaded.model, loaded.tokenizer, task_data.classnames,
                              intrinsic_dim=128, device=config.device, **kwargs)
             for name, kwargs in settings.items()}
    images = data_lib.load_images(task_data.splits["train"][0], loaded.preprocess)
    features = tasks["shared prefix"].encode_images(images)
    labels = task_data.labels("train").to(features.device)
    W = torch.randn(POPULATION, 128, generator=torch.Generator().manual_seed(0)) * 0.5
    results = {}
    for name, task in tasks.items():
        results[f"{name}, one candidate per call"] = measure_ms(
            lambda task=task: task.losses(W[:1], features, labels), config)
        results[f"{name}, population of {POPULATION} per call"] = measure_ms(
            lambda task=task: task.losses(W, features, labels), config) / POPULATION
    baseline = results["full length (77 tokens), one candidate per call"]
    rows = [[name, f"{ms:.3f}", f"{baseline / ms:.1f}x"] for name, ms in results.items()]
    L = tasks["truncated"].encoder.tokens.shape[1]
    records = [{"setting": name, "ms_per_candidate": ms} for name, ms in results.items()]
    best = results[f"shared prefix, population of {POPULATION} per call"]
    targets = [Target("loss evaluation, shared prefix + batched vs full length one by one",
                      baseline / best, ">= 2")]
    table = markdown_table(["evaluation", "ms per candidate", "speed-up"], rows)
    return Suite("clip", f"Prompts cut after {L} of 77 tokens.\n\n" + table, records, targets)
