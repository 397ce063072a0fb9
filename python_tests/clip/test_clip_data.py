"""Data: image folders, CoOp's layouts, few-shot sampling, the feature cache, and their errors."""

import json

import pytest
import torch
from PIL import Image

from sharpzo_ext.clip.data import datasets as data_lib, synthetic
from sharpzo_ext.clip.data.datasets import DataError


def write_image(path, color=(255, 0, 0), size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def make_folder(root, classes=("cat", "red_dog"), per_class=6, layout="flat"):
    for c, name in enumerate(classes):
        for i in range(per_class):
            if layout == "flat":
                write_image(root / name / f"{i}.png", (40 * c, 10 * i, 0))
            else:
                for split in ("train", "test"):
                    write_image(root / split / name / f"{i}.png", (40 * c, 10 * i, 0))
    return root


def test_flat_image_folder_splits_per_class(tmp_path):
    data = data_lib.image_folder(make_folder(tmp_path / "d"), seed=0)
    assert data.classnames == ["cat", "red dog"]  # underscores as spaces
    assert len(data.splits["train"][0]) == len(data.splits["test"][0]) == 6
    assert sorted(data.splits["train"][1]) == [0, 0, 0, 1, 1, 1]
    other = data_lib.image_folder(make_folder(tmp_path / "d"), seed=1)
    assert data.splits["train"][0] != other.splits["train"][0]  # the seed decides the split


def test_split_image_folder_and_few_shot(tmp_path):
    data = data_lib.image_folder(make_folder(tmp_path / "d", layout="split"))
    few = data_lib.few_shot(data, shots=2, seed=0)
    assert len(few.splits["train"][0]) == 4 and few.splits["train"][1] == [0, 0, 1, 1]
    val = set(few.splits["val"][0])  # drawn from the rest of train: disjoint from the shots
    assert len(val) == 4 and not val & set(few.splits["train"][0])
    assert data_lib.few_shot(data, 2, 0).splits == few.splits
    assert data_lib.few_shot(data, 2, 1).splits["train"] != few.splits["train"]


def test_coop_layout(tmp_path):
    base = tmp_path / "root" / "caltech-101"
    rows = {split: [] for split in ("train", "val", "test")}
    for split in rows:
        for label, name in enumerate(["face", "leopard"]):
            for i in range(3):
                rel = f"{name}/{split}_{i}.jpg"
                write_image(base / "101_ObjectCategories" / rel)
                rows[split].append([rel, label, name])
    (base / "split_zhou_Caltech101.json").write_text(json.dumps(rows))
    data = data_lib.coop_dataset("caltech101", tmp_path / "root")
    assert data.classnames == ["face", "leopard"]
    few = data_lib.few_shot(data, 2, 0)
    assert len(few.splits["train"][0]) == 4 and len(few.splits["val"][0]) == 4
    assert len(few.splits["test"][0]) == 6


def test_embedded_task_is_deterministic():
    a = data_lib.embedded_task(shots=2, test_per_class=3)
    b = data_lib.embedded_task(shots=2, test_per_class=3)
    assert len(a.classnames) == 10 and set(a.splits) == {"train", "val", "test", "shifted"}
    assert all(torch.equal(x, y) for x, y in zip(a.splits["shifted"][0], b.splits["shifted"][0]))
    assert not torch.equal(a.splits["train"][0][0], a.splits["val"][0][0])


@pytest.mark.parametrize("setup, call, match", [
    (lambda root: None, lambda root: data_lib.image_folder(root / "missing"), "does not exist"),
    (lambda root: (root / "d" / "empty_class").mkdir(parents=True),
     lambda root: data_lib.image_folder(root / "d"), "has no images"),
    (lambda root: (root / "d").mkdir(), lambda root: data_lib.image_folder(root / "d"),
     "no class folders"),
    (lambda root: make_folder(root / "d", layout="split") and (root / "d" / "val" / "ghost").mkdir(
        parents=True) or write_image(root / "d" / "val" / "ghost" / "x.png"),
     lambda root: data_lib.image_folder(root / "d"), "classes that train/ lacks"),
    (lambda root: None, lambda root: data_lib.coop_dataset("imagenette", root), "unknown CoOp"),
    (lambda root: (root / "dtd").mkdir(), lambda root: data_lib.coop_dataset("dtd", root),
     "split file"),
])
def test_data_errors(tmp_path, setup, call, match):
    setup(tmp_path)
    with pytest.raises(DataError, match=match):
        call(tmp_path)


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        data_lib.load_images([bad], lambda image: torch.zeros(3, 4, 4))


def test_sixteen_bit_images_are_scaled_not_clipped_white(tmp_path):
    # #28.3: convert("RGB") clipped mode I;16 pixels to 255, every image white
    import numpy as np
    from torchvision.transforms.functional import pil_to_tensor

    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode == "I;16"
    pixels = data_lib.load_images([tmp_path / "deep.png"], pil_to_tensor)[0]
    expected = torch.from_numpy(np.rint(ramp / 257).astype(np.uint8))
    assert torch.equal(pixels, expected.expand(3, 16, 16))  # 0 (black) to 255 (white)
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(DataError, match="cannot read image .*float.tif: its pixels are floats"):
        data_lib.load_images([tmp_path / "float.tif"], pil_to_tensor)


def test_class_folders_that_name_one_class_are_refused(tmp_path):
    # #28.13: "red_car" and "red car" both became the class "red car"
    make_folder(tmp_path / "data", classes=("red_car", "red car", "blue"))
    with pytest.raises(DataError, match="class folders 'red car' and 'red_car', which both name "
                                        "the class 'red car'"):
        data_lib.image_folder(tmp_path / "data")


def test_an_image_above_the_decompression_bomb_limit_is_one_error(tmp_path, monkeypatch):
    # #28.9: PIL's DecompressionBombError is neither an OSError nor a ValueError
    from PIL import Image as PILImage

    write_image(tmp_path / "big.png", size=(64, 64))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # 64 x 64 > 2 x 100: a "bomb"
    with pytest.raises(DataError, match="cannot read image .*big.png"):
        data_lib.load_images([tmp_path / "big.png"], lambda image: torch.zeros(3, 4, 4))


@pytest.mark.parametrize("per_class, shots, train_n, val_n", [
    (20, 16, 16, 4),  # enough images: as before
    (8, 16, 6, 2),    # #12: all 8 went to train and validation was empty
    (2, 16, 1, 1),
    (1, 16, 1, 0),
])
def test_few_shot_carves_validation_from_small_classes(tmp_path, per_class, shots, train_n, val_n):
    data = data_lib.image_folder(make_folder(tmp_path, per_class=per_class, layout="split"))
    few = data_lib.few_shot(data, shots, seed=0)
    train_items, train_labels = few.splits["train"]
    assert [train_labels.count(c) for c in (0, 1)] == [train_n, train_n]
    if val_n:
        val_items, val_labels = few.splits["val"]
        assert [val_labels.count(c) for c in (0, 1)] == [val_n, val_n]
        assert not set(train_items) & set(val_items)
    else:
        assert "val" not in few.splits  # selection falls back to the training loss


def test_a_single_class_is_refused(tmp_path):
    data = data_lib.image_folder(make_folder(tmp_path, classes=("cat",)))
    with pytest.raises(DataError, match="at least 2"):
        data_lib.few_shot(data, 4)


def test_data_naming_a_file_says_so(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        data_lib.image_folder(tmp_path / "f.txt")


def test_grainy_task_is_the_outline_task_under_grain():
    outline, _ = synthetic.task_split("test", 2, seed=1, variant="outline")
    grainy, labels = synthetic.task_split("test", 2, seed=1, variant="grainy")
    assert labels.tolist() == sorted(labels.tolist()) and len(labels) == 20
    noise = (grainy - outline)[(outline > 0.3) & (outline < 0.7)]  # where nothing is clamped
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 0.1) < 0.01
    again, _ = synthetic.task_split("test", 2, seed=1, variant="grainy")
    assert torch.equal(grainy, again)


def test_colors_task_has_forty_colour_shape_classes():
    data = data_lib.embedded_task(shots=1, test_per_class=1, variant="colors")
    names = data.classnames
    red, green = list(synthetic.COLORS)[:2]
    assert len(names) == 40 == len(set(names))
    circle = synthetic.SHAPES[0]
    assert names[0] == f"{red} {circle}" and names[10] == f"{green} {circle}"
    assert sorted(data.splits["test"][1]) == list(range(40))
    assert data.identity["variant"] == "colors"
