"""PromptTask loss evaluations on the embedded default: what cutting the prompts after their end
token, sharing their prefix and batching the population save.

One loss evaluation = the text tower over the 10 class prompts plus the logits and the
cross-entropy over 160 cached image features (the embedded task's train split).

The second table runs the text tower's linear layers at each precision
(clip/engine/precision.py) on a population like a CMA-ES generation's (w ~ N(0, 0.6^2), the
default sigma) and reports how far their losses are from float32's, and whether they rank the
candidates as float32 does.
"""

from __future__ import annotations

import torch

from sharpzo_ext.bench.common import BenchConfig, Suite, Target, markdown_table, measure_ms

POPULATION = 20
SIGMA = 0.6  # TrainConfig's CMA-ES step size


def _rank_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Kendall's tau between two loss vectors: 1 when they order the candidates alike."""
    i, j = torch.triu_indices(a.numel(), a.numel(), 1)
    return float(((a[i] - a[j]).sign() * (b[i] - b[j]).sign()).mean())


def _precision_rows(task_for, features, labels, config: BenchConfig):
    from sharpzo_ext.clip.engine import precision  # noqa: PLC0415
    W = torch.randn(POPULATION, 128, generator=torch.Generator().manual_seed(1)) * SIGMA
    rows, records, exact = [], [], None
    for name in ("fp32", "bf16", "int8"):
        if not precision.runs(name, config.device):
            continue  # int8: CPU only
        task = task_for(name)
        with torch.no_grad():
            losses = task.losses(W, features, labels)
        exact = losses if exact is None else exact
        ms = measure_ms(lambda task=task: task.losses(W, features, labels), config) / POPULATION
        difference = (losses - exact).abs()
        record = {"precision": name, "ms_per_candidate": ms,
                  "max_abs_loss_difference": float(difference.max()),
                  "max_relative_loss_difference": float((difference / exact.abs()).max()),
                  "kendall_tau": _rank_agreement(losses, exact)}
        rows.append([name, f"{ms:.3f}", f"{record['max_abs_loss_difference']:.2e}",
                     f"{record['max_relative_loss_difference']:.2e}",
                     f"{record['kendall_tau']:.3f}"])
        records.append(record)
    return rows, records


def run(config: BenchConfig) -> Suite:
    from sharpzo_ext.clip.data import datasets as data_lib  # noqa: PLC0415
    from sharpzo_ext.clip.families import load_model  # noqa: PLC0415
    from sharpzo_ext.clip.engine import Engine  # noqa: PLC0415
    from sharpzo_ext.clip.task.prompt_task import PromptTask  # noqa: PLC0415

    loaded = load_model("embedded", device=config.device)
    task_data = data_lib.embedded_task(shots=16)
    settings = {"full length (77 tokens)": {"share_prefix": False, "truncate": False},
                "truncated": {"share_prefix": False},
                "shared prefix": {}}
    tasks = {name: PromptTask.of(loaded, task_data.classnames, intrinsic_dim=128,
                                 device=config.device, engine=Engine(**kwargs))
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

    def task_for(precision):
        return PromptTask.of(loaded, task_data.classnames, intrinsic_dim=128,
                             device=config.device, engine=Engine(precision=precision))

    precision_rows, precision_records = _precision_rows(task_for, features, labels, config)
    records += precision_records
    table += f"\n\nShared prefix, population of {POPULATION} per call, at each precision:\n\n"
    table += markdown_table(
        ["precision", "ms per candidate", "max abs loss difference to fp32",
         "max relative difference", "Kendall tau with fp32's ranking"], precision_rows)
    return Suite("clip", f"Prompts cut after {L} of 77 tokens.\n\n" + table, records, targets)
