"""Image features by stage (clip/task/features.py and each family's image_stages): the final
features are the family's own image features, the pre-projection ones what its projection
reads; and the Features type's rows, devices and refusals."""

import pytest
import torch
import torch.nn.functional as F

from sharpzo_ext.clip import families
from sharpzo_ext.clip.task.features import Features, StageError, encode

from clip_helpers import tiny_clip
from hf_helpers import tiny_hf_clip

IMAGES = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_a_vit_s_stages_are_its_class_token_before_and_after_the_projection():
    model, _ = tiny_clip("vit")
    final, pre = families.of(model).image_stages(model, IMAGES)
    assert torch.equal(final, model.encode_image(IMAGES))  # bit for bit, one pass
    assert pre.shape == (4, model.visual.proj.shape[0])
    # what the projection reads: the class token after ln_post, seen by a hook on ln_post
    seen = []
    hook = model.visual.ln_post.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        model.encode_image(IMAGES)
    finally:
        hook.remove()
    assert torch.equal(pre, seen[0][:, 0])
    assert torch.equal(pre @ model.visual.proj, final)


@torch.no_grad()
def test_a_resnet_s_stages_are_its_attention_pool_and_the_mean_of_what_it_reads():
    model, _ = tiny_clip("resnet")
    final, pre = families.of(model).image_stages(model, IMAGES)
    assert torch.equal(final, model.encode_image(IMAGES))
    seen = []
    hook = model.visual.layer4.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        model.encode_image(IMAGES)
    finally:
        hook.remove()
    assert torch.equal(pre, seen[0].mean(dim=(2, 3)))
    assert pre.shape[1] == model.visual.attnpool.c_proj.in_features  # wider than final
    assert pre.shape[1] > final.shape[1]


@torch.no_grad()
def test_a_hugging_face_clip_s_stages_are_its_pooler_output_and_projection():
    model = tiny_hf_clip(seed=1)
    final, pre = families.of(model).image_stages(model, IMAGES)
    assert torch.equal(final, model.get_image_features(pixel_values=IMAGES).pooler_output)
    assert torch.equal(pre, model.vision_model(pixel_values=IMAGES).pooler_output)


@torch.no_grad()
def test_the_embedded_model_has_both_stages_and_encode_normalizes_them():
    loaded = families.load_model("embedded")
    features = encode(loaded.family, loaded.model, IMAGES)
    assert features.stages == ("final", "pre")
    assert features.final.shape == (4, 64) and features.pre.shape == (4, 512)
    for x in (features.final, features.pre):
        torch.testing.assert_close(x.norm(dim=1), torch.ones(4))
    final, pre = loaded.family.image_stages(loaded.model, IMAGES)
    assert torch.equal(features.pre, F.normalize(pre, dim=-1))


def test_features_keep_their_stages_row_by_row():
    features = Features(torch.randn(5, 3), torch.randn(5, 7))
    assert len(features) == 5
    part = features[1:3]
    assert torch.equal(part.final, features.final[1:3]) and torch.equal(part.pre,
                                                                         features.pre[1:3])
    assert torch.equal(features.stage("pre"), features.pre)
    assert set(features.tensors()) == {"final", "pre"}
    again = Features.from_tensors(features.tensors())
    assert torch.equal(again.pre, features.pre)
    final_only = Features(torch.randn(5, 3))
    assert final_only.stages == ("final",) and final_only[1:2].pre is None
    with pytest.raises(StageError, match="pre-projection features are not known"):
        final_only.stage("pre")
    with pytest.raises(StageError, match="a stage is one of final, pre"):
        features.stage("middle")
