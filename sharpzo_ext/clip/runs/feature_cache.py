"""Image features computed once per model, weights and data, cached on disk as safetensors:
every split's features at every stage (task/features.py), and the training images' features
averaged over their views (data/views.py), one file each, keyed by what they were computed
from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
import weakref
from pathlib import Path
from typing import Callable

import torch

from sharpzo_ext import loaded as loaded_values

from sharpzo_ext.clip.data.datasets import Dataset, load_images
from sharpzo_ext.clip.data.views import RECIPE, Views
from sharpzo_ext.clip.families import LoadedModel
from sharpzo_ext.clip.runs.config import RunError
from sharpzo_ext.clip.task.features import Features, encode
from sharpzo_ext.files import atomic_path, writable_problem

__all__ = ["FeatureCache"]

_BATCH = 256
# 2: Hugging Face CLIPs' images preprocessed as CLIPImageProcessor does (hf_preprocess.py)
# 3: every stage of the image features (final and pre-projection), views shifted then flipped
FORMAT = 3


def _key(model: LoadedModel, data: Dataset, split: str, views: dict | None) -> str:
    items, labels = data.splits[split]
    described = [item if isinstance(item, Path) else None for item in items]
    spec = {"model": model.identity, "data": data.identity, "split": split,
            "items": [str(d) if d is not None else i for i, d in enumerate(described)],
            "labels": labels, "format": FORMAT}
    if views is not None:
        spec["views"] = {**views, "recipe": RECIPE}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


# Note [A damaged cache file is computed again]
# A cache file is used only if it holds what the features of its key are: every stage the model
# gives and no other, float32, one row per image, each stage as wide as the model's (read off one
# image encoded, once per model), every value finite and every row a unit vector (the features
# are L2-normalized). A file that fails (damaged on disk, edited, written by another version) is
# computed again and replaced, with a warning that names it; it never reaches a head as NaN,
# zeros or a scale that reports chance accuracy (Note [Loaded values are checked]).
_WIDTHS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, int]]" = weakref.WeakKeyDictionary()


def _widths(loaded: LoadedModel, data: Dataset, split: str, device) -> dict[str, int]:
    """{stage: width} of the model's features, from one image of `split` (once per model)."""
    if loaded.model not in _WIDTHS:
        image = load_images(data.splits[split][0][:1], loaded.preprocess).to(device)
        features = encode(loaded.family, loaded.model, image)
        _WIDTHS[loaded.model] = {k: v.shape[1] for k, v in features.tensors().items()}
    return _WIDTHS[loaded.model]


def _problem(tensors: dict[str, torch.Tensor], rows: int, widths: dict[str, int]) -> str | None:
    """Why `tensors` are not the features of `rows` images at `widths`, or None."""
    if set(tensors) != set(widths):
        return f"holds {sorted(tensors)}, not the stages {sorted(widths)}"
    try:
        for stage, x in tensors.items():
            loaded_values.tensor(x, stage, (rows, widths[stage]), torch.float32)
            if rows and float((x.norm(dim=1) - 1).abs().max()) > 1e-3:
                raise loaded_values.BadValue(stage, "holds rows that are not unit vectors")
    except loaded_values.BadValue as error:
        return str(error)
    return None


# Note [Cached features in aligned memory]
# safetensors hands back tensors that point into the file's bytes, after its header: on the CPU
# they start wherever the header ends (24 bytes past a 64-byte boundary for these files), where
# freshly computed features start on one. MKL's float32 products take another path on
# unaligned operands and round differently in the last bit, so a run that read its features
# from the cache drifted from the same run that computed them (an image's prediction flipped
# mid-run for the image-side adapter). The features read are copied (once, onto the run's
# device) into memory torch allocates, aligned like computed ones: a run is the same, bit for
# bit, with a cold or a warm cache.
def _cached(path: Path | None, rows: int, widths: Callable[[], dict[str, int]],
            device) -> Features | None:
    """The features a cache file holds, or None if there is none or it is damaged (Note [A
    damaged cache file is computed again])."""
    from safetensors.torch import load_file  # noqa: PLC0415

    if path is None or rows == 0 or not path.is_file():
        return None  # (no images: nothing to compute)
    try:
        tensors = load_file(str(path))
    except Exception as error:  # noqa: BLE001 (whatever is unreadable is computed again)
        problem = f"cannot be read ({error})"
    else:
        problem = _problem(tensors, rows, widths())
        if problem is None:  # Note [Cached features in aligned memory]
            return Features.from_tensors({k: v.to(device, copy=True) for k, v in tensors.items()})
    warnings.warn(f"the feature cache file {path} is damaged: {problem}; computing it again",
                  stacklevel=3)
    return None


