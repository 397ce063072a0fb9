"""A run's method made ready (Method): what it tunes (task/tuned.py: the prompt task that
prepare.make_task builds, the image-side adapter, or both), its optimizer (from the method
table, method_table.py), its objective and its head.

A forward-only method's objective is a Population (the tuned thing's batched losses, split
across the processes of a distributed run); a first-order method's, a standard torch.optim
closure that runs a forward and a backward pass (coop's through the text tower, clip-adapter's
through the adapter alone). With a head (config.head_kind), the objective adds the head's
cross-fitted logits to the tuned logits (task/ensemble.py); a head-only method has no
optimizer and no objective: the zero-shot prompt with its head.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from sharpzo_ext import distributed
from sharpzo_ext.clip.data.views import AUGMENTS
from sharpzo_ext.clip.runs.config import RunError, TrainConfig
from sharpzo_ext.clip.runs.method_table import Kind
from sharpzo_ext.clip.runs.prepare import Prepared
from sharpzo_ext.clip.task import ensemble as ensemble_lib
from sharpzo_ext.clip.task.adapter import ImageAdapter
from sharpzo_ext.clip.task.features import StageError
from sharpzo_ext.clip.task.heads import HeadError
from sharpzo_ext.clip.task.joint import PromptAndAdapter
from sharpzo_ext.clip.task.prompt_task import PromptTask
from sharpzo_ext.clip.task.tuned import Tuned
from sharpzo_ext.optim import Population
from sharpzo_ext.optim.base import ForwardOnlyOptimizer

__all__ = ["Method", "make_tuned", "make_objective", "make_ensemble", "head_candidates",
           "image_encodings", "build", "forward_passes"]


def make_tuned(config: TrainConfig, task: PromptTask, p: Prepared) -> Tuned:
    """What config.method tunes (config.tuned): `task` itself, the image-side adapter beside
    it (scored against its zero-shot class features), or both; RunError if the model's image
    features have no pre-projection stage or the adapter's dimension does not fit."""
    what = config.tuned
    if what in (None, "prompt"):
        return task
    pre = p.features["train"].pre
    if pre is None:
        raise RunError(f"tuning the {what} needs the image tower's pre-projection features, "
                       f"which this model's family does not give; use --tune prompt")
    width = p.features["train"].final.shape[1]
    if config.adapter_dim > pre.shape[1] * width:
        raise RunError(f"adapter_dim must be at most the size of the map it spans, {pre.shape[1]} "
                       f"x {width} = {pre.shape[1] * width}, got {config.adapter_dim}")
    adapter = ImageAdapter.beside(task, pre.shape[1], config.adapter_dim, config.seed)
    return adapter if what == "adapter" else PromptAndAdapter(task, adapter)


def make_objective(p: Prepared, tuned: Tuned, w: torch.Tensor,
                   optimizer: torch.optim.Optimizer, world: int = 1,
                   offset: torch.Tensor | None = None) -> Callable | Population:
    """What `optimizer.step` is called with, over the prepared training images: a first-order
    method's closure (forward and backward pass), or the training loss as a Population (one call
    per candidate unless config.batched; split across the `world` processes of a distributed run
    by candidates or by images, config.shard). `offset`: logits (N, C) added to the tuned logits
    of every image (a head's)."""
    config, features, labels = p.config, p.features["train"], p.labels["train"]
    if config.spec.kind == Kind.FIRST_ORDER:
        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = tuned.loss(w, features, labels, offset)
            loss.backward()
            return loss
        return closure
    if not config.batched:  # as the released SharpZO code: a text-tower call per candidate
        return Population(
            lambda W: torch.stack([tuned.loss(row, features, labels, offset) for row in W]))
    if world == 1:
        return tuned.objective(features, labels, offset)
    if config.shard == "population":
        return distributed.PopulationShard(tuned.objective(features, labels, offset))
    mine = distributed.shard(labels.numel())
    return distributed.DataShard(
        tuned.objective(features[mine], labels[mine], None if offset is None else offset[mine]),
        weight=(mine.stop - mine.start) / labels.numel())


