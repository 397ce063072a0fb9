"""The CLIP families: one adapter each (embedded.py, hf.py, openclip.py), and their table.

FAMILIES is the one place that tells the families apart: `load_model` picks the family that
claims a --model name, `of` the family that owns a model object, and everything else asks the
family it was given (LoadedModel.family). A new family is a module with a Family and a row here.
"""

from __future__ import annotations

import torch

from sharpzo_ext.clip.families import embedded, hf, openclip
from sharpzo_ext.clip.families.base import Family, LoadedModel, ModelError

__all__ = ["FAMILIES", "Family", "LoadedModel", "ModelError", "load_model", "of"]

# the first row that claims a name, or owns a model, is its family; open_clip takes the other
# names
FAMILIES = (embedded.FAMILY, hf.FAMILY, openclip.FAMILY)


def load_model(name: str = "embedded", pretrained: str | None = None,
               device: torch.device | str = "cpu") -> LoadedModel:
    """An open_clip model `name` with weights `pretrained` (a tag such as "openai", which needs
    a network the first time, or a local checkpoint file), a Hugging Face CLIPModel
    ("hf:PATH_OR_NAME": a checkpoint directory or a name in the Hugging Face cache), or the
    embedded default ("embedded", optionally with a checkpoint file written by
    scripts/pretrain_embedded.py).

    Note [No network]
    Hugging Face names are looked up in the local cache only. Asking the hub when a name is
    missing would, without a network, retry for about half a minute before failing; users of
    this package often have none, so a missing name fails at once and says what to pass."""
    family = next(f for f in FAMILIES if f.claims(name))
    return family.load(name, pretrained, device)


def of(model: torch.nn.Module) -> Family:
    """The family of a model object that was not loaded by load_model (one that was knows its
    family: LoadedModel.family), or TypeError if no family owns it."""
    family = next((f for f in FAMILIES if f.owns(model)), None)
    if family is None:
        raise TypeError(f"a {type(model).__name__} is not a CLIP of a known family: PromptTask "
                        "takes an open_clip CLIP or CustomTextCLIP, or a Hugging Face CLIPModel")
    return family
