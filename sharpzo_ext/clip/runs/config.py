"""The configuration of a prompt-tuning run (what `sharpzo-ext train` resolves and saves)."""

from __future__ import annotations

import dataclasses

import torch

from sharpzo_ext.ops import checks
from sharpzo_ext.clip.engine import Engine
from sharpzo_ext.clip.data.views import AUGMENTS
from sharpzo_ext.clip.runs.method_table import METHODS, TUNED, MethodSpec
from sharpzo_ext.clip.task.adapter import DEFAULT_DIM as ADAPTER_DIM
from sharpzo_ext.clip.task.features import STAGES
from sharpzo_ext.clip.task.heads import HEADS
from sharpzo_ext.errors import UserError
from sharpzo_ext.optim.sharpzo import SHARPNESS

__all__ = ["TrainConfig", "RunError", "HEAD_CHOICES", "HEAD_FEATURES", "HEAD_AUGMENTS",
           "DEFAULT_TUNE", "HYPERPARAMETERS"]

HEAD_CHOICES = HEADS + ("none",)
HEAD_FEATURES = STAGES + ("auto",)    # auto: the stage chosen on validation
HEAD_AUGMENTS = AUGMENTS + ("auto",)  # auto: the views chosen on validation
MAX_HEAD_VIEWS = 256
DEFAULT_TUNE = "prompt"  # what a forward-only method tunes unless told (TUNED)

# fields that older run directories lack, and the value that continues them as they ran
ADDED_LATER = {"batched": True, "coop_lr": 2e-3, "precision": "fp32", "backend": "torch",
               "head": "none", "head_views": 1, "head_features": "final",
               "head_augment": "flip-shift", "tune": "prompt", "adapter_dim": ADAPTER_DIM,
               "adapter_lr": 1e-2}


def _hyper(default, help: str, **cli):
    """A TrainConfig field that is an optimizer's hyperparameter: `--NAME` on the command line,
    with this help (and `cli`'s argparse settings, such as choices)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


class RunError(UserError):
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
    head: str = "gda"                 # the prompt is tuned for this head (task/ensemble.py)
    head_views: int = 16              # views of each training image whose features a head
    #                                   averages (data/views.py)
    head_features: str = "auto"       # the image features' stage a head reads (HEAD_FEATURES)
    head_augment: str = "auto"        # the kind of views a head averages (HEAD_AUGMENTS)
    tune: str | None = None           # what a forward-only method tunes (TUNED; None:
    #                                   DEFAULT_TUNE); coop and clip-adapter tune their own
    adapter_dim: int = ADAPTER_DIM    # the image-side adapter's tuned dimension (task/adapter.py)
    # optimizer hyperparameters: each method's optimizer (method_table.py) takes the ones it
    # has; each is a --option of `sharpzo-ext train` with this help (HYPERPARAMETERS)
    lr: float = _hyper(0.05, "step size of the zeroth-order steps (SharpZO's second stage, "
                       "ZOSGD, SparseZO)")
    eps: float = _hyper(0.01, "perturbation size of the two-point estimates")
    sigma: float = _hyper(0.6, "CMA-ES's initial step size (SharpZO's first stage, cmaes)")
    popsize: int = _hyper(20, "CMA-ES's population")
    rho: float = _hyper(0.05, "SharpZO's sharpness radius (0: plain CMA-ES)")
    switch_step: int = _hyper(150, "SharpZO's CMA-ES generations before its sparse stage")
    sharpness: str = _hyper("path", "how SharpZO estimates the sharpness direction (Note "
                            "[Sharpness from the evolution path])", choices=SHARPNESS)
    sharpness_queries: int = _hyper(2, "queries of SharpZO's sharpness estimate")
    q: int = _hyper(4, "queries of each two-point estimate")
    density: float = _hyper(0.5, "share of the coordinates the sparse steps move")
    coop_lr: float = _hyper(2e-3, "Adam's learning rate for coop")
    adapter_lr: float = _hyper(1e-2, "Adam's learning rate for clip-adapter")

    @property
    def spec(self) -> MethodSpec:
        """The method's row of the method table."""
        return METHODS[self.method]

    @property
    def engine(self) -> Engine:
        """How the run's text tower runs."""
        return Engine(precision=self.precision, backend=self.backend, cache_dir=self.cache_dir)

    @property
    def head_kind(self) -> str | None:
        """The head of the run: the method itself for a head-only method (whatever `head`
        says), else `head` (None for "none"): the head the prompt is tuned for."""
        if not self.tunes_anything:
            return self.method
        return None if self.head == "none" else self.head

    @property
    def tunes_anything(self) -> bool:
        """Whether the method tunes anything (a head-only method tunes nothing)."""
        return self.spec.tunes_anything

    @property
    def tuned(self) -> str | None:
        """What the method tunes (one of TUNED), None for a head-only method: a first-order
        method's own, else `tune` (DEFAULT_TUNE if unset)."""
        if not self.tunes_anything:
            return None
        return self.spec.tunes or self.tune or DEFAULT_TUNE

    def resolved(self) -> "TrainConfig":
        """This configuration with `tune` as the run tunes it, what a run directory saves (a
        later change of DEFAULT_TUNE does not change a saved run)."""
        return dataclasses.replace(self, tune=self.tuned)

    def check(self) -> None:
        """Raises RunError, naming the field, unless every field is valid: a run refuses a
        configuration before it writes anything."""
        try:
            self._check()
        except (TypeError, ValueError) as error:
            raise RunError(f"invalid configuration: {error}") from None

    def _check(self) -> None:
        checks.choice(self.method, "method", tuple(METHODS))
        for name in ("shots", "budget", "eval_every", "n_ctx"):
            checks.integer(getattr(self, name), name, 1)
        checks.stream_integer(self.seed, "seed")
        if self.intrinsic_dim is not None:
            checks.integer(self.intrinsic_dim, "intrinsic_dim", 1)
        checks.real(self.coop_lr, "coop_lr", positive=True)
        checks.choice(self.shard, "shard", ("population", "data"))
        checks.choice(self.head, "head", HEAD_CHOICES)
        checks.integer(self.head_views, "head_views", 1, MAX_HEAD_VIEWS)
        checks.choice(self.head_features, "head_features", HEAD_FEATURES)
        checks.choice(self.head_augment, "head_augment", HEAD_AUGMENTS)
        if self.head_views == 1 and self.head_augment not in ("none", "auto"):
            raise ValueError(f"head_augment {self.head_augment!r} needs head_views of at least 2 "
                             "(one view is the image itself)")
        checks.integer(self.adapter_dim, "adapter_dim", 1)
        checks.real(self.adapter_lr, "adapter_lr", positive=True)
        if self.tune is not None:
            checks.choice(self.tune, "tune", TUNED)
            own = self.spec.tunes if self.tunes_anything else "nothing"
            if own is not None and self.tune != own:
                raise ValueError(f"method {self.method} tunes {own}; tune {self.tune!r} does not "
                                 "apply")
        # every forward-only hyperparameter, by the rules of the optimizer that takes it
        # (SharpZO takes them all), whichever method runs
        METHODS["sharpzo"].optimizer(self, [torch.zeros(2)])
        cuda = self.device.startswith("cuda") and torch.cuda.is_available()
        if self.device != "cpu" and not cuda:
            raise ValueError(f"device {self.device!r} is not available")
        self.spec.check(self)
        self.engine.check(torch.device(self.device))

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


# the optimizers' hyperparameters among TrainConfig's fields (those made by _hyper)
HYPERPARAMETERS = tuple(f for f in dataclasses.fields(TrainConfig) if "help" in f.metadata)
