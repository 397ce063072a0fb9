"""ImageAdapter: an image-side adapter over cached features, tuned by the same methods as a
prompt (tuned.py), for a fraction of a prompt candidate's cost.

    adapter = ImageAdapter.beside(task, pre_width=features.pre.shape[1], dim=256, seed=0)
    adapter.losses(W, features, labels)      # features: Features with both stages

Note [Image-side adapter]
CLIP's logits are linear in the final image feature f, and f is a projection of the wider
pre-projection feature p (Note [Image features by stage]) trained for pretraining captions. The
adapter adds back what the projection drops, as a residual map from p into the final feature
space, and leaves the class features t_c zero-shot CLIP's:

    f' = normalize(f + U diag(w) V^T p),        logits = logit_scale f'^T t_c

V (P x d) and U (E x d) are fixed and seeded, and w (d) is what is tuned: the adapter scales d
random directions of p and writes each into the final space along a direction of its own. It
is a random subspace of the E x P residual maps, spanned by d rank-one maps, which a population
method can search at d = 256 where the E x P map itself (393,216 numbers at ViT-B/16 size) is
out of reach; and it never forms a d x E x P basis (400 MB at that size). w = 0 is zero-shot
CLIP (up to the rounding of normalizing f, already a unit vector, again).

Note [Adapter logits without the adapted features]
A candidate never forms its adapted features (N x E). With y = (V^T p) * w, its d scaled
directions (V^T p is computed once per call, for the whole population):
    f'^T t_c = (f^T t_c + y^T (U^T t_c)) / |f + U y|,
    |f + U y|^2 = |f|^2 + 2 y^T (U^T f) + |U y|^2,
where f^T t_c, U^T t_c and U^T f are computed once, and |U y|^2 = SCALE^2 |y|^2 / d because U's
columns are orthonormal (times SCALE / sqrt(d)) whenever d <= E (the Q of a seeded Gaussian's
QR, computed in float64 on the CPU, so every device of a machine gets the same U). y itself is
never formed:
y^T (U^T t_c) is V^T p times w-scaled rows of U^T t_c, and the other terms are matrix-vector
products. A candidate then costs N x d x C multiply-adds instead of N x d x (E + C) and a
normalization: at ViT-B/16 size with 100 classes and 1,600 images, 1.2 ms against 6.0 ms on 2
CPU cores, 0.7% of a prompt candidate's time (docs/adapter.md). With d > E (more directions than
the final space has dimensions) U is Gaussian and |U y|^2 is computed from U y itself.

Note [Adapter scale]
V's entries are N(0, 1), so each of V^T p's d entries is N(0, 1) for a unit p; U's columns have
norm SCALE / sqrt(d), so a w of N(0, I) entries moves f by a vector of norm about SCALE, a
fraction of f's own norm of 1, on any model. SCALE puts the adapter's steps on the prompt's
scale, where one sigma serves both (a joint method has one): SharpZO on the adapter did best
with CMA-ES moving f by about a tenth of its norm (docs/adapter.md), which the default sigma of
0.6 gives at SCALE 0.15.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

import sharpzo_ext.ops as ops
from sharpzo_ext.clip.task.features import Features
from sharpzo_ext.clip.task.tuned import Tuned, as_features

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
        gaussian = ops.sample((width, dim), seed, _U_STREAM).double()
        self.orthonormal = dim <= width  # Note [Adapter logits without the adapted features]
        if self.orthonormal:
            q, r = torch.linalg.qr(gaussian)
            gaussian = q * torch.sign(torch.diagonal(r))  # the unique Q with a positive R
        else:
            gaussian = gaussian / math.sqrt(width)
        self.U = (gaussian * (SCALE / math.sqrt(dim))).float().to(self.device)

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

    def logits(self, W: torch.Tensor, features: Features | torch.Tensor) -> torch.Tensor:
        return self.scores(self.rows(W), features, self.text[None])

    # Note [A candidate's logits alone]
    # Each candidate's logits are its own matrix products, never one product over the whole
    # population: the BLAS blocks a product by its shape, and a candidate's logits would then
    # differ in their last bits alone and beside others (Note [A candidate's context alone] in
    # prompt_task.py is the same rule on the text side). A population's loss of a candidate is
    # its loss alone, bit for bit.
    def scores(self, W: torch.Tensor, features: Features | torch.Tensor,
               text: torch.Tensor) -> torch.Tensor:
        """(m, N, C) logits of the images adapted by each row of W (m, dim) against class
        features `text` (m or 1, C, E): Note [A candidate's logits alone], Note [Adapter logits
        without the adapted features]."""
        features = as_features(features).to(self.device)
        pre, final = features.stage("pre"), features.final
        if pre.shape[1] != self.pre_width:
            raise ValueError(f"this adapter reads pre-projection features of width "
                             f"{self.pre_width}, got {tuple(pre.shape)}")
        # shared by every candidate: V^T p, |f|^2, (V^T p) * (U^T f), (V^T p)^2, and the logit
        # scale times f^T t_c and U^T t_c
        z = pre @ self.V
        base, toward, z2 = (final * final).sum(1), z * (final @ self.U), z * z
        against = [(self.logit_scale * (final @ t.T), self.logit_scale * (self.U.T @ t.T))
                   for t in text]
        logits = final.new_empty(W.shape[0], len(final), text.shape[1])
        for i, w in enumerate(W):  # y = z * w is formed only where U is not orthonormal
            text_logits, directions = against[min(i, len(against) - 1)]
            shift = (z2 @ (w * w) * (SCALE * SCALE / self.dim) if self.orthonormal
                     else ((z * w) @ self.U.T).square().sum(1))
            norm = (base + 2 * (toward @ w) + shift).sqrt()
            logits[i] = torch.addmm(text_logits, z, w[:, None] * directions) / norm[:, None]
        return logits if self.logit_bias is None else logits + self.logit_bias
