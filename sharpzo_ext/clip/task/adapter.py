"""ImageAdapter: an image-side adapter over cached features, tuned by the same methods as a
prompt (tuned.py), for a fraction of a prompt candidate's cost.

    adapter = ImageAdapter.beside(task, pre_width=features.pre.shape[1], dim=256, seed=0)
    adapter.losses(W, features, labels)      # features: Features with both stages

Note [Image-side adapter]
CLIP's logits are linear in the final image feature f, and f is a projection of the wider
pre-projection feature p (Note [Image features by stage]) trained for pretraining captions. The
adapter adds back what the projection drops, as a residual map from p into the final feature
space, and leaves the class features zero-shot CLIP's:

    f' = normalize(f + U diag(w) V^T p),        logits = logit_scale f'^T t_c

V (P x d) and U (E x d) are fixed, seeded Gaussian matrices and w (d) is what is tuned: the
adapter scales d random directions of p and writes each into the final space along a random
direction of its own. It is a random subspace of the E x P residual maps, spanned by d rank-one
maps, which a population method can search at d = 256 where the E x P map itself (393,216
numbers at ViT-B/16 size) is out of reach; and it never forms a d x E x P basis (400 MB at that
size), only V^T p once per image and then, per candidate, a product of width d. w = 0 is
zero-shot CLIP (up to the rounding of normalizing f, already a unit vector, again).

Note [Adapter scale]
V's entries are N(0, 1), so each of V^T p's d entries is N(0, 1) for a unit p; U's are
N(0, SCALE^2 / (d E)), so a w of N(0, I) entries moves f by a vector of norm about SCALE, a
fraction of f's own norm of 1, on any model. SCALE puts the adapter's steps on the prompt's
scale, where one sigma serves both (a joint method has one): SharpZO on the adapter did best
with CMA-ES moving f by about a tenth of its norm (sigma 0.03 to 0.1 at SCALE 1 on the embedded
tasks, against 56.7 to 57.1% on grainy at 0.3, docs/adapter.md), which the default sigma of 0.6
gives at SCALE 0.15.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

import sharpzo_ext.ops as ops
from sharpzo_ext.clip.task.features import Features
from sharpzo_ext.clip.task.tuned import Tuned

if TYPE_CHECKING:
    from sharpzo_ext.clip.task.prompt_task import PromptTask

__all__ = ["ImageAdapter", "DEFAULT_DIM", "SCALE"]

DEFAULT_DIM = 256
SCALE = 0.15  # Note [Adapter scale]
# the streams of U and V under the adapter's seed (the prompt's projection takes 1 << 60)
_U_STREAM, _V_STREAM = (1 << 60) + 1, (1 << 60) + 2


class ImageAdapter(Tuned):
    """A residual map from the pre-projection features into the final feature space (Note
    [Image-side adapter]), scored against fixed class features.

    Args:
        text: the class features (C, E), L2-normalized (zero-shot CLIP's: ``beside``).
        pre_width: P, the width of the pre-projection features.
        dim: d, the length of w.
        seed: seeds U and V.
        logit_scale, logit_bias: the model's (``beside`` takes the prompt task's).
        device: where it runs (default: the class features').
    """

    def __init__(self, text: torch.Tensor, pre_width: int, dim: int = DEFAULT_DIM, seed: int = 0,
                 logit_scale: float = 100.0, logit_bias: float | None = None, device=None):
        if text.dim() != 2 or text.shape[0] < 2:
            raise ValueError(f"text must be class features (C >= 2, E), got {tuple(text.shape)}")
        for name, value in (("pre_width", pre_width), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.device = torch.device(device) if device is not None else text.device
        self.text = text.detach().float().to(self.device)
        self.dim, self.pre_width, self.seed = dim, pre_width, seed
        self.logit_scale, self.logit_bias = logit_scale, logit_bias
        width = self.text.shape[1]
        self.V = ops.sample((pre_width, dim), seed, _V_STREAM, device=self.device)
        self.U = ops.sample((width, dim), seed, _U_STREAM, device=self.device) * (
            SCALE / math.sqrt(dim * width))

    @classmethod
    @torch.no_grad()
    def beside(cls, task: PromptTask, pre_width: int, dim: int = DEFAULT_DIM,
               seed: int = 0) -> "ImageAdapter":
        """The adapter scored against `task`'s zero-shot class features, with its model's logit
        scale and bias."""
        text = task.text_features(task.zero_vector()[None])[0]
        return cls(text, pre_width, dim, seed, task.logit_scale, task.logit_bias, task.device)

    def zero_vector(self) -> torch.Tensor:
        return torch.zeros(self.dim, device=self.device)

    def record(self, w: torch.Tensor) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
        return {"adapter_dim": str(self.dim), "seed": str(self.seed)}, {}

    def text_side(self, W: torch.Tensor) -> torch.Tensor:
        return self.text[None]

    def image_side(self, W: torch.Tensor, features: Features) -> torch.Tensor:
        pre = features.stage("pre")
        if pre.shape[1] != self.pre_width:
            raise ValueError(f"this adapter reads pre-projection features of width "
                             f"{self.pre_width}, got {tuple(pre.shape)}")
        z = pre @ self.V  # (N, d), shared by every candidate
        return torch.stack([F.normalize(features.final + (z * w) @ self.U.T, dim=-1)
                            for w in W]) if W.shape[0] else features.final.new_zeros(
            0, *features.final.shape)
