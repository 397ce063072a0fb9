"""Accuracies of prompts: during a run, and `sharpzo-ext eval` of a saved prompt on data of the
same model and classes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sharpzo_ext.clip import run_dir
from sharpzo_ext.clip.config import RunError, TrainConfig
from sharpzo_ext.clip.prepare import Prepared, prepare
from sharpzo_ext.clip.prompt_task import PromptTask

__all__ = ["accuracies", "evaluate_prompt"]


def accuracies(p: Prepared, task: PromptTask, w: torch.Tensor, splits) -> dict[str, float]:
    """{split: accuracy of the prompt w} for those of `splits` that the prepared data has."""
    return {split: task.accuracy(w, p.features[split], p.labels[split]) for split in splits
            if split in p.features}


def evaluate_prompt(prompt: str | Path, config: TrainConfig, progress: bool = True) -> dict:
    """Accuracies of a saved prompt on every split of the data of `config` (same model and
    classes; refused with a RunError otherwise)."""
    w, metadata = run_dir.read_prompt(Path(prompt))
    p = prepare(config, progress)
    saved_model = json.loads(metadata.get("model", "{}"))
    if saved_model != p.loaded.identity:
        raise RunError(f"{prompt} was tuned for {saved_model}, not for {p.loaded.identity}")
    if json.loads(metadata.get("classnames", "[]")) != p.data.classnames:
        raise RunError(f"{prompt} was tuned for other classes than the data's")
    if w.numel() != p.task.dim:
        raise RunError(f"{prompt} holds a {w.numel()}-dimensional prompt; this task's is "
                       f"{p.task.dim} (other intrinsic_dim or context length)")
    return accuracies(p, p.task, w.to(p.task.device), ("train", "val", "test", "shifted"))