def head_candidates(config: TrainConfig, p: Prepared) -> list[tuple[str, str]]:
    """The (stage, augment) pairs a head is fitted on, in order (Note [Ensembling a head]): the
    configured ones, or with "auto" every stage the features have and every kind of views (only
    the image itself with head_views 1)."""
    stages = (p.features["train"].stages if config.head_features == "auto"
              else (config.head_features,))
    augments = ((("none",) if config.head_views == 1 else AUGMENTS)
                if config.head_augment == "auto" else (config.head_augment,))
    return [(stage, augment) for stage in stages for augment in augments]


def image_encodings(p: Prepared) -> int:
    """Encodings of each training image that the head's views cost (Note [Counting passes]):
    head_views for each kind of views among its candidates (0 without a head)."""
    if p.config.head_kind is None:
        return 0
    kinds = {augment for _, augment in head_candidates(p.config, p) if augment != "none"}
    return p.config.head_views * len(kinds)


def make_ensemble(config: TrainConfig, task: PromptTask,
                  p: Prepared) -> ensemble_lib.Ensemble | None:
    """The head of config.head_kind fitted to the prepared data on each of its candidates, the
    one chosen on validation beside the zero-shot prompt (None without a head), or RunError
    saying why it cannot be. A head-only method keeps the weight chosen with it; a tuned one is
    trained against the head's cross-fitted logits, and gets its weight when its run ends."""
    kind = config.head_kind
    if kind is None:
        return None
    if "val" not in p.features:
        raise RunError(f"the {kind} head's temperature and weight are chosen on validation, "
                       "and the data has no val split (no class has an image to spare); tune "
                       "the prompt alone with --head none")
    try:
        pairs = head_candidates(config, p)
        p.head_features(tuple(dict.fromkeys(augment for _, augment in pairs)))  # in one pass
        candidates = [p.head(kind, stage, augment, tuned=False) for stage, augment in pairs]
        with torch.no_grad():
            zero_shot = task.logits(task.zero_vector().reshape(1, -1), p.features["val"])[0]
        best = ensemble_lib.choose(candidates, zero_shot, p.labels["val"])
        if config.tunes_anything:
            tuned = p.head(kind, best.stage, best.augment, tuned=True)
            best = dataclasses.replace(tuned, choices=best.choices)
    except (HeadError, StageError) as error:
        raise RunError(f"head {kind}: {error}") from None
    return best


@dataclasses.dataclass
class Method:
    """A method ready to run: what it tunes and its vector, what tunes it and what it evaluates
    (None for a head-only method), and its head (None without one)."""
    tuned: Tuned
    w: torch.nn.Parameter
    optimizer: torch.optim.Optimizer | None
    objective: Callable | Population | None
    ensemble: ensemble_lib.Ensemble | None = None


def build(config: TrainConfig, task: PromptTask, p: Prepared, world: int = 1,
          head: ensemble_lib.Ensemble | None = None) -> Method:
    """`config.method` on what it tunes beside `task` (make_task's for the same config), from
    its zero vector (zero-shot), with its head fitted to the prepared data, or the saved one
    (`head`) of a run that resumes."""
    fitted = make_ensemble(config, task, p) if head is None else head
    tuned = make_tuned(config, task, p)
    w = torch.nn.Parameter(tuned.zero_vector())
    if not config.tunes_anything:
        return Method(tuned, w, None, None, fitted)
    optimizer = config.spec.optimizer(config, [w])
    offset = None if fitted is None else fitted.offset()
    return Method(tuned, w, optimizer,
                  make_objective(p, tuned, w, optimizer, world, offset), fitted)


def forward_passes(optimizer: torch.optim.Optimizer | None) -> int:
    """The budget a method has spent: a forward-only optimizer's objective evaluations, or a
    first-order optimizer's steps (a forward and a backward pass each); 0 without one."""
    if optimizer is None:
        return 0
    if isinstance(optimizer, ForwardOnlyOptimizer):
        return optimizer.forward_passes
    return max((int(s["step"]) for s in optimizer.state.values() if "step" in s), default=0)
