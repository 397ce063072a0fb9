"""A run's prompt file, prompt.safetensors: the selected iterate w, what rebuilds and shows the
tuned thing it belongs to (a prompt's context vectors, an adapter's dimension), the model and
classes it was tuned for, and its head with the head's weight and stage when it has one (`eval`
scores them together). safetensors: tensors and strings only, nothing that could run code."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sharpzo_ext import loaded
from sharpzo_ext.clip.runs.config import RunError
from sharpzo_ext.clip.task.ensemble import Ensemble, from_prompt_file
from sharpzo_ext.clip.task.heads import Head, HeadError
from sharpzo_ext.clip.task.tuned import Tuned
from sharpzo_ext.files import atomic_path

__all__ = ["save", "read"]


def save(path: Path, tuned: Tuned, w: torch.Tensor, about: dict,
         ensemble: Ensemble | None = None) -> None:
    """The prompt file: w, what rebuilds and shows the tuned thing it belongs to (a prompt's
    context vectors), what `about` says (the model's identity as "model", the classes as
    "classnames", how the run went; lists and dicts as JSON, the rest as text), and the head
    with its weight when there is one (`eval` scores them together)."""
    from safetensors.torch import save_file  # noqa: PLC0415

    record, shown = tuned.record(w)
    metadata = {**record, **{k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list))
                             else str(v) for k, v in about.items()}}
    tensors = {"w": w.detach().float().cpu().contiguous(), **shown}
    if ensemble is not None:
        head_tensors, head_metadata = ensemble.to_prompt_file()
        tensors |= head_tensors
        metadata |= head_metadata
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read(path: Path) -> tuple[torch.Tensor, dict, tuple[Head, float, str] | None]:
    """(w, metadata, (head, weight, stage) or None) of a saved prompt file."""
    from safetensors import safe_open  # noqa: PLC0415

    if not path.is_file():
        raise RunError(f"prompt file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            w = f.get_tensor("w")
            tensors = {k: f.get_tensor(k) for k in f.keys() if k != "w"}
    except Exception as error:  # noqa: BLE001 (anything unreadable is one error to the user)
        raise RunError(f"cannot read prompt file {path}: {error}") from None
    try:  # Note [Loaded values are checked]; the head's tensors are checked as a head's
        loaded.tensor(w, "w", (None,))
        for name, x in tensors.items():
            if x.is_floating_point():
                loaded.tensor(x, name)
    except loaded.BadValue as error:
        raise RunError(f"prompt file {path} is damaged: {error}") from None
    try:
        return w, metadata, from_prompt_file(tensors, metadata, str(path))
    except HeadError as error:
        raise RunError(str(error)) from None
