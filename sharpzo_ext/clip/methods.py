"""The tuning methods of a run: for each, its prompt task, its optimizer and its objective.

Forward-only methods (sharpzo, zosgd, sparsezo, cmaes, zip, spsa-gc) tune the intrinsic vector w
with a sharpzo_ext optimizer and a Population objective (the task's batched losses, split across
the processes of a distributed run). zip is ZIP: its low-rank prompt (low_rank.py) tuned by SPSA
with intrinsic-dimensional clipping; spsa-gc is BlackVIP's optimizer, SPSA with gradient
correction, on the same prompt as the others; both with their published constants
(optim/spsa.py; Note [SPSA-GC's step size]). coop, the first-order reference, tunes the context
vectors themselves with torch.optim.Adam and a standard torch.optim closure that runs a forward
and a backward pass through the text tower.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

import sharpzo_ext as sz
from sharpzo_ext import distributed
from sharpzo_ext.clip import low_rank, text_tower
from sharpzo_ext.clip.config import TrainConfig
from sharpzo_ext.clip.models import LoadedModel
from sharpzo_ext.clip.prompt_task import PromptTask, check_vocabulary
from sharpzo_ext.optim.base import ForwardOnlyOptimizer

# Note [SPSA-GC's step size]: BlackVIP's a = 0.01 is for its coordinator network's weights; on
# the linear intrinsic prompt it leaves zero-shot where it was (26.9% validation accuracy on
# embedded-grainy, seed 0, 5000 forward passes). a = 1.0, the best of {0.01, 0.1, 1} there
# (35.6%), is the one used. ZIP's own constants were already the best of the three for ZIP.
SPSA_GC_STEP = 1.0

__all__ = ["Method", "make_task", "make_optimizer", "make_objective", "build", "forward_passes"]


def make_task(config: TrainConfig, loaded: LoadedModel, classnames: list[str]) -> PromptTask:
    """The prompt task of `config.method` (coop: no projection, the context is tuned)."""
    width = text_tower.width(loaded.model)
    n_ctx = (int((loaded.tokenizer([config.ctx_init])[0] != 0).sum()) - 2 if config.ctx_init
             else config.n_ctx)
    # the paper's d = 512 for CLIP ViT-B/16 (context 4 x 512); half the context size for
    # smaller text towers, where 512 would exceed the context itself
    intrinsic = None if config.method == "coop" else (
        config.intrinsic_dim or min(512, n_ctx * width // 2))
    if loaded.known_tokens is not None:
        prefix = config.ctx_init or ""
        check_vocabulary(loaded.tokenizer, [f"{prefix} {name}." for name in classnames],
                         loaded.known_tokens)
    return PromptTask(loaded.model, loaded.tokenizer, classnames, n_ctx=config.n_ctx,
                      ctx_init=config.ctx_init, intrinsic_dim=intrinsic, seed=config.seed,
                      device=config.device, precision=config.precision, backend=config.backend,
                      cache_dir=config.cache_dir,
                      rank=low_rank.RANK if config.method == "zip" else None)


def make_optimizer(config: TrainConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    c = config
    if c.method == "coop":
        return torch.optim.Adam(params, lr=c.coop_lr)
    if c.method == "cmaes":
        return sz.optim.CMAES(params, sigma=c.sigma, popsize=c.popsize, seed=c.seed)
    if c.method == "zosgd":
        return sz.optim.ZOSGD(params, lr=c.lr, eps=c.eps, q=c.q, seed=c.seed)
    if c.method == "zip":
        return sz.optim.SPSA(params, rule="clip", seed=c.seed)
    if c.method == "spsa-gc":
        return sz.optim.SPSA(params, a=SPSA_GC_STEP, rule="gc", seed=c.seed)
    if c.method == "sparsezo":
        return sz.optim.SparseZO(params, lr=c.lr, eps=c.eps, q=c.q, density=c.density, seed=c.seed)
    return sz.optim.SharpZO(params, lr=c.lr, eps=c.eps, sigma=c.sigma, popsize=c.popsize,
                            rho=c.rho, switch_step=c.switch_step, sharpness=c.sharpness,
                            sharpness_queries=c.sharpness_queries, density=c.density,
                            seed=c.seed, q=c.q)


def make_objective(config: TrainConfig, task: PromptTask, w: torch.Tensor,
                   optimizer: torch.optim.Optimizer, features: torch.Tensor,
                   labels: torch.Tensor, world: int = 1) -> Callable | sz.optim.Population:
    """What `optimizer.step` is called with: coop's closure (forward and backward pass), or the
    training loss as a Population (one call per candidate unless config.batched; split across
    the `world` processes of a distributed run by candidates or by images, config.shard)."""
    if config.method == "coop":
        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = task.loss(w, features, labels)
            loss.backward()
            return loss
        return closure
    if not config.batched:  # as the released SharpZO code: a text-tower call per candidate
        return sz.optim.Population(
            lambda W: torch.stack([task.loss(row, features, labels) for row in W]))
    if world == 1:
        return task.objective(features, labels)
    if config.shard == "population":
        return distributed.PopulationShard(task.objective(features, labels))
    mine = distributed.shard(labels.numel())
    return distributed.DataShard(task.objective(features[mine], labels[mine]),
                                 weight=(mine.stop - mine.start) / labels.numel())


@dataclasses.dataclass
class Method:
    """A method ready to run: the trainable vector, what tunes it, and what it evaluates."""
    task: PromptTask
    w: torch.nn.Parameter
    optimizer: torch.optim.Optimizer
    objective: Callable | sz.optim.Population


def build(config: TrainConfig, task: PromptTask, features: torch.Tensor, labels: torch.Tensor,
          world: int = 1) -> Method:
    """`config.method` on `task` (make_task's for the same config) from w = 0 (zero-shot)."""
    w = torch.nn.Parameter(task.zero_vector())
    optimizer = make_optimizer(config, [w])
    return Method(task, w, optimizer,
                  make_objective(config, task, w, optimizer, features, labels, world))


def forward_passes(optimizer: torch.optim.Optimizer) -> int:
    """The budget a method has spent: a forward-only optimizer's objective evaluations, or a
    first-order optimizer's steps (a forward and a backward pass each)."""
    if isinstance(optimizer, ForwardOnlyOptimizer):
        return optimizer.forward_passes
    return max((int(s["step"]) for s in optimizer.state.values() if "step" in s), default=0)
