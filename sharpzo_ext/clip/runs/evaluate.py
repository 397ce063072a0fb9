"""Accuracies of tuned vectors (a prompt, an image-side adapter, or both): during a run, and
`sharpzo-ext eval` of a saved prompt file on data of the same model and classes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

import torch

from sharpzo_ext.clip.runs import prompt_file
from sharpzo_ext.clip.runs.config import RunError, TrainConfig
from sharpzo_ext.clip.runs.method_table import METHODS, Kind
from sharpzo_ext.clip.runs.methods import make_tuned
from sharpzo_ext.clip.runs.prepare import Prepared, prepare
from sharpzo_ext.clip.task import ensemble as ensemble_lib
from sharpzo_ext.clip.task.ensemble import Ensemble
from sharpzo_ext.clip.task.features import Features
from sharpzo_ext.clip.task.tuned import Tuned

__all__ = ["split_logits", "accuracies", "prompt_config", "evaluate_prompt", "RECORDED"]


# Note [One evaluation per iterate]
# An evaluation asks many questions of one iterate: its training loss, its accuracy on every
# split with the head at the training weight, the weight validation would choose, and its
# accuracies at that weight. They all read the same tuned logits, so the logits of every split
# come from one call of tuned.logits over the splits' features together (one text-tower pass
# for a prompt, where answering each question with its own call took eight), and everything
# else is arithmetic on them.
@torch.no_grad()
def split_logits(p: Prepared, tuned: Tuned, w: torch.Tensor,
                 splits) -> dict[str, torch.Tensor]:
    """{split: the tuned logits (N, C) of w} for those of `splits` that the prepared data has,
    from one call (Note [One evaluation per iterate])."""
    names = [split for split in splits if split in p.features]
    together = tuned.logits(torch.as_tensor(w).reshape(1, -1),
                            Features.cat([p.features[split] for split in names]))[0]
    return dict(zip(names, together.split([len(p.features[split]) for split in names])))


def accuracies(p: Prepared, logits: dict[str, torch.Tensor], ensemble: Ensemble | None = None,
               weight: float | None = None) -> dict[str, float]:
    """{split: accuracy} of tuned logits (split_logits), with the ensemble's head at `weight`
    (default: its own) if given."""
    if ensemble is None:
        return {split: float((x.argmax(-1) == p.labels[split]).float().mean())
                for split, x in logits.items()}
    return {split: ensemble.accuracy(x, split, p.labels[split], weight)
            for split, x in logits.items()}


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
    if "tune" not in metadata and method in METHODS and METHODS[method].kind != Kind.HEAD:
        recorded["tune"] = "prompt"  # files from before adapters hold prompts
    return dataclasses.replace(config, **recorded)


def evaluate_prompt(prompt: str | Path, config: TrainConfig, progress: bool = True,
                    explicit: Iterable[str] = ()) -> dict:
    """Accuracies of a saved prompt (with its head at its weight, if it has one) on every split
    of the data of `config` (same model and classes; refused with a RunError otherwise). The
    values the prompt recorded win over `config`'s (prompt_config; `explicit` names the fields
    set on purpose)."""
    w, metadata, head = prompt_file.read(Path(prompt))
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
        ensemble = Ensemble(head, weight, ensemble_lib.split_logits(head, p.features, stage),
                            stage=stage)
    logits = split_logits(p, tuned, w.to(tuned.device), ("train", "val", "test", "shifted"))
    return accuracies(p, logits, ensemble)
