"""CLIP prompt tuning with forward passes only, over open_clip models.

    loaded = sz.clip.load_model("ViT-B-16", pretrained="openai")   # or "embedded"
    task = sz.clip.PromptTask(loaded.model, loaded.tokenizer, classnames)
    features = task.encode_images(images)                         # cached once
    losses = task.losses(W, features, labels)                     # a population, batched

The command line (`sharpzo-ext train`) wraps the data, the feature cache and the run directory
(sharpzo_ext/clip/train.py).
"""

from sharpzo_ext.clip.models import LoadedModel, ModelError, load_model
from sharpzo_ext.clip.prompt_task import PromptTask

__all__ = ["LoadedModel", "ModelError", "PromptTask", "load_model"]
