"""A run's method made ready (Method): its optimizer (from the method table,
method_table.py), its objective and its head; its prompt task is prepare.make_task's.

A forward-only method's objective is a Population (the task's batched losses, split across the
processes of a distributed run); coop's, a standard torch.optim closure that runs a forward and
a backward pass through the text tower. With a head (config.head_kind), the objective adds the
head's cross-fitted logits to the text logits (task/ensemble.py); a head-only method has no
optimizer and no objective: the zero-shot prompt with its head.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from sharpzo_ext import distributed
from sharpzo_ext.optim import Population
from sharpzo_ext.clip.task import ensemble as ensemble_lib
from sharpzo_ext.clip.runs.config import RunError, TrainConfig
from sharpzo_ext.clip.task.heads import HeadError
from sharpzo_ext.clip.runs.prepare import Prepared
from sharpzo_ext.clip.task.prompt_task import PromptTask
from sharpzo_ext.optim.base import ForwardOnlyOptimizer

__all__ = ["Method", "make_objective", "make_ensemble", "build", "forward_passes"]


def make_objective(config: TrainConfig, task: PromptTask, w: torch.Tensor,
                   optimizer: torch.optim.Optimizer, features: torch.Tensor,
                   labels: torch.Tensor, world: int = 1,
                   offset: torch.Tensor | None = None) -> Callable | Population:
    """What `optimizer.step` is called with: coop's closure (forward and backward pass), or the
    training loss as a Population (one call per candidate unless config.batched; split across
    the `world` processes of a distributed run by candidates or by images, config.shard).
    `offset`: logits (N, C) added to the text logits of every image (a head's)."""
    if config.spec.kind == "first-order":
        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = task.loss(w, features, labels, offset)
            loss.backward()
            return loss
        return closure
    if not config.batched:  # as the released SharpZO code: a text-tower call per candidate
        return Population(
            lambda W: torch.stack([task.loss(row, features, labels, offset) for row in W]))
    if world == 1:
        return task.objective(features, labels, offset)
    if config.shard == "population":
        return distributed.PopulationShard(task.objective(features, labels, offset))
    mine = distributed.shard(labels.numel())
    return distributed.DataShard(
        task.objective(features[mine], labels[mine], None if offset is None else offset[mine]),
        weight=(mine.stop - mine.start) / labels.numel())


def make_ensemble(config: TrainConfig, task: PromptTask,
                  p: Prepared) -> ensemble_lib.Ensemble | None:
    """The head of config.head_kind fitted to the prepared data (None without one), or
    RunError saying why it cannot be. A head-only method's weight is chosen on validation
    beside the zero-shot prompt now; a tuned prompt's, when its run ends."""
    kind = config.head_kind
    if kind is None:
        return None
    if "val" not in p.features:
        raise RunError(f"the {kind} head's temperature and weight are chosen on validation, "
                       "and the data has no val split (no class has an image to spare); tune "
                       "the prompt alone with --head none")
    try:
        fitted = ensemble_lib.fit(kind, p.head_features(), p.labels["train"],
                                  len(p.data.classnames), p.features, p.labels["val"],
                                  tuned=config.tunes_prompt)
    except HeadError as error:
        raise RunError(f"head {kind}: {error}") from None
    if not config.tunes_prompt:
        with torch.no_grad():
            zero_shot = task.logits(task.zero_vector().reshape(1, -1), p.features["val"])[0]
        fitted.weight = ensemble_lib.choose_weight(zero_shot, fitted.logits["val"],
                                                   p.labels["val"])
    return fitted


@dataclasses.dataclass
class Method:
    """A method ready to run: the trainable vector, what tunes it and what it evaluates (None
    for a head-only method), and its head (None without one)."""
    task: PromptTask
    w: torch.nn.Parameter
    optimizer: torch.optim.Optimizer | None
    objective: Callable | Population | None
    ensemble: ensemble_lib.Ensemble | None = None


def build(config: TrainConfig, task: PromptTask, p: Prepared, world: int = 1,
          head: dict | None = None) -> Method:
    """`config.method` on `task` (make_task's for the same config) from w = 0 (zero-shot),
    with its head fitted to the prepared data, or the saved one (`head`, an Ensemble's state)
    of a run that resumes."""
    fitted = (make_ensemble(config, task, p) if head is None
              else ensemble_lib.Ensemble.from_state(head, p.features))
    w = torch.nn.Parameter(task.zero_vector())
    if not config.tunes_prompt:
        return Method(task, w, None, None, fitted)
    optimizer = config.spec.optimizer(config, [w])
    offset = None if fitted is None else fitted.offset()
    return Method(task, w, optimizer,
                  make_objective(config, task, w, optimizer, p.features["train"],
                                 p.labels["train"], world, offset), fitted)


def forward_passes(optimizer: torch.optim.Optimizer | None) -> int:
    """The budget a method has spent: a forward-only optimizer's objective evaluations, or a
    first-order optimizer's steps (a forward and a backward pass each); 0 without one."""
    if optimizer is None:
        return 0
    if isinstance(optimizer, ForwardOnlyOptimizer):
        return optimizer.forward_passes
    return max((int(s["step"]) for s in optimizer.state.values() if "step" in s), default=0)
