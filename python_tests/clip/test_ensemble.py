"""A head beside the tuned logits (sharpzo_ext/clip/task/ensemble.py): its weight, what prompt
files and run states keep, the choice of stage and views on validation; and the views its
statistics average (sharpzo_ext/clip/data/views.py)."""

import math

import pytest
import torch

from sharpzo_ext.clip.data.views import SHIFT, Views
from sharpzo_ext.clip.task import ensemble, heads
from sharpzo_ext.clip.task.features import Features


def test_the_weight_goes_to_whichever_side_is_right():
    labels = torch.arange(4).repeat(5)
    right = torch.nn.functional.one_hot(labels, 4).float()
    wrong = torch.nn.functional.one_hot((labels + 1) % 4, 4).float()
    # text logits 100 times the head's: only the head alone overrules wrong text
    assert ensemble.choose_weight(100 * wrong, right, labels) == math.inf
    # right text: every weight up to 16 is as accurate; the cross-entropy prefers no head
    assert ensemble.choose_weight(100 * right, wrong, labels) == 0.0
    # both right: the cross-entropy prefers the most confident finite mix
    assert ensemble.choose_weight(right, right, labels) == ensemble.WEIGHTS[-2]


def test_combine_adds_the_weighted_head_or_takes_it_alone():
    text, head = torch.randn(3, 5, 4), torch.randn(5, 4)
    torch.testing.assert_close(ensemble.combine(text, head, 2.0), text + 2 * head)
    torch.testing.assert_close(ensemble.combine(text, head, math.inf), head.expand(3, 5, 4))


def fitted(kind="gda", stage="pre"):
    """A head of `stage` (the final features 6 wide, the pre-projection ones 9) on random
    features, made ready for tuning against."""
    g = torch.Generator().manual_seed(0)
    final = torch.nn.functional.normalize(torch.randn(24, 6, generator=g), dim=1)
    pre = torch.nn.functional.normalize(torch.randn(24, 9, generator=g), dim=1)
    labels = torch.arange(3).repeat(8)
    train = Features(final, pre)
    features = {"train": train, "val": train[torch.arange(23, -1, -1)]}
    e = ensemble.fit(kind, stage, "shift", train.stage(stage), labels, 3, features,
                     labels.flip(0))
    return ensemble.tuned_against(e, train.stage(stage), labels, 3, train), features


@pytest.mark.parametrize("kind", heads.HEADS)
def test_a_prompt_file_keeps_the_head_its_weight_and_its_stage(kind):
    e, features = fitted(kind)
    e.weight = 0.25
    tensors, metadata = e.to_prompt_file()
    head, weight, stage = ensemble.from_prompt_file(tensors, metadata, "p.safetensors")
    assert weight == 0.25 and head.kind == kind and head.temperature == e.head.temperature
    assert stage == "pre" and head.width == 9
    torch.testing.assert_close(head.logits(features["val"].pre), e.logits["val"])
    # a file from before stages holds a head of the final features
    del metadata["head_features"]
    assert ensemble.from_prompt_file(tensors, metadata, "p")[2] == "final"
    with pytest.raises(heads.HeadError, match="damaged"):
        ensemble.from_prompt_file(tensors, metadata | {"head_features": "middle"}, "p")
    assert ensemble.from_prompt_file({}, {}, "p") is None  # a prompt without a head
    damaged = dict(tensors)
    damaged.popitem()
    with pytest.raises(heads.HeadError, match=f"p.safetensors holds a damaged '{kind}' head"):
        ensemble.from_prompt_file(damaged, metadata, "p.safetensors")
    with pytest.raises(heads.HeadError, match="damaged"):
        ensemble.from_prompt_file(tensors, metadata | {"head_weight": "-1"}, "p")


def test_a_tuned_ensemble_trains_against_cross_fitted_logits_at_its_temperature():
    e, features = fitted()
    labels = torch.arange(3).repeat(8)
    cross = heads.cross_fitted("gda", features["train"].pre, labels, 3)
    torch.testing.assert_close(e.offset(), ensemble.TRAINING_WEIGHT * e.head.temperature * cross)
    state = ensemble.Ensemble.from_state(e.state(), features)
    torch.testing.assert_close(state.logits["val"], e.logits["val"])
    assert state.weight == e.weight and state.head.temperature == e.head.temperature
    assert (state.stage, state.augment) == ("pre", "shift")


def test_the_candidate_chosen_is_the_best_beside_zero_shot_on_validation():
    # three classes told apart by the pre-projection features only; the final ones are noise
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat(10)
    centers = torch.eye(3, 8) * 6
    pre = torch.nn.functional.normalize(centers[labels] + torch.randn(30, 8, generator=g), dim=1)
    final = torch.nn.functional.normalize(torch.randn(30, 5, generator=g), dim=1)
    features = {"train": Features(final[:15], pre[:15]), "val": Features(final[15:], pre[15:])}
    train_labels, val_labels = labels[:15], labels[15:]
    candidates = [ensemble.fit("gda", stage, "none", features["train"].stage(stage),
                               train_labels, 3, features, val_labels) for stage in ("final", "pre")]
    zero_shot = torch.zeros(15, 3)  # a zero-shot prompt that knows nothing
    best = ensemble.choose(candidates, zero_shot, val_labels)
    assert best.stage == "pre" and best.choices["pre, none views"] >= 0.9
    assert best.choices["final, none views"] < 0.7 and set(best.choices) == {
        "final, none views", "pre, none views"}
    # equal scores: the earlier candidate
    twice = ensemble.choose([candidates[1], ensemble.fit(
        "gda", "pre", "shift", features["train"].pre, train_labels, 3, features, val_labels)],
        zero_shot, val_labels)
    assert twice.augment == "none"


def test_views_are_the_image_then_whole_pixel_shifts_and_flips():
    images = torch.rand(5, 3, 20, 20)
    views = Views(4, 5, seed=3)
    assert torch.equal(views.shifted(0, images, 0), images)
    assert not views.flips(0, 0, 5).any()
    pad = round(SHIFT * 20)
    for v in range(1, 4):
        out = views.shifted(v, images, 0)
        assert torch.equal(views.flips(v, 0, 5), views.flip[v - 1])
        for i in range(5):
            dy, dx = (views.shift[v - 1, i] * pad).round().long().tolist()
            # away from the reflected border the view is the image moved by whole pixels
            inner = out[i, :, pad:-pad, pad:-pad]
            expected = images[i, :, pad + dy:20 - pad + dy, pad + dx:20 - pad + dx]
            assert torch.equal(inner, expected)
    # the same views whatever the batches
    batched = torch.cat([views.shifted(2, images[:2], 0), views.shifted(2, images[2:], 2)])
    assert torch.equal(batched, views.shifted(2, images, 0))
    assert torch.equal(torch.cat([views.flips(2, 0, 2), views.flips(2, 2, 3)]),
                       views.flips(2, 0, 5))
    assert not torch.equal(Views(4, 5, seed=4).shift, views.shift)
