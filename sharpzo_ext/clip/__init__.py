"""CLIP prompt tuning with forward passes only, over open_clip and Hugging Face CLIP models.

    loaded = sz.clip.load_model("ViT-B-16", pretrained="openai")   # or "embedded", "hf:DIR"
    task = sz.clip.PromptTask(loaded.model, loaded.tokenizer, classnames)
    features = task.encode_images(images)                         # cached once
    losses = task.losses(W, features, labels)                     # a population, batched

The command line (`sharpzo-ext train`) adds the data, the feature cache and the run directory:
config.py, prepare.py (model, data, features), methods.py (each method's task, optimizer and
objective), train.py (the run loop), run_dir.py (its files), evaluate.py, compare.py.
"""

from sharpzo_ext.clip.models import LoadedModel, ModelError, load_model
from sharpzo_ext.clip.prompt_task import PromptTask

__all__ = ["LoadedModel", "ModelError", "PromptTask", "load_model"]
