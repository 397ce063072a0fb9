"""The configuration of a prompt-tuning run (what `sharpzo-ext train` resolves and saves)."""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["TrainConfig", "RunError", "METHODS", "FORWARD_ONLY"]

FORWARD_ONLY = ("sharpzo", "zosgd", "sparsezo", "cmaes")
METHODS = FORWARD_ONLY + ("coop",)  # coop: first-order CoOp, the reference upper bound


class RunError(Exception):
    """A run that cannot start or continue (bad configuration, run directory in the way)."""


@dataclasses.dataclass
class TrainConfig:
    model: str = "embedded"
    pretrained: str | None = None
    data: str = "embedded"          # "embedded[-cluttered]", an ImageFolder tree, or CoOp's root
    dataset: str | None = None      # a CoOp data set name (with data = CoOp's root)
    shots: int = 16
    method: str = "sharpzo"
    budget: int = 20000             # forward passes (loss evaluations); coop: steps
    seed: int = 0
    device: str = "cpu"
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    intrinsic_dim: int | None = None  # None: min(512, context size / 2); coop: the context itself
    eval_every: int = 500
    cache_dir: str | None = None      # None: $SHARPZO_EXT_CACHE or ~/.cache/sharpzo_ext
    shard: str = "population"         # under torchrun: split the "population" or the "data"
    batched: bool = True              # a population in batched calls; False: one call per row
    # optimizer hyperparameters (each method uses the ones it has)
    lr: float = 0.05
    eps: float = 0.01
    sigma: float = 0.6
    popsize: int = 20
    rho: float = 0.05
    switch_step: int = 150
    sharpness: str = "rge"
    sharpness_queries: int = 2
    q: int = 4
    density: float = 0.5
    coop_lr: float = 2e-3             # Adam's learning rate for coop

    def check(self) -> None:
        if self.method not in METHODS:
            raise RunError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("shots", "budget", "eval_every", "popsize", "q"):
            if getattr(self, name) < 1:
                raise RunError(f"{name} must be >= 1, got {getattr(self, name)}")
        cuda = self.device.startswith("cuda") and torch.cuda.is_available()
        if self.device != "cpu" and not cuda:
            raise RunError(f"device {self.device!r} is not available")
        if self.shard not in ("population", "data"):
            raise RunError(f"shard must be 'population' or 'data', got {self.shard!r}")
