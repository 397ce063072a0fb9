"""Accuracies of tuned vectors (a prompt, an image-side adapter, or both): during a run, and
`sharpzo-ext eval` of a saved prompt file on data of the same model and classes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

import torch

from sharpzo_ext.clip.runs import run_dir
from sharpzo_ext.clip.runs.config import RunError, TrainConfig
from sharpzo_ext.clip.runs.method_table import METHODS
from sharpzo_ext.clip.runs.methods import make_tuned
from sharpzo_ext.clip.runs.prepare import Prepared, prepare
from sharpzo_ext.clip.task.ensemble import Ensemble, split_logits
from sharpzo_ext.clip.task.tuned import Tuned

__all__ = ["accuracies", "prompt_config", "evaluate_prompt", "RECORDED"]


def accuracies(p: Prepared, tuned: Tuned, w: torch.Tensor, splits,
               ensemble: Ensemble | None = None,
               weight: float | None = None) -> dict[str, float]:
    """{split: accuracy of the tuned vector w (with the ensemble's head at `weight`, default its
    own, if given)} for those of `splits` that the prepared data has."""
    if ensemble is None:
        return {split: tuned.accuracy(w, p.features[split], p.labels[split]) for split in splits
                if split in p.features}
    return {split: ensemble.accuracy(tuned, w, split, p.features[split], p.labels[split],
                                     weight) for split in splits if split in p.features}


# What a saved prompt records about what it tunes and its projections (metadata key ->
# TrainConfig field, parser).
RECORDED = {"method": ("method", str), "seed": ("seed", int),
            "intrinsic_dim": ("intrinsic_dim", int),
            "ctx_init": ("ctx_init", lambda text: text or None),
            "tune": ("tune", str), "adapter_dim": ("adapter_dim", int)}


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
    method = recorded.get("method", config.method)
    if "tune" not in metadata and method in METHODS and METHODS[method].kind != "head":
        recorded["tune"] = "prompt"  # files from before adapters hold prompts
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
    tuned = make_tuned(config, p.task, p)
    if w.numel() != tuned.dim:
        raise RunError(f"{prompt} holds a {w.numel()}-dimensional vector; this {config.tuned}'s "
                       f"is {tuned.dim} (other intrinsic_dim, adapter_dim or context length)")
    ensemble = None
    if head is not None:
        head, weight, stage = head
        if stage not in p.features["train"].stages:
            raise RunError(f"{prompt} holds a head of the {stage} features, which this model's "
                           "family does not give")
        width, classes = p.features["train"].stage(stage).shape[1], len(p.data.classnames)
        if (head.width, head.classes) != (width, classes):
            raise RunError(f"{prompt} holds a {head.kind} head for features of width "
                           f"{head.width} and {head.classes} classes; this model's {stage} "
                           f"features are {width} wide, for {classes} classes")
        ensemble = Ensemble(head, weight, split_logits(head, p.features, stage), stage=stage)
    return accuracies(p, tuned, w.to(tuned.device), ("train", "val", "test", "shifted"),
                      ensemble)
