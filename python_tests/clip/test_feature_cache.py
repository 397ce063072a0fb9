"""The feature cache (clip/runs/feature_cache.py): every stage of every split, and the training
images' features averaged over views of each kind, against their definition; whatever else is
computed beside them, and whether they come from the cache or not."""

import pytest
import torch
import torch.nn.functional as F

from sharpzo_ext.clip.data.datasets import Dataset
from sharpzo_ext.clip.data.views import Views
from sharpzo_ext.clip.families import load_model
from sharpzo_ext.clip.runs.feature_cache import FeatureCache
from sharpzo_ext.clip.task.features import encode

IMAGES = list(torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
DATA = Dataset(["a", "b"], {"train": (IMAGES, [0, 1] * 3)}, {"kind": "test-images"})


def cache(loaded, directory) -> FeatureCache:
    return FeatureCache(loaded, DATA, directory, "cpu", progress=False)


def test_view_averages_are_their_definition_and_do_not_depend_on_what_is_beside(tmp_path):
    loaded = load_model("embedded")
    both = cache(loaded, tmp_path / "a").views(5, 3, ("shift", "flip-shift"))
    assert not any(hit for _, hit in both.values())
    images = torch.stack([loaded.preprocess(x) for x in IMAGES])
    views = Views(5, 6, 3)
    for augment in ("shift", "flip-shift"):
        total = 0
        for v in range(5):
            x = views.shifted(v, images, 0)
            if augment == "flip-shift":
                x = torch.where(views.flips(v, 0, 6)[:, None, None, None], x.flip(-1), x)
            total = total + encode(loaded.family, loaded.model, x).pre
        torch.testing.assert_close(both[augment][0].pre, F.normalize(total, dim=-1))
        alone = cache(loaded, tmp_path / augment).views(5, 3, (augment,))[augment][0]
        for stage in ("final", "pre"):  # bit for bit, computed alone or beside the other kind
            assert torch.equal(alone.stage(stage), both[augment][0].stage(stage))
    assert not torch.equal(both["shift"][0].final, both["flip-shift"][0].final)
    again = cache(loaded, tmp_path / "a").views(5, 3, ("flip-shift", "shift"))
    assert all(hit for _, hit in again.values())
    assert torch.equal(again["shift"][0].pre, both["shift"][0].pre)


def test_a_split_s_features_hold_every_stage_and_come_back_from_the_cache(tmp_path):
    loaded = load_model("embedded")
    features, hit = cache(loaded, tmp_path).split("train")
    assert not hit and features.stages == ("final", "pre")
    images = torch.stack([loaded.preprocess(x) for x in IMAGES])
    expected = encode(loaded.family, loaded.model, images)
    assert torch.equal(features.pre, expected.pre) and torch.equal(features.final,
                                                                   expected.final)
    again, hit = cache(loaded, tmp_path).split("train")
    assert hit and torch.equal(again.pre, features.pre)


def damaged(x: torch.Tensor, how: str) -> torch.Tensor:
    return {
        "nan": lambda: x.index_fill(0, torch.tensor([1]), float("nan")),
        "inf": lambda: x.index_fill(0, torch.tensor([0]), float("inf")),
        "wider": lambda: torch.cat([x, x[:, :3]], 1),
        "fewer rows": lambda: x[:-1],
        "int64": lambda: x.long(),
        "float16": lambda: x.half(),
        "scaled": lambda: x * 1e30,
        "zeros": lambda: torch.zeros_like(x),
    }[how]().contiguous()


@pytest.mark.parametrize("how", ["nan", "inf", "wider", "fewer rows", "int64", "float16",
                                 "scaled", "zeros", "no pre", "text"])
@pytest.mark.parametrize("kind", ["split", "views"])
def test_a_damaged_cache_file_is_computed_again_and_says_so(tmp_path, how, kind):
    # Note [A damaged cache file is computed again]
    from safetensors.torch import load_file, save_file

    loaded = load_model("embedded")

    def features():
        if kind == "split":
            return cache(loaded, tmp_path).split("train")
        return cache(loaded, tmp_path).views(2, 0, ("shift",))["shift"]

    good, _ = features()
    [path] = tmp_path.glob("features-*.safetensors")
    if how == "text":
        path.write_text("not a cache file")
    else:
        tensors = load_file(str(path))
        if how == "no pre":
            del tensors["pre"]
        else:
            tensors["pre"] = damaged(tensors["pre"], how)
        save_file(tensors, str(path))
    with pytest.warns(UserWarning, match=f"feature cache file {path} is damaged"):
        again, hit = features()
    assert not hit
    assert torch.equal(again.pre, good.pre) and torch.equal(again.final, good.final)
    again, hit = features()  # replaced: read from the cache, without a word
    assert hit and torch.equal(again.pre, good.pre)


def test_features_read_from_the_cache_are_in_aligned_memory(tmp_path):
    # Note [Cached features in aligned memory]: safetensors' tensors start past its header
    loaded = load_model("embedded")
    computed, _ = cache(loaded, tmp_path).split("train")
    read, hit = cache(loaded, tmp_path).split("train")
    assert hit
    for stage in read.stages:
        assert read.stage(stage).data_ptr() % 64 == computed.stage(stage).data_ptr() % 64 == 0
