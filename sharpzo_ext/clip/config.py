"""The configuration of a prompt-tuning run (what `sharpzo-ext train` resolves and saves)."""

from __future__ import annotations

import dataclasses

import torch

import sharpzo_ext as sz
from sharpzo_ext import checks
from sharpzo_ext.clip import backend
from sharpzo_ext.clip.heads import HEADS

__all__ = ["TrainConfig", "RunError", "METHODS", "FORWARD_ONLY", "HEAD_CHOICES"]

FORWARD_ONLY = ("sharpzo", "zosgd", "sparsezo", "cmaes", "zip", "spsa-gc")
# coop: first-order CoOp, the reference upper bound; a head's name: that head on the zero-shot
# prompt, fitted in closed form with no tuning (ensemble.py)
METHODS = FORWARD_ONLY + ("coop",) + HEADS
HEAD_CHOICES = HEADS + ("none",)
MAX_HEAD_VIEWS = 256

# fields that older run directories lack, and the value that continues them as they ran
ADDED_LATER = {"batched": True, "coop_lr": 2e-3, "precision": "fp32", "backend": "torch",
               "head": "none", "head_views": 1}


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
    precision: str = "fp32"           # the text tower's linear layers: fp32, bf16 or int8 (CPU)
    backend: str = "torch"            # the text tower on "torch" or "onnxruntime" (CPU)
    head: str = "gda"                 # the prompt is tuned for this head (ensemble.py)
    head_views: int = 16              # views of each training image whose features a head
    #                                   averages (views.py)
    # optimizer hyperparameters (each method uses the ones it has)
    lr: float = 0.05
    eps: float = 0.01
    sigma: float = 0.6
    popsize: int = 20
    rho: float = 0.05
    switch_step: int = 150
    sharpness: str = "path"          # Note [Sharpness from the evolution path]
    sharpness_queries: int = 2
    q: int = 4
    density: float = 0.5
    coop_lr: float = 2e-3             # Adam's learning rate for coop

    @property
    def head_kind(self) -> str | None:
        """The head of the run: the method itself for a head-only method (whatever `head`
        says), else `head` (None for "none"): the head the prompt is tuned for."""
        if self.method in HEADS:
            return self.method
        return None if self.head == "none" else self.head

    @property
    def tunes_prompt(self) -> bool:
        return self.method not in HEADS

    def check(self) -> None:
        """Raises RunError, naming the field, unless every field is valid: a run refuses a
        configuration before it writes anything."""
        try:
            self._check()
        except (TypeError, ValueError) as error:
            raise RunError(f"invalid configuration: {error}") from None

    def _check(self) -> None:
        checks.choice(self.method, "method", METHODS)
        for name in ("shots", "budget", "eval_every", "n_ctx"):
            checks.integer(getattr(self, name), name, 1)
        checks.stream_integer(self.seed, "seed")
        if self.intrinsic_dim is not None:
            checks.integer(self.intrinsic_dim, "intrinsic_dim", 1)
        checks.real(self.coop_lr, "coop_lr", positive=True)
        checks.choice(self.shard, "shard", ("population", "data"))
        checks.choice(self.head, "head", HEAD_CHOICES)
        checks.integer(self.head_views, "head_views", 1, MAX_HEAD_VIEWS)
        # every forward-only hyperparameter, by the rules of the optimizer that takes it
        # (SharpZO takes them all), whichever method runs
        sz.optim.SharpZO([torch.zeros(2)], lr=self.lr, eps=self.eps, sigma=self.sigma,
                         popsize=self.popsize, rho=self.rho, switch_step=self.switch_step,
                         sharpness=self.sharpness, sharpness_queries=self.sharpness_queries,
                         density=self.density, q=self.q, seed=self.seed)
        cuda = self.device.startswith("cuda") and torch.cuda.is_available()
        if self.device != "cpu" and not cuda:
            raise ValueError(f"device {self.device!r} is not available")
        if self.method == "coop" and self.precision == "int8":
            raise ValueError("coop trains with gradients, which the int8 text tower has none "
                             "of; use precision fp32 or bf16")
        if self.method == "coop" and self.backend != "torch":
            raise ValueError(f"coop trains with gradients, which the {self.backend} backend "
                             "has none of; use backend torch")
        backend.check(self.backend, self.precision, torch.device(self.device),
                      share_prefix=self.backend == "torch")

    @classmethod
    def from_saved(cls, saved, source: str) -> "TrainConfig":
        """The configuration a run directory saved (config.json's contents), or RunError
        naming `source` if it is not a complete, valid one. Fields added after sharpzo_ext
        0.1.0 (ADDED_LATER) may be missing: they take the values those runs ran with."""
        if not isinstance(saved, dict):
            raise RunError(f"{source} is not a run configuration (a JSON object)")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - names)
        missing = sorted(names - set(saved) - set(ADDED_LATER))
        if unknown or missing:
            what = f"unknown fields {unknown}" if unknown else f"no {', '.join(missing)}"
            raise RunError(f"{source} is not a run configuration of this version: {what}")
        config = cls(**{**ADDED_LATER, **saved})
        try:
            config.check()
        except RunError as error:
            raise RunError(f"{source}: {error}") from None
        return config
