"""A tuned thing's logits (tuned.py: a prompt, an image-side adapter, or both) ensembled with a
closed-form head (heads.py): what a run with ``--head`` tunes and reports.

    logits = tuned.logits(w) + weight * head.logits(features)    (weight = inf: the head alone)

Note [Ensembling a head]
- The head is fitted to the training images (their views' averaged features, views.py), and
  its logits are put on a log-probability scale by a temperature calibrated on validation
  (heads.calibrate), so one grid of weights serves every head and every model.
- A prompt (or adapter) tuned for the head is scored, image by image, against the head's
  cross-fitted logits (Note [Cross-fitted head logits]) at TRAINING_WEIGHT: the head supplies
  what the image features already tell, and the tuned side is rewarded for what it adds. While
  it is tuned, iterates are selected by their validation accuracy at the same weight: the one
  that helps the head most. (Selecting iterate and weight together on validation did half a point
  worse: docs/tuning-experiments.md.) A log row shows each iterate with the head at the weight
  validation would choose for it, which is what stopping there would give.
- The final weight is chosen on validation accuracy from WEIGHTS, which include 0 (the prompt
  alone) and inf (the head alone), ties going to the lower validation cross-entropy. So a run
  never ends below its own head alone, or its own prompt alone, on validation.
- A head-only method (gda, tip-adapter, linear-probe) is the same with the zero-shot prompt
  and no tuning: GDA's own protocol of a head added to zero-shot CLIP by a validated weight.
- Which features a head reads (the final or the pre-projection stage, Note [Image features by
  stage]) and which views it averages (none, shifts, or shifts and flips, Note [Views for a
  head]) depend on the task: with one view, the wider pre-projection features gave GDA 10.5
  points on embedded-stencil and cost it 1.9 on embedded-grainy, and flips cost it 12.9 points
  on handwritten digits (docs/adapter.md). A
  run fits the head on every candidate it is not told to skip, each beside the zero-shot
  prompt at its own validated weight, and keeps the one with the best validation accuracy
  (ties: the lower validation cross-entropy, then the earlier candidate: final before pre,
  fewer augmentations first), so the choice never looks at test data.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from sharpzo_ext import loaded
from sharpzo_ext.clip.data.views import AUGMENTS
from sharpzo_ext.clip.task import heads
from sharpzo_ext.clip.task.features import STAGES, Features
from sharpzo_ext.clip.task.heads import Head

__all__ = ["WEIGHTS", "TRAINING_WEIGHT", "Ensemble", "combine", "choose_weight", "fit",
           "choose", "tuned_against", "split_logits", "from_prompt_file", "weight_record",
           "describe"]

WEIGHTS = (0.0, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)
TRAINING_WEIGHT = 1.0  # Note [Ensembling a head]; 0.5 and 2 did no better on embedded-grainy


def combine(text: torch.Tensor, head: torch.Tensor, weight: float) -> torch.Tensor:
    """text (..., N, C) + weight * head (N, C); the head alone (broadcast) for weight inf."""
    head = head.to(text.device)
    return head.expand_as(text) if math.isinf(weight) else text + weight * head


def _score(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy, minus the cross-entropy): larger is better, accuracy first."""
    labels = labels.to(logits.device)
    right = float((logits.argmax(-1) == labels).double().mean())
    return right, -float(F.cross_entropy(logits.double(), labels))


def choose_weight(text: torch.Tensor, head: torch.Tensor, labels: torch.Tensor) -> float:
    """The weight of WEIGHTS with the best accuracy of combine(text, head, weight) on these
    (validation) images; ties: the lower cross-entropy, then the earlier weight."""
    return max(WEIGHTS, key=lambda weight: _score(combine(text, head, weight), labels))


