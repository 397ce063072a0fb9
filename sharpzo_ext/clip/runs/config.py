"""The configuration of a prompt-tuning run (what `sharpzo-ext train` resolves and saves)."""

from __future__ import annotations

import argparse
import dataclasses

import torch

from sharpzo_ext import files
from sharpzo_ext.clip.data.views import AUGMENTS
from sharpzo_ext.clip.engine import Engine
from sharpzo_ext.clip.engine.backend import BACKENDS
from sharpzo_ext.clip.engine.precision import PRECISIONS
from sharpzo_ext.clip.runs.method_table import METHODS, TUNED, MethodSpec
from sharpzo_ext.clip.task.adapter import DEFAULT_DIM as ADAPTER_DIM
from sharpzo_ext.clip.task.features import STAGES
from sharpzo_ext.clip.task.heads import HEADS
from sharpzo_ext.clip.task.prompt_task import AUTO_INTRINSIC_DIM
from sharpzo_ext.errors import UserError
from sharpzo_ext.ops import checks
from sharpzo_ext.optim.sharpzo import SHARPNESS

__all__ = ["TrainConfig", "RunError", "option", "GROUPS", "HEAD_CHOICES", "HEAD_FEATURES",
           "HEAD_AUGMENTS", "DEFAULT_HEAD", "DEFAULT_TUNE", "HYPERPARAMETERS"]

HEAD_CHOICES = HEADS + ("none",)
HEAD_FEATURES = STAGES + ("auto",)    # auto: the stage chosen on validation
HEAD_AUGMENTS = AUGMENTS + ("auto",)  # auto: the views chosen on validation
MAX_HEAD_VIEWS = 256
DEFAULT_HEAD = "gda"     # the head a tuning method is tuned for unless told
DEFAULT_TUNE = "prompt"  # what a forward-only method tunes unless told (TUNED)

# fields that older run directories lack, and the value that continues them as they ran
ADDED_LATER = {"batched": True, "coop_lr": 2e-3, "precision": "fp32", "backend": "torch",
               "head": "none", "head_views": 1, "head_features": "final",
               "head_augment": "flip-shift", "tune": "prompt", "adapter_dim": ADAPTER_DIM,
               "adapter_lr": 1e-2}

# Note [Options made from the config]
# Each field of a run's configuration (TrainConfig, and compare's CompareConfig) says once what
# it is: its default, its group, its help, which sub-commands offer it, and how argparse reads
# it. The command line makes its options from those fields (cli.py), in these groups, and shows
# each default from the code (`shown` where a default is a rule rather than a value); the
# configuration's own check is the one place that refuses a value or a contradiction, for the
# Python API as for the command line.
GROUPS = {"model": "model and engine", "data": "data", "prompt": "what is tuned",
          "head": "head", "budget": "budget and evaluation",
          "hyperparameters": "optimizer hyperparameters (each method's optimizer takes those "
                             "it has)",
          "comparison": "comparison"}
RUN = ("train", "eval", "compare")  # the sub-commands that take the model, data and prompt


def option(default, group: str, help: str, commands: tuple[str, ...] = RUN,
           shown: str | None = None, **argparse):
    """A field of a run's configuration that is an option of `commands` (Note [Options made
    from the config]): in `group`, with this help, its default shown as `shown` (default: the
    value), and argparse's settings (type, choices, nargs, action)."""
    return dataclasses.field(default=default, metadata={
        "group": group, "help": help, "commands": commands, "shown": shown,
        "argparse": argparse})


class RunError(UserError):
    """A run that cannot start or continue (bad configuration, run directory in the way)."""


def _methods_help() -> str:
    return "; ".join(f"{name}: {spec.help}" for name, spec in METHODS.items())


def _own_tune() -> str:
    own = ", ".join(f"{name}: {spec.tunes}" for name, spec in METHODS.items() if spec.tunes)
    return f"{DEFAULT_TUNE} ({own})"


