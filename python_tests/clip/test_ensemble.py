"""A head beside the prompt's text logits (sharpzo_ext/clip/ensemble.py), and the views its
statistics average (sharpzo_ext/clip/views.py)."""

import math

import pytest
import torch

from sharpzo_ext.clip.task import ensemble, heads
from sharpzo_ext.clip.data.views import SHIFT, Views


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


def fitted(kind="gda"):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(24, 6, generator=g), dim=1)
    labels = torch.arange(3).repeat(8)
    features = {"train": x, "val": x.flip(0)}
    return ensemble.fit(kind, x, labels, 3, features, labels.flip(0), tuned=True), features


@pytest.mark.parametrize("kind", heads.HEADS)
def test_a_prompt_file_keeps_the_head_and_its_weight(kind):
    e, features = fitted(kind)
    e.weight = 0.25
    tensors, metadata = e.to_prompt_file()
    head, weight = ensemble.from_prompt_file(tensors, metadata, "p.safetensors")
    assert weight == 0.25 and head.kind == kind and head.temperature == e.head.temperature
    torch.testing.assert_close(head.logits(features["val"]), e.logits["val"])
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
    cross = heads.cross_fitted("gda", features["train"], labels, 3)
    torch.testing.assert_close(e.offset(), ensemble.TRAINING_WEIGHT * e.head.temperature * cross)
    state = ensemble.Ensemble.from_state(e.state(), features)
    torch.testing.assert_close(state.logits["val"], e.logits["val"])
    assert state.weight == e.weight and state.head.temperature == e.head.temperature


def test_views_are_the_image_then_whole_pixel_flips_and_shifts():
    images = torch.rand(5, 3, 20, 20)
    views = Views(4, 5, seed=3)
    assert torch.equal(views.apply(0, images, 0), images)
    pad = round(SHIFT * 20)
    for v in range(1, 4):
        out = views.apply(v, images, 0)
        for i in range(5):
            source = images[i].flip(-1) if bool(views.flip[v - 1, i]) else images[i]
            dy, dx = (views.shift[v - 1, i] * pad).round().long().tolist()
            # away from the reflected border the view is the source moved by whole pixels
            inner = out[i, :, pad:-pad, pad:-pad]
            expected = source[:, pad + dy:20 - pad + dy, pad + dx:20 - pad + dx]
            assert torch.equal(inner, expected)
    # the same views whatever the batches
    batched = torch.cat([views.apply(2, images[:2], 0), views.apply(2, images[2:], 2)])
    assert torch.equal(batched, views.apply(2, images, 0))
    assert not torch.equal(Views(4, 5, seed=4).shift, views.shift)
