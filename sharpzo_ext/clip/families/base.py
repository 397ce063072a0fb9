"""What every CLIP family's adapter provides (Family), and what loading a model gives
(LoadedModel). The families are embedded.py, hf.py and openclip.py; __init__.py holds their
table, the one place that tells them apart.

Note [Image features by stage]
A CLIP's image feature is a projection of a wider one: the projection was trained to match
pretraining captions, and it drops what they never named. Each family says once where the
feature before it is (`Family.image_stages`), and returns both from one pass of the image tower:
- open_clip VisionTransformer: the pooled class token after `ln_post`, before `proj`;
- open_clip ModifiedResNet: `layer4`'s output averaged over space, what the attention pool
  reads (its output projection runs inside the attention, out of reach of a module hook);
- Hugging Face CLIPModel: the vision model's `pooler_output`, before `visual_projection`.
Any other image tower gives its final features only, and a run that asks for the others is
refused (task/features.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from sharpzo_ext.errors import UserError

if TYPE_CHECKING:
    from sharpzo_ext.clip.engine.tower import TextTower

__all__ = ["ModelError", "LoadedModel", "Family", "MEAN", "STD", "file_identity",
           "refuse_directory"]

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image normalization
STD = (0.26862954, 0.26130258, 0.27577711)


class ModelError(UserError):
    """A model or checkpoint that cannot be loaded, with a message that says why."""


@dataclasses.dataclass(frozen=True)
class Family:
    """One CLIP family: which --model names it loads, which model objects are its own, and how
    to load them and reach their text tower, image features and text width."""
    name: str
    claims: Callable[[str], bool]                       # a --model name
    owns: Callable[[torch.nn.Module], bool]             # a model object
    load: Callable[[str, "str | None", object], "LoadedModel"]  # (name, pretrained, device)
    text_tower: Callable[[torch.nn.Module, str], "TextTower"]  # (model, precision)
    # (final, pre): the projected image features of preprocessed images, and the feature the
    # projection reads (None for an image tower whose pre-projection feature is not known);
    # Note [Image features by stage]
    image_stages: Callable[[torch.nn.Module, torch.Tensor],
                           "tuple[torch.Tensor, torch.Tensor | None]"]
    width: Callable[[torch.nn.Module], int]             # the text tower's token width


@dataclasses.dataclass
class LoadedModel:
    model: torch.nn.Module
    preprocess: Callable  # PIL image or float tensor (3, H, W) in [0, 1] -> normalized tensor
    tokenizer: Callable
    identity: dict  # model name and weights, for feature caches and prompt checkpoints
    family: Family
    known_tokens: frozenset[int] | None = None  # the embedded checkpoint's vocabulary


def file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"file": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise ModelError(f"--pretrained {path} is a directory; expected a checkpoint file")