def _store(path: Path | None, features: Features) -> None:
    from safetensors.torch import save_file  # noqa: PLC0415

    if path is not None:
        path.unlink(missing_ok=True)  # damaged: replaced
        with atomic_path(path) as tmp:
            save_file({k: v.cpu().contiguous() for k, v in features.tensors().items()}, str(tmp))


def _cat(parts: list[Features], device) -> Features:
    return Features.cat(parts) if parts else Features(torch.empty(0, 0, device=device))


def _mean(total: dict[str, torch.Tensor]) -> Features:
    return Features.from_tensors({k: torch.nn.functional.normalize(v, dim=-1)
                                  for k, v in total.items()})


@dataclasses.dataclass(frozen=True)
class FeatureCache:
    """The image features of one model on one data set's images: read from the cache
    `directory` (None: no cache), or computed on `device` by the frozen image tower in batches
    (with progress bars if `progress`) and written there, atomically."""
    loaded: LoadedModel
    data: Dataset
    directory: Path | None
    device: torch.device | str = "cpu"
    progress: bool = True

    def split(self, split: str) -> tuple[Features, bool]:
        """(features of every stage, whether they came from the cache) of a split."""
        loaded, items = self.loaded, self.data.splits[split][0]
        path = self._path(split, None, f"{split} features")
        hit = _cached(path, len(items), lambda: self._widths(split), self.device)
        if hit is not None:
            return hit, True
        parts = [encode(loaded.family, loaded.model,
                        load_images(items[i:i + _BATCH], loaded.preprocess).to(self.device))
                 for i in self._batches(len(items), f"{split} images")]
        features = _cat(parts, self.device)
        _store(path, features)
        return features, False

    def views(self, count: int, seed: int,
              augments: tuple[str, ...]) -> dict[str, tuple[Features, bool]]:
        """{augment: (the training images' features averaged over `count` views of that kind,
        drawn from `seed`, whether they came from the cache)} for augments among "shift" and
        "flip-shift" (Note [Views for a head]); each average is the normalized mean of the
        views' normalized features. The kinds not cached are computed in one pass over the
        images: every shift view is encoded, and a flip-shift view takes those encodings for the
        images it does not mirror and encodes the mirrored ones, whichever kinds are asked for
        (so a kind's features never depend on what is computed beside it, and both cost 1.5
        times one)."""
        loaded, device, items = self.loaded, self.device, self.data.splits["train"][0]
        out, paths = {}, {}
        for augment in augments:
            record = {"count": count, "seed": seed, "augment": augment}
            paths[augment] = self._path("train", record,
                                        f"{count} {augment} views of the training images")
            hit = _cached(paths[augment], len(items), lambda: self._widths("train"), device)
            if hit is not None:
                out[augment] = hit, True
        need = [a for a in augments if a not in out]
        if not need:
            return out
        drawn = Views(count, len(items), seed)
        parts: dict[str, list[Features]] = {a: [] for a in need}
        what = f"{count} {' and '.join(need)} views of the training images"
        for i in self._batches(len(items), what):
            images = load_images(items[i:i + _BATCH], loaded.preprocess).to(device)
            totals: dict[str, dict[str, torch.Tensor]] = {a: {} for a in need}
            for view in range(count):
                shifted = drawn.shifted(view, images, i)
                encoded = {"shift": encode(loaded.family, loaded.model, shifted).tensors()}
                if "flip-shift" in need:
                    flips = drawn.flips(view, i, images.shape[0]).to(device)
                    encoded["flip-shift"] = dict(encoded["shift"])
                    if bool(flips.any()):
                        mirrored = encode(loaded.family, loaded.model, shifted[flips].flip(-1))
                        for stage, x in mirrored.tensors().items():
                            encoded["flip-shift"][stage] = encoded["shift"][stage].index_put(
                                (flips,), x)
                for augment in need:
                    for stage, x in encoded[augment].items():
                        totals[augment][stage] = totals[augment].get(stage, 0) + x
            for augment in need:
                parts[augment].append(_mean(totals[augment]))
        for augment in need:
            features = _cat(parts[augment], device)
            _store(paths[augment], features)
            out[augment] = features, False
        return out

    def _widths(self, split: str) -> dict[str, int]:
        return _widths(self.loaded, self.data, split, self.device)

    def _path(self, split: str, views: dict | None, what: str) -> Path | None:
        if self.directory is None:
            return None
        key = _key(self.loaded, self.data, split, views)
        path = Path(self.directory) / f"features-{key}.safetensors"
        problem = writable_problem(path.parent)
        if problem and not path.is_file():  # said before the features are computed, not after
            raise RunError(f"the feature cache cannot keep the {what}: {problem}; pass a "
                           "writable --cache-dir")
        return path

    def _batches(self, n: int, what: str):
        batches = range(0, n, _BATCH)
        if self.progress:
            from tqdm import tqdm  # noqa: PLC0415

            batches = tqdm(batches, desc=f"encoding {what}", unit="batch", leave=False)
        return batches
