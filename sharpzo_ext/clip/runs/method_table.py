"""The one table of tuning methods: each method's name, what it is, the prompt it tunes, its
optimizer built from a run's configuration, and the rule it adds to the configuration's checks.
Every other place asks this table (config.py validates with it, prepare.py builds the prompt it
names, methods.py runs it, the command line offers its names).

Forward-only methods tune the intrinsic vector w with a sharpzo_ext optimizer and a Population
objective. zip is ZIP: its low-rank prompt (task/low_rank.py) tuned by SPSA with
intrinsic-dimensional clipping; spsa-gc is BlackVIP's optimizer, SPSA with gradient correction,
on the same prompt as the others; both with their published constants (optim/spsa.py; Note
[SPSA-GC's step size]). coop, the first-order reference, tunes the context vectors themselves
with torch.optim.Adam through forward and backward passes; clip-adapter, its image-side
counterpart in the spirit of CLIP-Adapter (Gao et al., 2021), tunes the image-side adapter's
vector (task/adapter.py) with Adam. A head (gda, tip-adapter, linear-probe) has no optimizer:
the zero-shot prompt with that head, fitted in closed form.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable

import torch

from sharpzo_ext import optim
from sharpzo_ext.clip.task.heads import HEADS

__all__ = ["Kind", "Prompt", "MethodSpec", "METHODS", "TUNED"]


class Kind(str, enum.Enum):
    """What a method is."""
    FORWARD_ONLY = "forward-only"  # a sharpzo_ext optimizer on a Population objective
    FIRST_ORDER = "first-order"    # torch.optim.Adam through backward passes
    HEAD = "head"                  # a closed-form head beside the zero-shot prompt, no tuning

    def __str__(self) -> str:
        return self.value


class Prompt(str, enum.Enum):
    """The prompt a method's task is built with."""
    INTRINSIC = "intrinsic"  # ctx0 + A w
    CONTEXT = "context"      # the context vectors themselves
    LOW_RANK = "low-rank"    # ZIP's factors (task/low_rank.py)

    def __str__(self) -> str:
        return self.value


# what a method tunes (task/tuned.py): the prompt, the image-side adapter, or both as one vector
TUNED = ("prompt", "adapter", "prompt+adapter")

# Note [SPSA-GC's step size]: BlackVIP's a = 0.01 is for its coordinator network's weights; on
# the linear intrinsic prompt it leaves zero-shot where it was (26.9% validation accuracy on
# embedded-grainy, seed 0, 5000 forward passes). a = 1.0, the best of {0.01, 0.1, 1} there
# (35.6%), is the one used. ZIP's own constants were already the best of the three for ZIP.
SPSA_GC_STEP = 1.0


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method: `optimizer(config, params)` builds its optimizer (None for a head); `tunes`
    is what a first-order method tunes (one of TUNED), None where the run's `tune` says."""
    name: str
    kind: Kind
    help: str  # one line: what the command line and compare say of it
    prompt: Prompt = Prompt.INTRINSIC
    optimizer: Callable[[object, list[torch.Tensor]], torch.optim.Optimizer] | None = None
    tunes: str | None = None

    @property
    def tunes_anything(self) -> bool:
        """Whether it tunes anything (a head-only method does not)."""
        return self.kind != Kind.HEAD

    def check(self, config) -> None:
        """Raises ValueError if `config` asks this method for what it cannot do."""
        if self.kind != Kind.FIRST_ORDER or self.tunes == "adapter":
            return  # the adapter's gradients never enter the text tower
        if config.precision == "int8":
            raise ValueError(f"{self.name} trains with gradients, which the int8 text tower has "
                             "none of; use precision fp32 or bf16")
        if config.backend != "torch":
            raise ValueError(f"{self.name} trains with gradients, which the {config.backend} "
                             "backend has none of; use backend torch")


def _sharpzo(c, params):
    return optim.SharpZO(params, lr=c.lr, eps=c.eps, sigma=c.sigma, popsize=c.popsize, rho=c.rho,
                         switch_step=c.switch_step, sharpness=c.sharpness, density=c.density,
                         seed=c.seed,
                         warmup=optim.SharpZO.Warmup(sharpness_queries=c.sharpness_queries),
                         search=optim.SharpZO.Search(q=c.q))


_HEAD_HELP = {
    "gda": "GDA (ICLR 2024): one Gaussian per class with a shared shrunk covariance, fitted in "
           "closed form to the cached features, beside the zero-shot prompt",
    "tip-adapter": "Tip-Adapter (ECCV 2022) without training: a cache of the few-shot "
                   "features, beside the zero-shot prompt",
    "linear-probe": "logistic regression on the image features (first order, on the features "
                    "only) beside the zero-shot prompt",
}
_TABLE = (
    MethodSpec("sharpzo", Kind.FORWARD_ONLY, "SharpZO: sharpness-aware CMA-ES, then sparse "
               "zeroth-order steps", optimizer=_sharpzo),
    MethodSpec("zosgd", Kind.FORWARD_ONLY, "ZOSGD (MeZO): dense two-point steps",
               optimizer=lambda c, params: optim.ZOSGD(params, lr=c.lr, eps=c.eps, q=c.q,
                                                       seed=c.seed)),
    MethodSpec("sparsezo", Kind.FORWARD_ONLY, "SparseZO alone (SharpZO's stage 2): masked, "
               "normalized two-point steps", optimizer=lambda c, params: optim.SparseZO(
                   params, lr=c.lr, eps=c.eps, q=c.q, density=c.density, seed=c.seed)),
    MethodSpec("cmaes", Kind.FORWARD_ONLY, "CMA-ES alone in the intrinsic subspace (BBT)",
               optimizer=lambda c, params: optim.CMAES(params, sigma=c.sigma, popsize=c.popsize,
                                                       seed=c.seed)),
    MethodSpec("zip", Kind.FORWARD_ONLY, "ZIP (ICLR 2025): its low-rank prompt tuned by SPSA "
               "with intrinsic-dimensional clipping", Prompt.LOW_RANK,
               optimizer=lambda c, params: optim.SPSA(params, rule="clip", seed=c.seed)),
    MethodSpec("spsa-gc", Kind.FORWARD_ONLY, "BlackVIP's optimizer (CVPR 2023), SPSA with "
               "gradient correction, on the intrinsic prompt",
               optimizer=lambda c, params: optim.SPSA(params, a=SPSA_GC_STEP, rule="gc",
                                                      seed=c.seed)),
    MethodSpec("coop", Kind.FIRST_ORDER, "first-order CoOp: Adam on the context vectors, "
               "through backward passes (the reference); budget in steps", Prompt.CONTEXT,
               optimizer=lambda c, params: torch.optim.Adam(params, lr=c.coop_lr),
               tunes="prompt"),
    MethodSpec("clip-adapter", Kind.FIRST_ORDER, "Adam on the image-side adapter's vector, in "
               "the spirit of CLIP-Adapter (Gao et al., 2021): the first-order reference on "
               "the image side; budget in steps",
               optimizer=lambda c, params: torch.optim.Adam(params, lr=c.adapter_lr),
               tunes="adapter"),
) + tuple(MethodSpec(head, Kind.HEAD, _HEAD_HELP[head]) for head in HEADS)

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in _TABLE}
