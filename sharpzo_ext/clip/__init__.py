"""CLIP prompt tuning with forward passes only, over open_clip and Hugging Face CLIP models.

    loaded = sz.clip.load_model("ViT-B-16", pretrained="openai")   # or "embedded", "hf:DIR"
    task = sz.clip.PromptTask.of(loaded, classnames)              # or PromptTask(model, tok, ...)
    features = task.encode_images(images)                         # cached once
    losses = task.losses(W, features, labels)                     # a population, batched

In layers, each importing only those below it: engine/ (the text tower, its precision, the
encoders and the backends), families/ (one adapter per CLIP family, and load_model), task/
(PromptTask, the low-rank prompt, the heads and their ensemble), data/ (data sets and the
synthetic tasks, beside the others) and runs/ (what `sharpzo-ext train`, `eval` and `compare`
run: configuration, the method table, preparation, the run loop, run directories, compare).
"""

from sharpzo_ext.clip import moved
from sharpzo_ext.clip.engine import Engine
from sharpzo_ext.clip.families import LoadedModel, ModelError, load_model
from sharpzo_ext.clip.task.prompt_task import PromptTask

moved.install()  # the module paths of 0.1.0, for one release

__all__ = ["Engine", "LoadedModel", "ModelError", "PromptTask", "load_model"]