@dataclasses.dataclass
class TrainConfig:
    """What a run does, every field an option of the command line (Note [Options made from the
    config])."""
    model: str = option("embedded", "model", "open_clip model name (e.g. ViT-B-16, RN50), "
                        "'embedded', or hf:PATH_OR_NAME, a Hugging Face CLIP checkpoint "
                        "directory or cached hub name")
    pretrained: str | None = option(None, "model", "open_clip pretrained tag (e.g. openai; "
                                    "needs a network once) or a local checkpoint file")
    data: str = option("embedded", "data", "a built-in task ('embedded'; 'embedded-cluttered', "
                       "'embedded-grainy', 'embedded-colors', 'embedded-stencil', 'digits': "
                       "docs/results.md), an ImageFolder tree, or CoOp's data root with "
                       "--dataset")
    dataset: str | None = option(None, "data", "a CoOp data set under --data (caltech101, "
                                 "oxford_pets, stanford_cars, oxford_flowers, food101, sun397, "
                                 "dtd, eurosat, ucf101, fgvc_aircraft, imagenet)")
    shots: int = option(16, "data", "images per class", type=int)
    method: str = option("sharpzo", "prompt", _methods_help(), ("train",),
                         choices=tuple(METHODS))
    budget: int = option(20000, "budget", "forward passes of a forward-only method (a "
                         "candidate's loss is one); coop and clip-adapter: steps",
                         ("train", "compare"), type=int)
    seed: int = option(0, "data", "draws the few-shot split, the projection and the "
                       "perturbation stream", ("train", "eval"), type=int)
    device: str = option("cpu", "model", "where the model runs: cpu, cuda or cuda:N")
    n_ctx: int = option(4, "prompt", "context tokens without --ctx-init (with it: its tokens)",
                        type=int)
    ctx_init: str | None = option("a photo of a", "prompt", "words that start the context")
    intrinsic_dim: int | None = option(None, "prompt", "length of the tuned vector (coop: the "
                                       "context itself)", shown=AUTO_INTRINSIC_DIM, type=int)
    eval_every: int = option(500, "budget", "forward passes between validation evaluations",
                             ("train", "compare"), type=int)
    cache_dir: str | None = option(None, "model", "feature cache (and ONNX exports)",
                                   shown=f"${files.CACHE_ENV} or {files.CACHE_HOME}")
    shard: str = option("population", "budget", "under torchrun: split the candidates or the "
                        "training images across the processes (only losses travel; every "
                        "process applies the same update)", ("train",),
                        choices=("population", "data"))
    batched: bool = option(True, "budget", "evaluate a population in batched calls "
                           "(--no-batched: one call per candidate, as the released code does)",
                           ("train",), action=argparse.BooleanOptionalAction)
    precision: str = option("fp32", "model", "the text tower's linear layers: fp32, bf16, or "
                            "int8 (CPU only; docs/clip.md)", choices=PRECISIONS)
    backend: str = option("torch", "model", "runs the text tower: torch, or onnxruntime (an "
                          "ONNX export, cached in --cache-dir; fp32 or int8; docs/backends.md)",
                          choices=BACKENDS)
    head: str | None = option(None, "head", "tune for this closed-form head on the image "
                              "features, ensembled with it by a weight chosen on validation "
                              "(none: what is tuned alone); a head-only method is its own head",
                              ("train", "compare"), shown=f"{DEFAULT_HEAD} (a head-only "
                              "method: itself)", choices=HEAD_CHOICES)
    head_views: int = option(16, "head", "views of each training image whose features a head "
                             f"averages, 1 to {MAX_HEAD_VIEWS}; each costs an encoding of the "
                             "training images for each kind of views", ("train", "compare"),
                             type=int)
    head_features: str = option("auto", "head", "the image features a head reads: final, pre "
                                "(before the image tower's projection; wider), or auto: chosen "
                                "on validation", ("train", "compare"), choices=HEAD_FEATURES)
    head_augment: str = option("auto", "head", "the views: none (the image alone), shift, "
                               "flip-shift (shifts and horizontal flips; not for digits, text or "
                               "anything with a handedness), or auto: chosen on validation",
                               ("train", "compare"), choices=HEAD_AUGMENTS)
    tune: str | None = option(None, "prompt", "what a forward-only method tunes: the prompt, "
                              "the image-side adapter over the cached features (a candidate "
                              "costs no text-tower pass), or both as one vector", ("train",),
                              shown=_own_tune(), choices=TUNED)
    adapter_dim: int = option(ADAPTER_DIM, "prompt", "the image-side adapter's tuned dimension",
                              ("train", "compare"), type=int)
    lr: float = option(0.05, "hyperparameters", "step size of the zeroth-order steps "
                       "(SharpZO's second stage, ZOSGD, SparseZO)", ("train",), type=float)
    eps: float = option(0.01, "hyperparameters", "perturbation size of the two-point "
                        "estimates", ("train",), type=float)
    sigma: float = option(0.6, "hyperparameters", "CMA-ES's initial step size (SharpZO's first "
                          "stage, cmaes)", ("train",), type=float)
    popsize: int = option(20, "hyperparameters", "CMA-ES's population", ("train",), type=int)
    rho: float = option(0.05, "hyperparameters", "SharpZO's sharpness radius (0: plain CMA-ES)",
                        ("train",), type=float)
    switch_step: int = option(150, "hyperparameters", "SharpZO's CMA-ES generations before its "
                              "sparse stage", ("train",), type=int)
    sharpness: str = option("path", "hyperparameters", "how SharpZO estimates the sharpness "
                            "direction (Note [Sharpness from the evolution path])", ("train",),
                            choices=SHARPNESS)
    sharpness_queries: int = option(2, "hyperparameters", "queries of SharpZO's sharpness "
                                    "estimate", ("train",), type=int)
    q: int = option(4, "hyperparameters", "queries of each two-point estimate", ("train",),
                    type=int)
    density: float = option(0.5, "hyperparameters", "share of the coordinates the sparse steps "
                            "move", ("train",), type=float)
    coop_lr: float = option(2e-3, "hyperparameters", "Adam's learning rate for coop",
                            ("train", "compare"), type=float)
    adapter_lr: float = option(1e-2, "hyperparameters", "Adam's learning rate for clip-adapter",
                               ("train",), type=float)

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
        """The head of the run: the method itself for a head-only method, else `head`
        (DEFAULT_HEAD if unset, None for "none"): the head the prompt is tuned for."""
        if not self.tunes_anything:
            return self.method
        head = self.head or DEFAULT_HEAD
        return None if head == "none" else head

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
        """This configuration with `tune` and `head` as the run uses them, what a run directory
        saves (a later change of DEFAULT_TUNE or DEFAULT_HEAD does not change a saved run)."""
        return dataclasses.replace(self, tune=self.tuned, head=self.head_kind or "none")

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
        if self.head is not None:
            checks.choice(self.head, "head", HEAD_CHOICES)
            if not self.tunes_anything and self.head != self.method:
                raise ValueError(f"method {self.method} is the {self.method} head on the "
                                 f"zero-shot prompt; head {self.head!r} does not apply")
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
        if config.method in METHODS and not config.tunes_anything:
            config.head = config.method  # runs of head-only methods before 0.2 saved any head
        try:
            config.check()
        except RunError as error:
            raise RunError(f"{source}: {error}") from None
        return config


# the optimizers' hyperparameters among TrainConfig's fields
HYPERPARAMETERS = tuple(f for f in dataclasses.fields(TrainConfig)
                        if f.metadata["group"] == "hyperparameters")
