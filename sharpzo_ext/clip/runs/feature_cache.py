"""Image features computed once per model, weights and data, cached on disk as safetensors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from sharpzo_ext.clip.data.datasets import Dataset, load_images
from sharpzo_ext.clip.families import LoadedModel
from sharpzo_ext.clip.task.prompt_task import PromptTask
from sharpzo_ext.clip.data.views import RECIPE, Views
from sharpzo_ext.clip.runs.config import RunError
from sharpzo_ext.files import atomic_path, writable_problem

__all__ = ["split_features"]

_BATCH = 256
# 2: Hugging Face CLIPs' images preprocessed as CLIPImageProcessor does (hf_preprocess.py)
FORMAT = 2


def _key(model: LoadedModel, data: Dataset, split: str, views: int, seed: int) -> str:
    items, labels = data.splits[split]
    described = [item if isinstance(item, Path) else None for item in items]
    spec = {"model": model.identity, "data": data.identity, "split": split,
            "items": [str(d) if d is not None else i for i, d in enumerate(described)],
            "labels": labels, "format": FORMAT}
    if views > 1:
        spec["views"] = {"count": views, "seed": seed, "recipe": RECIPE}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def split_features(task: PromptTask, model: LoadedModel, data: Dataset, split: str,
                   cache_dir: str | Path | None,
                   progress: bool = True, views: int = 1,
                   seed: int = 0) -> tuple[torch.Tensor, bool]:
    """(features (N, E), whether they came from the cache) of a split: read from the cache, or
    computed by the frozen image tower in batches (with a progress bar) and written to it
    (atomically). A cache file that cannot be read, or holds another number of rows than the
    split has images, is recomputed. cache_dir None: no cache. With views > 1, each image's
    feature is the normalized mean of its `views` views' (data/views.py, drawn from `seed`)."""
    from safetensors.torch import load_file, save_file  # noqa: PLC0415

    items = data.splits[split][0]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"features-{_key(model, data, split, views, seed)}.safetensors"
        if path.is_file():
            try:
                features = load_file(str(path))["features"]
                if features.dim() == 2 and features.shape[0] == len(items):
                    return features.to(task.device), True
            except Exception:  # noqa: BLE001 (a damaged cache file is recomputed)
                pass
        problem = writable_problem(path.parent)
        if problem:  # said before the features are computed, not after
            raise RunError(f"the feature cache cannot keep the {split} features: {problem}; "
                           "pass a writable --cache-dir")
        path.unlink(missing_ok=True)  # damaged, or of other rows: recomputed
    batches = range(0, len(items), _BATCH)
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        what = f"{split} images" if views == 1 else f"{views} views of the {split} images"
        batches = tqdm(batches, desc=f"encoding {what}", unit="batch", leave=False)
    drawn = Views(views, len(items), seed)
    features = []
    for i in batches:
        images = load_images(items[i:i + _BATCH], model.preprocess)
        total = sum(task.encode_images(drawn.apply(v, images, i)) for v in range(views))
        features.append(torch.nn.functional.normalize(total, dim=-1) if views > 1 else total)
    features = torch.cat(features) if features else torch.empty(0)
    if path is not None:
        with atomic_path(path) as tmp:
            save_file({"features": features.cpu().contiguous()}, str(tmp))
    return features, False
