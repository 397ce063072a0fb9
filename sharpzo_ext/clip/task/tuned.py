"""What a method tunes: one small interface, a vector w in and the logits of cached image
features out, with a zero vector that leaves zero-shot CLIP unchanged.

    tuned.dim, tuned.zero_vector()
    tuned.logits(W, features)             # (m, N, C) for the rows of W (m, dim)
    tuned.losses(W, features, labels)     # (m,): one batched evaluation of a population
    opt.step(tuned.objective(features, labels))

CLIP scores an image against a class by the cosine of their features, times the model's logit
scale (plus its logit bias, where it has one). The implementations:
- PromptTask (prompt_task.py): the prompt's context moves the class features; images stay put;
- ImageAdapter (adapter.py): a residual map from the pre-projection features moves the image
  features; the class features are zero-shot CLIP's;
- PromptAndAdapter (joint.py): both, from one vector (the prompt's part first).
A head's logits (ensemble.py) are added to any of them the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sharpzo_ext.clip.task.features import Features
from sharpzo_ext.optim.objective import Population

__all__ = ["Tuned", "as_features"]


def as_features(features: Features | torch.Tensor) -> Features:
    """Features, from Features or from a tensor of final features (N, E)."""
    return features if isinstance(features, Features) else Features(features)


class Tuned:
    """The base of what a method tunes (see the module docstring). A subclass sets `dim` and
    `device`, and implements `zero_vector`, `logits` and `record`; the losses, objective and
    accuracy follow from its logits."""
    dim: int
    device: torch.device

    def zero_vector(self) -> torch.Tensor:
        """The w of zero-shot CLIP (this tuned thing unchanged)."""
        raise NotImplementedError

    def logits(self, W: torch.Tensor, features: Features | torch.Tensor) -> torch.Tensor:
        """(m, N, C) logits of the images (N of them) for every row of W (m, dim)."""
        raise NotImplementedError

    def record(self, w: torch.Tensor) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
        """(metadata, tensors) that a prompt file keeps of this tuned thing at w, beside w
        itself: what rebuilds it, and what shows it (a prompt's context vectors)."""
        raise NotImplementedError

    def rows(self, W: torch.Tensor) -> torch.Tensor:
        """W as a float32 matrix (m, dim) on the device, or ValueError."""
        W = torch.as_tensor(W, device=self.device, dtype=torch.float32)
        if W.dim() != 2 or W.shape[1] != self.dim:
            raise ValueError(f"W must have shape (m, {self.dim}), got {tuple(W.shape)}")
        return W

    def losses(self, W: torch.Tensor, features: Features | torch.Tensor, labels: torch.Tensor,
               offset: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy loss of every row of W over the images: a (m,) tensor. `offset` (N, C),
        if given, is added to every row's logits (a head's, ensemble.py)."""
        logits = self.logits(W, features)
        if offset is not None:
            logits = logits + offset.to(self.device)
        m, n, classes = logits.shape
        labels = labels.to(self.device).repeat(m)  # (m, N, C) as m * N rows: no transposed copy
        return F.cross_entropy(logits.reshape(m * n, classes), labels,
                               reduction="none").view(m, n).mean(dim=1)

    def loss(self, w: torch.Tensor, features: Features | torch.Tensor, labels: torch.Tensor,
             offset: torch.Tensor | None = None) -> torch.Tensor:
        return self.losses(torch.as_tensor(w).reshape(1, -1), features, labels, offset)[0]

    def objective(self, features: Features | torch.Tensor, labels: torch.Tensor,
                  offset: torch.Tensor | None = None) -> Population:
        """The training loss over these images as a Population objective for the optimizers:
        ``opt.step(tuned.objective(features, labels))`` evaluates a whole population (or all
        the points of a two-point estimate) in batched forwards."""
        return Population(lambda W: self.losses(W, features, labels, offset))

    @torch.no_grad()
    def accuracy(self, w: torch.Tensor, features: Features | torch.Tensor,
                 labels: torch.Tensor) -> float:
        logits = self.logits(torch.as_tensor(w).reshape(1, -1), features)[0]
        return float((logits.argmax(dim=-1) == labels.to(self.device)).float().mean())
