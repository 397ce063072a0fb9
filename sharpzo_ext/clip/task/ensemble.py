"""A prompt's text logits ensembled with a closed-form head (heads.py): what a run with
``--head`` tunes and reports.

    logits = text_logits(w) + weight * head.logits(features)      (weight = inf: the head alone)

Note [Ensembling a head]
- The head is fitted to the training images (their views' averaged features, views.py), and
  its logits are put on a log-probability scale by a temperature calibrated on validation
  (heads.calibrate), so one grid of weights serves every head and every model.
- A prompt tuned for the head is scored, image by image, against the head's cross-fitted
  logits (Note [Cross-fitted head logits]) at TRAINING_WEIGHT: the head supplies what the
  image features already tell, and the prompt is rewarded for what it adds. While the prompt is
  tuned, iterates are selected by their validation accuracy at the same weight: the one that
  helps the head most. (Selecting iterate and weight together on validation did half a point
  worse: docs/tuning-experiments.md.) A log row shows each iterate with the head at the weight
  validation would choose for it, which is what stopping there would give.
- The final weight is chosen on validation accuracy from WEIGHTS, which include 0 (the prompt
  alone) and inf (the head alone), ties going to the lower validation cross-entropy. So a run
  never ends below its own head alone, or its own prompt alone, on validation.
- A head-only method (gda, tip-adapter, linear-probe) is the same with the zero-shot prompt
  and no tuning: GDA's own protocol of a head added to zero-shot CLIP by a validated weight.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sharpzo_ext.clip.task import heads
from sharpzo_ext.clip.task.heads import Head

if TYPE_CHECKING:
    from sharpzo_ext.clip.task.prompt_task import PromptTask

__all__ = ["WEIGHTS", "TRAINING_WEIGHT", "Ensemble", "combine", "choose_weight", "fit",
           "split_logits", "from_prompt_file", "weight_record", "describe"]

WEIGHTS = (0.0, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)
TRAINING_WEIGHT = 1.0  # Note [Ensembling a head]; 0.5 and 2 did no better on embedded-grainy


def combine(text: torch.Tensor, head: torch.Tensor, weight: float) -> torch.Tensor:
    """text (..., N, C) + weight * head (N, C); the head alone (broadcast) for weight inf."""
    head = head.to(text.device)
    return head.expand_as(text) if math.isinf(weight) else text + weight * head


def choose_weight(text: torch.Tensor, head: torch.Tensor, labels: torch.Tensor) -> float:
    """The weight of WEIGHTS with the best accuracy of combine(text, head, weight) on these
    (validation) images; ties: the lower cross-entropy, then the earlier weight."""
    labels = labels.to(text.device)

    def score(weight: float) -> tuple[float, float]:
        logits = combine(text, head, weight)
        right = float((logits.argmax(-1) == labels).double().mean())
        return right, -float(F.cross_entropy(logits.double(), labels))

    return max(WEIGHTS, key=score)  # max keeps the first of equal scores


@dataclasses.dataclass
class Ensemble:
    """A fitted, calibrated head with the weight of its logits, and those logits on the
    prepared splits (computed once: a Tip-Adapter cache against a large test split is not
    cheap). `cross_fitted`: the training images' cross-fitted logits (at the head's
    temperature), which a prompt tuned for the head is trained against; None for a head-only
    run."""
    head: Head
    weight: float
    logits: dict[str, torch.Tensor]
    cross_fitted: torch.Tensor | None = None

    @torch.no_grad()
    def accuracy(self, task: PromptTask, w: torch.Tensor, split: str, features: torch.Tensor,
                 labels: torch.Tensor, weight: float | None = None) -> float:
        """Accuracy on `split` of the prompt w with the head at `weight` (default: its own)."""
        text = task.logits(torch.as_tensor(w).reshape(1, -1), features)[0]
        logits = combine(text, self.logits[split], self.weight if weight is None else weight)
        return float((logits.argmax(-1) == labels.to(logits.device)).float().mean())

    @torch.no_grad()
    def best_weight(self, task: PromptTask, w: torch.Tensor, features: torch.Tensor,
                    labels: torch.Tensor) -> float:
        """choose_weight for the prompt w on the validation features and labels."""
        text = task.logits(torch.as_tensor(w).reshape(1, -1), features)[0]
        return choose_weight(text, self.logits["val"], labels)

    def offset(self) -> torch.Tensor:
        """What the training loss adds to the text logits of the training images."""
        return TRAINING_WEIGHT * self.cross_fitted

    def state(self) -> dict:
        """What a run's state.pt keeps of it (a resumed run goes on with the same head)."""
        return {"kind": self.head.kind, "tensors": self.head.tensors,
                "temperature": self.head.temperature, "weight": self.weight,
                "cross_fitted": self.cross_fitted}

    @classmethod
    def from_state(cls, state: dict, features: dict[str, torch.Tensor]) -> "Ensemble":
        head = Head(state["kind"], state["tensors"], state["temperature"])
        return cls(head, state["weight"], split_logits(head, features), state["cross_fitted"])


    def to_prompt_file(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """(tensors, metadata) that a prompt file keeps of the head and its weight."""
        tensors = {f"{_PREFIX}{k}": v.contiguous() for k, v in self.head.tensors.items()}
        return tensors, {"head": self.head.kind, "head_temperature": repr(self.head.temperature),
                         "head_weight": repr(self.weight)}


_PREFIX = "head."


def from_prompt_file(tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                     source: str) -> tuple[Head, float] | None:
    """(head, weight) that a prompt file keeps (Ensemble.to_prompt_file), None if it has no
    head, or HeadError naming `source` if what it keeps is damaged."""
    kind = metadata.get("head")
    if not kind:
        return None
    own = {k[len(_PREFIX):]: v.double() if v.is_floating_point() else v
           for k, v in tensors.items() if k.startswith(_PREFIX)}
    try:
        weight = float(metadata["head_weight"])
        head = Head(kind, own, float(metadata["head_temperature"])).check()
        if not weight >= 0:
            raise ValueError(f"head weight {weight}")
    except (KeyError, ValueError) as error:
        raise heads.HeadError(f"{source} holds a damaged {kind!r} head: {error}") from None
    return head, weight


def split_logits(head: Head, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {split: head.logits(x) for split, x in features.items()}


def fit(kind: str, head_features: torch.Tensor, labels: torch.Tensor, classes: int,
        features: dict[str, torch.Tensor], val_labels: torch.Tensor, tuned: bool) -> Ensemble:
    """The head `kind` fitted to `head_features` (the training images' averaged views) and
    calibrated on features["val"] (Note [Ensembling a head]); with `tuned`, with the
    cross-fitted logits of the training images' own features["train"] for tuning a prompt."""
    head = heads.fit(kind, head_features, labels, classes)
    head = head.with_temperature(heads.calibrate(head.logits(features["val"]), val_labels))
    cross = None
    if tuned:
        cross = head.temperature * heads.cross_fitted(kind, head_features, labels, classes,
                                                      scored=features["train"])
    return Ensemble(head, TRAINING_WEIGHT if tuned else math.inf, split_logits(head, features),
                    cross)


def weight_record(weight: float) -> float | str:
    """A weight as JSON files hold it: "inf" for the head alone (JSON has no infinity)."""
    return "inf" if math.isinf(weight) else weight


def describe(kind: str, weight: float) -> str:
    """What a selected ensemble is, in words (train's summary)."""
    if math.isinf(weight):
        return f"the {kind} head alone"
    if weight == 0:
        return "the prompt alone"
    return f"the prompt + the {kind} head (weight {weight:g})"
