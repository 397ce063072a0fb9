"""Accuracies of prompts: during a run, and `sharpzo-ext eval` of a saved prompt on data of the
same model and classes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

import torch

from sharpzo_ext.clip.runs import run_dir
from sharpzo_ext.clip.runs.config import RunError, TrainConfig
from sharpzo_ext.clip.task.ensemble import Ensemble, split_logits
from sharpzo_ext.clip.runs.prepare import Prepared, prepare
from sharpzo_ext.clip.task.prompt_task import PromptTask

__all__ = ["accuracies", "prompt_config", "evaluate_prompt", "RECORDED"]


def accuracies(p: Prepared, task: PromptTask, w: torch.Tensor, splits,
               ensemble: Ensemble | None = None,
               weight: float | None = None) -> dict[str, float]:
    """{split: accuracy of the prompt w (with the ensemble's head at `weight`, default its
    own, if given)} for those of `splits` that the prepared data has."""
    if ensemble is None:
        return {split: task.accuracy(w, p.features[split], p.labels[split]) for split in splits
                if split in p.features}
    return {split: ensemble.accuracy(task, w, split, p.features[split], p.labels[split], weight)
            for split in splits if split in p.features}


# What a saved prompt records about its projection (metadata key -> TrainConfig field, parser).
RECORDED = {"method": ("method", str), "seed": ("seed", int),
            "intrinsic_dim": ("intrinsic_dim", int),
            "ctx_init": ("ctx_init", lambda text: text or None)}


def prompt_config(metadata: dict, config: TrainConfig, explicit: Iterable[str],
                  source: str) -> TrainConfig:
    """`config` with the values the prompt recorded (its projection's seed, intrinsic_dim and
    ctx_init): they win over the others; one named in `explicit` (set on purpose) that
    contradicts the record is refused, as the prompt means nothing under another projection."""
    recorded = {}
    for key, (field, parse) in RECORDED.items():
        if key not in metadata:
            continue
        try:
            recorded[field] = parse(metadata[key])
        except ValueError:
            raise RunError(f"{source} records an invalid {key}: {metadata[key]!r}") from None
        if field in explicit and getattr(config, field) != recorded[field]:
            raise RunError(f"{source} was tuned with {field} = {recorded[field]!r} (its "
                           f"projection); got {field} = {getattr(config, field)!r}")
    return dataclasses.replace(config, **recorded)


def evaluate_prompt(prompt: str | Path, config: TrainConfig, progress: bool = True,
                    explicit: Iterable[str] = ()) -> dict:
    """Accuracies of a saved prompt (with its head at its weight, if it has one) on every split
    of the data of `config` (same model and classes; refused with a RunError otherwise). The
    values the prompt recorded win over `config`'s (prompt_config; `explicit` names the fields
    set on purpose)."""
    w, metadata, head = run_dir.read_prompt(Path(prompt))
    config = prompt_config(metadata, config, explicit, str(prompt))
    config.check()
    p = prepare(config, progress)
    try:
        saved_model = json.loads(metadata.get("model", "{}"))
        classnames = json.loads(metadata.get("classnames", "[]"))
    except json.JSONDecodeError:
        raise RunError(f"{prompt} has damaged metadata") from None
    if saved_model != p.loaded.identity:
        raise RunError(f"{prompt} was tuned for {saved_model}, not for {p.loaded.identity}")
    if classnames != p.data.classnames:
        raise RunError(f"{prompt} was tuned for other classes than the data's")
    if w.numel() != p.task.dim:
        raise RunError(f"{prompt} holds a {w.numel()}-dimensional prompt; this task's is "
                       f"{p.task.dim} (other intrinsic_dim or context length)")
    ensemble = None
    if head is not None:
        head, weight = head
        width, classes = p.features["train"].shape[1], len(p.data.classnames)
        if (head.width, head.classes) != (width, classes):
            raise RunError(f"{prompt} holds a {head.kind} head for features of width "
                           f"{head.width} and {head.classes} classes; this model's features "
                           f"are {width} wide, for {classes} classes")
        ensemble = Ensemble(head, weight, split_logits(head, p.features))
    return accuracies(p, p.task, w.to(p.task.device), ("train", "val", "test", "shifted"),
                      ensemble)
