"""Everything a run needs before its first step: the model, the data, the prompt task and the
image features of every split at every stage (from the feature cache when it has them), and on
demand the averaged views of the training images that a head is fitted to."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from sharpzo_ext import files
from sharpzo_ext.clip.data import datasets as data_lib
from sharpzo_ext.clip.families import LoadedModel, load_model
from sharpzo_ext.clip.runs.config import RunError, TrainConfig
from sharpzo_ext.clip.runs.feature_cache import FeatureCache
from sharpzo_ext.clip.runs.method_table import Prompt
from sharpzo_ext.clip.task import ensemble as ensemble_lib
from sharpzo_ext.clip.task import low_rank
from sharpzo_ext.clip.task.ensemble import Ensemble
from sharpzo_ext.clip.task.features import Features
from sharpzo_ext.clip.task.prompt_task import PromptTask

__all__ = ["Prepared", "prepare", "make_task", "load_data", "EVAL_SPLITS"]

EVAL_SPLITS = ("val", "test", "shifted")  # evaluated during a run, when the data has them


@dataclasses.dataclass
class Prepared:
    config: TrainConfig
    loaded: LoadedModel
    data: data_lib.Dataset
    task: PromptTask                  # the prompt task of config.method
    features: dict[str, Features]     # every split's, at every stage the family has
    labels: dict[str, torch.Tensor]
    cache_hits: dict[str, bool]
    images: FeatureCache              # where the features above came from, and more on demand
    _views: dict[str, Features] = dataclasses.field(default_factory=dict)
    _heads: dict[tuple, Ensemble] = dataclasses.field(default_factory=dict)

    def eval_splits(self) -> list[str]:
        return [split for split in EVAL_SPLITS if split in self.features]

    def head_features(self, augments: tuple[str, ...]) -> dict[str, Features]:
        """{augment: the training images' features averaged over config.head_views views of
        that kind (data/views.py)}, what a head is fitted to ("none": their own features):
        computed (or read from the cache) when first asked for, the missing kinds in one
        pass."""
        missing = [a for a in augments if a != "none" and a not in self._views]
        if missing:
            views = self.config.head_views
            for augment, (features, hit) in self.images.views(views, self.config.seed,
                                                              tuple(missing)).items():
                self._views[augment] = features
                self.cache_hits[f"train-{views}-{augment}-views"] = hit
        return {a: self.features["train"] if a == "none" else self._views[a] for a in augments}

    def head(self, kind: str, stage: str, augment: str, tuned: bool) -> Ensemble:
        """The head `kind` fitted to the training images' `stage` features averaged over views
        of kind `augment`, calibrated on validation (ensemble.fit), and with `tuned` its
        training images' cross-fitted logits (ensemble.tuned_against): fitted once, shared by
        every method on these prepared data (the methods of a comparison fit the same heads)."""
        key = (kind, stage, augment, tuned)
        if key not in self._heads:
            features = self.head_features((augment,))[augment].stage(stage)
            labels, classes = self.labels["train"], len(self.data.classnames)
            if tuned:
                self._heads[key] = ensemble_lib.tuned_against(
                    self.head(kind, stage, augment, False), features, labels, classes,
                    self.features["train"])
            else:
                self._heads[key] = ensemble_lib.fit(kind, stage, augment, features, labels,
                                                    classes, self.features, self.labels["val"])
        return self._heads[key]


def make_task(config: TrainConfig, loaded: LoadedModel, classnames: list[str]) -> PromptTask:
    """The prompt task of `config.method`, with the prompt its row of the method table names
    (intrinsic, the context itself, or ZIP's low-rank factors); RunError if the task refuses
    the configuration's prompt."""
    prompt = config.spec.prompt
    intrinsic = None if prompt == Prompt.CONTEXT else (config.intrinsic_dim or "auto")
    try:
        return PromptTask.of(loaded, classnames, n_ctx=config.n_ctx, ctx_init=config.ctx_init,
                             intrinsic_dim=intrinsic, seed=config.seed, device=config.device,
                             rank=low_rank.RANK if prompt == Prompt.LOW_RANK else None,
                             engine=config.engine)
    except ValueError as error:
        raise RunError(f"cannot build the prompt task: {error}") from None


def load_data(config: TrainConfig) -> data_lib.Dataset:
    if config.dataset is not None:
        full = data_lib.coop_dataset(config.dataset, config.data)
    elif config.data in data_lib.BUILTIN_TASKS:
        return data_lib.builtin_task(config.data, config.shots, config.seed)
    else:
        full = data_lib.image_folder(config.data, seed=config.seed)
    return data_lib.few_shot(full, config.shots, config.seed)


def prepare(config: TrainConfig, progress: bool = True) -> Prepared:
    config.check()
    loaded = load_model(config.model, config.pretrained, config.device)
    data = load_data(config)
    task = make_task(config, loaded, data.classnames)
    cache = Path(config.cache_dir) if config.cache_dir is not None else files.default_cache_dir()
    images = FeatureCache(loaded, data, cache, task.device, progress)
    features, labels, hits = {}, {}, {}
    for split in data.splits:
        features[split], hits[split] = images.split(split)
        labels[split] = data.labels(split).to(task.device)
    return Prepared(config, loaded, data, task, features, labels, hits, images)