@dataclasses.dataclass
class Ensemble:
    """A fitted, calibrated head with the weight of its logits, the stage of the features it
    reads and the views it was fitted to, and its logits on the prepared splits (computed once:
    a Tip-Adapter cache against a large test split is not cheap). `cross_fitted`: the training
    images' cross-fitted logits (at the head's temperature), which a tuned thing is trained
    against; None for a head-only run."""
    head: Head
    weight: float
    logits: dict[str, torch.Tensor]
    cross_fitted: torch.Tensor | None = None
    stage: str = "final"
    augment: str = "none"
    choices: dict[str, float] = dataclasses.field(default_factory=dict)  # candidate: val acc

    @property
    def name(self) -> str:
        """The stage and views, as summaries and logs name a candidate ("pre, shift views")."""
        return f"{self.stage}, {self.augment} views"

    def accuracy(self, tuned_logits: torch.Tensor, split: str, labels: torch.Tensor,
                 weight: float | None = None) -> float:
        """Accuracy on `split` of its tuned logits (N, C) with the head at `weight` (default:
        its own)."""
        logits = combine(tuned_logits, self.logits[split], self.weight if weight is None
                         else weight)
        return float((logits.argmax(-1) == labels.to(logits.device)).float().mean())

    def offset(self) -> torch.Tensor:
        """What the training loss adds to the tuned logits of the training images."""
        return TRAINING_WEIGHT * self.cross_fitted

    def state(self) -> dict:
        """What a run's state.pt keeps of it (a resumed run goes on with the same head)."""
        return {"kind": self.head.kind, "tensors": self.head.tensors,
                "temperature": self.head.temperature, "weight": self.weight,
                "cross_fitted": self.cross_fitted, "stage": self.stage, "augment": self.augment,
                "choices": self.choices}

    @classmethod
    def from_state(cls, state: dict, features: dict[str, Features]) -> "Ensemble":
        """The ensemble a run's state keeps (states from before stages read the final ones), or
        HeadError naming what is damaged: the whole record is checked before it is used (Note
        [Loaded values are checked])."""
        if not isinstance(state, dict):
            raise heads.HeadError(f"the head record is a {type(state).__name__}, not a dict")
        try:
            head, weight, stage = _checked(state.get("kind"), state.get("tensors"),
                                           state.get("temperature"), state.get("weight"),
                                           state.get("stage", "final"))
            augment = state.get("augment", "flip-shift")
            if augment not in AUGMENTS:
                raise loaded.BadValue("augment", f"must be one of {AUGMENTS}, got {augment!r}")
            choices = state.get("choices", {})
            if not isinstance(choices, dict) or not all(
                    isinstance(k, str) and isinstance(v, float) for k, v in choices.items()):
                raise loaded.BadValue("choices", "must map candidates to accuracies")
            cross = loaded.tensor(state.get("cross_fitted"), "cross_fitted",
                                  (len(features["train"]), head.classes))
            split = split_logits(head, features, stage)
        except (loaded.BadValue, heads.HeadError) as error:
            raise heads.HeadError(f"its {state.get('kind')!r} head is damaged: {error}") from None
        return cls(head, weight, split, cross, stage, augment, choices)

    def to_prompt_file(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """(tensors, metadata) that a prompt file keeps of the head and its weight."""
        tensors = {f"{_PREFIX}{k}": v.contiguous() for k, v in self.head.tensors.items()}
        return tensors, {"head": self.head.kind, "head_temperature": repr(self.head.temperature),
                         "head_weight": repr(self.weight), "head_features": self.stage,
                         "head_augment": self.augment}


_PREFIX = "head."


def from_prompt_file(tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                     source: str) -> tuple[Head, float, str] | None:
    """(head, weight, stage) that a prompt file keeps (Ensemble.to_prompt_file), None if it has
    no head, or HeadError naming `source` if what it keeps is damaged. Files from before stages
    hold heads of the final features."""
    kind = metadata.get("head")
    if not kind:
        return None
    own = {k[len(_PREFIX):]: v.double() if v.is_floating_point() else v
           for k, v in tensors.items() if k.startswith(_PREFIX)}
    try:
        return _checked(kind, own, _float(metadata, "head_temperature"),
                        _float(metadata, "head_weight"), metadata.get("head_features", "final"))
    except (loaded.BadValue, heads.HeadError) as error:
        raise heads.HeadError(f"{source} holds a damaged {kind!r} head: {error}") from None


def _float(metadata: dict[str, str], key: str) -> float:
    try:
        return float(metadata[key])
    except KeyError:
        raise loaded.BadValue(key, "is missing") from None
    except ValueError:
        raise loaded.BadValue(key, f"is not a number: {metadata[key]!r}") from None


def _checked(kind, tensors, temperature, weight, stage) -> tuple[Head, float, str]:
    """(head, weight, stage) from what a file keeps of them, each checked (Note [Loaded values
    are checked]): raises BadValue or HeadError naming what is wrong."""
    if kind not in heads.HEADS:
        raise loaded.BadValue("kind", f"must be one of {heads.HEADS}, got {kind!r}")
    head = Head(kind, tensors, temperature).check()  # its temperature checked there
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight not in WEIGHTS:
        raise loaded.BadValue("weight", f"must be one of the weights a run chooses from "
                                        f"({', '.join(map(str, WEIGHTS))}), got {weight!r}")
    if stage not in STAGES:
        raise loaded.BadValue("features", f"must be one of {STAGES}, got {stage!r}")
    return head, float(weight), stage


def split_logits(head: Head, features: dict[str, Features],
                 stage: str) -> dict[str, torch.Tensor]:
    """The head's logits of every split's features of `stage`."""
    return {split: head.logits(x.stage(stage)) for split, x in features.items()}


def fit(kind: str, stage: str, augment: str, head_features: torch.Tensor, labels: torch.Tensor,
        classes: int, features: dict[str, Features], val_labels: torch.Tensor) -> Ensemble:
    """The head `kind` fitted to `head_features` (the training images' features of `stage`,
    averaged over views of kind `augment`) and calibrated on features["val"], as the head alone
    (weight inf): Note [Ensembling a head]."""
    head = heads.fit(kind, head_features, labels, classes)
    val = features["val"].stage(stage)
    head = head.with_temperature(heads.calibrate(head.logits(val), val_labels))
    return Ensemble(head, math.inf, split_logits(head, features, stage), None, stage, augment)


def choose(candidates: list[Ensemble], zero_shot_val: torch.Tensor,
           val_labels: torch.Tensor) -> Ensemble:
    """The candidate whose head, beside the zero-shot logits of the validation images at its
    own validated weight, scores best on them, with that weight and every candidate's
    validation accuracy by its name in `choices` (Note [Ensembling a head])."""
    weights, scores = {}, {}
    for e in candidates:
        weights[e.name] = choose_weight(zero_shot_val, e.logits["val"], val_labels)
        scores[e.name] = _score(combine(zero_shot_val, e.logits["val"], weights[e.name]),
                                val_labels)
    best = max(candidates, key=lambda e: scores[e.name])  # max keeps the first of equals
    return dataclasses.replace(best, weight=weights[best.name],
                               choices={name: s[0] for name, s in scores.items()})


def tuned_against(e: Ensemble, head_features: torch.Tensor, labels: torch.Tensor, classes: int,
                  train: Features) -> Ensemble:
    """`e` made ready for tuning something against it: the training images' cross-fitted logits
    (their own single view scored by heads fitted on the other folds' `head_features`) at its
    temperature, and the training weight."""
    cross = e.head.temperature * heads.cross_fitted(e.head.kind, head_features, labels, classes,
                                                    scored=train.stage(e.stage))
    return dataclasses.replace(e, weight=TRAINING_WEIGHT, cross_fitted=cross)


def weight_record(weight: float) -> float | str:
    """A weight as JSON files hold it: "inf" for the head alone (JSON has no infinity)."""
    return "inf" if math.isinf(weight) else weight


def describe(kind: str, weight: float, what: str = "prompt") -> str:
    """What a selected ensemble is, in words (train's summary)."""
    if math.isinf(weight):
        return f"the {kind} head alone"
    if weight == 0:
        return f"the {what} alone"
    return f"the {what} + the {kind} head (weight {weight:g})"
