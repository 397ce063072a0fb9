"""PromptAndAdapter: a prompt and an image-side adapter tuned together, as one vector (tuned.py):
the prompt moves the class features, the adapter the image features, and each candidate's
logits are its adapted images against its own class features (ImageAdapter.scores).

    joint = PromptAndAdapter(task, ImageAdapter.beside(task, pre_width))
    W[:, :task.dim] is the prompt's part, W[:, task.dim:] the adapter's

A candidate costs a prompt candidate's text-tower pass (the adapter adds a small product over
the cached features), so a joint method spends its budget at a prompt method's speed.
"""

from __future__ import annotations

import torch

from sharpzo_ext.clip.task.adapter import ImageAdapter
from sharpzo_ext.clip.task.features import Features
from sharpzo_ext.clip.task.prompt_task import PromptTask
from sharpzo_ext.clip.task.tuned import Tuned

__all__ = ["PromptAndAdapter"]


class PromptAndAdapter(Tuned):
    """`prompt`'s vector followed by `adapter`'s; zero is zero-shot CLIP."""

    def __init__(self, prompt: PromptTask, adapter: ImageAdapter):
        self.prompt, self.adapter = prompt, adapter
        self.dim = prompt.dim + adapter.dim
        self.device = prompt.device

    def zero_vector(self) -> torch.Tensor:
        return torch.cat([self.prompt.zero_vector(), self.adapter.zero_vector()])

    def record(self, w: torch.Tensor) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
        metadata, tensors = self.prompt.record(w[:self.prompt.dim])
        adapter_metadata, _ = self.adapter.record(w[self.prompt.dim:])
        return metadata | adapter_metadata, tensors

    def logits(self, W: torch.Tensor, features: Features | torch.Tensor) -> torch.Tensor:
        W = self.rows(W)
        text = self.prompt.text_features(W[:, :self.prompt.dim])
        return self.adapter.scores(W[:, self.prompt.dim:], features, text)
