"""Few-shot image classification data: the embedded synthetic task, ImageFolder trees and CoOp's
layouts of the eleven data sets of the paper (with their split_zhou_*.json files).

A data set is a list of labelled items per split ("train", "val", "test", optionally
"shifted") plus class names; ``few_shot`` samples shots per class from train and val with a
seed, as CoOp does (val gets min(shots, 4) per class). Items are image paths (loaded with PIL and
the model's preprocessing when their features are computed) or, for the embedded task, tensors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Callable, Sequence

import torch

from sharpzo_ext.errors import UserError

__all__ = ["DataError", "Dataset", "EMBEDDED_TASKS", "BUILTIN_TASKS", "embedded_task",
           "builtin_task", "image_folder", "coop_dataset", "few_shot", "load_images",
           "COOP_DATASETS"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DataError(UserError):
    """Data that cannot be used, with a message that says which and why."""


@dataclasses.dataclass
class Dataset:
    classnames: list[str]
    splits: dict[str, tuple[list, list[int]]]  # split -> (items, labels)
    identity: dict  # what the data is, for the feature cache key

    def labels(self, split: str) -> torch.Tensor:
        return torch.tensor(self.splits[split][1], dtype=torch.long)


# ---- the embedded task -------------------------------------------------------------------------

EMBEDDED_TASKS = {"embedded": "outline", "embedded-cluttered": "cluttered",
                  "embedded-grainy": "grainy", "embedded-colors": "colors",
                  "embedded-stencil": "stencil"}


def embedded_task(shots: int = 16, seed: int = 0, test_per_class: int = 100,
                  variant: str = "outline") -> Dataset:
    """An embedded task (sharpzo_ext.clip.data.synthetic.task_split): shapes, or colour-shape pairs,
    drawn as outlines (`variant`, one of synthetic.TASK_VARIANTS); train and val have `shots`
    images per class, test and the shifted split `test_per_class`. Items are image tensors in
    [0, 1]."""
    from sharpzo_ext.clip.data import synthetic  # noqa: PLC0415

    splits = {}
    for split, per_class in (("train", shots), ("val", shots), ("test", test_per_class),
                             ("shifted", test_per_class)):
        images, labels = synthetic.task_split(split, per_class, seed, variant)
        splits[split] = (list(images), labels.tolist())
    identity = {"kind": "embedded-shapes", "version": 1, "shots": shots, "seed": seed,
                "test_per_class": test_per_class, "variant": variant}
    return Dataset(synthetic.TASK_VARIANTS[variant].classnames(), splits, identity)


# ---- the built-in tasks: the embedded ones and real handwritten digits --------------------------

BUILTIN_TASKS = (*EMBEDDED_TASKS, "digits")


def builtin_task(name: str, shots: int = 16, seed: int = 0) -> Dataset:
    """The built-in task `name` (one of BUILTIN_TASKS): an embedded task, or "digits"
    (data/digits.py), whose labels a flip changes."""
    if name in EMBEDDED_TASKS:
        return embedded_task(shots, seed, variant=EMBEDDED_TASKS[name])
    from sharpzo_ext.clip.data import digits  # noqa: PLC0415

    try:
        splits = digits.split(shots, seed)
    except ImportError as error:
        raise DataError(str(error)) from None
    identity = {"kind": "sklearn-digits", "version": 1, "shots": shots, "seed": seed,
                "test_per_class": 100}
    return Dataset(list(digits.CLASSNAMES), splits, identity)


# ---- image folders -----------------------------------------------------------------------------

def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no class folders (expected {root}/<class>/<images>)")
    for folder in folders:
        if not _images_in(folder):
            raise DataError(f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return folders


def _identity_of(paths: Sequence[Path]) -> list:
    out = []
    for p in paths:
        stat = p.stat()
        out.append([str(p.resolve()), stat.st_size, stat.st_mtime_ns])
    return out


def _folder_classnames(folders: list[str], root: Path) -> list[str]:
    """Class names of class folders (underscores as spaces), or DataError if two folders give
    the same name: their classes could never be told apart."""
    names = [folder.replace("_", " ") for folder in folders]
    seen: dict[str, str] = {}
    for folder, name in zip(folders, names):
        if name in seen:
            raise DataError(f"{root} has class folders {seen[name]!r} and {folder!r}, which both "
                            f"name the class {name!r}; rename or merge one")
        seen[name] = folder
    return names


def image_folder(root: str | Path, seed: int = 0, test_fraction: float = 0.5) -> Dataset:
    """An ImageFolder tree: root/{train,val,test,shifted}/<class>/<image> (val and shifted
    optional; without val, val is drawn from train), or root/<class>/<image>, split per class into
    train and test (test_fraction) with the seed. Class names are the folder names with
    underscores as spaces, in sorted order."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"--data {root} is a file; expected an ImageFolder tree (a folder of "
                        "class folders), 'embedded' or 'embedded-cluttered'")
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    splits: dict[str, tuple[list, list[int]]] = {}
    if (root / "train").is_dir():
        folders = _class_folders(root / "train")
        names = [f.name for f in folders]
        if not (root / "test").is_dir():
            raise DataError(f"{root} has train/ but no test/")
        for split in ("train", "val", "test", "shifted"):
            if not (root / split).is_dir():
                continue
            split_folders = {f.name: f for f in _class_folders(root / split)}
            unknown = sorted(set(split_folders) - set(names))
            if unknown:
                raise DataError(f"{root / split} has classes that train/ lacks: {unknown[:5]}")
            items, labels = [], []
            for label, name in enumerate(names):
                if name in split_folders:
                    images = _images_in(split_folders[name])
                    items += images
                    labels += [label] * len(images)
            splits[split] = (items, labels)
    else:
        folders = _class_folders(root)
        names = [f.name for f in folders]
        rng = random.Random(seed)
        train, test = ([], []), ([], [])
        for label, folder in enumerate(folders):
            images = _images_in(folder)
            rng.shuffle(images)
            cut = max(1, int(round(len(images) * (1 - test_fraction))))
            if cut >= len(images):
                raise DataError(f"class folder {folder} needs at least two images to split into "
                                "train and test")
            train[0].extend(images[:cut]), train[1].extend([label] * cut)
            test[0].extend(images[cut:]), test[1].extend([label] * (len(images) - cut))
        splits = {"train": train, "test": test}
    all_paths = [p for items, _ in splits.values() for p in items]
    identity = {"kind": "image-folder", "root": str(root.resolve()), "seed": seed,
                "files": _identity_of(all_paths)}
    return Dataset(_folder_classnames(names, root), splits, identity)


# ---- CoOp's layouts ----------------------------------------------------------------------------

# name -> (dataset folder, image folder, split file); CoOp's DATASETS.md layout
COOP_DATASETS = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": ("food-101", "images", "split_zhou_Food101.json"),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    "fgvc_aircraft": ("fgvc_aircraft", "images", None),
    "imagenet": ("imagenet", "images", None),
}


def coop_dataset(name: str, root: str | Path) -> Dataset:
    """One of the paper's eleven data sets in CoOp's layout under root (the folder that holds
    e.g. caltech-101/ and oxford_pets/)."""
    if name not in COOP_DATASETS:
        raise DataError(f"unknown CoOp data set {name!r}; known: {', '.join(COOP_DATASETS)}")
    folder, image_dir, split_file = COOP_DATASETS[name]
    base = Path(root) / folder
    if not base.is_dir():
        raise DataError(f"{name}: {base} does not exist (expected CoOp's layout under {root})")
    if name == "fgvc_aircraft":
        return _aircraft(base)
    if name == "imagenet":
        return _imagenet(base)
    split_path = base / split_file
    if not split_path.is_file():
        raise DataError(f"{name}: split file {split_path} is missing")
    try:
        table = json.loads(split_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{name}: cannot read {split_path}: {error}") from None
    classnames: dict[int, str] = {}
    splits = {}
    for split in ("train", "val", "test"):
        rows = table.get(split)
        if not isinstance(rows, list):
            raise DataError(f"{split_path} has no {split!r} list")
        items, labels = [], []
        for row in rows:
            try:
                path, label, classname = row
            except (TypeError, ValueError):
                raise DataError(f"{split_path}: malformed entry {row!r}") from None
            items.append(base / image_dir / path)
            labels.append(int(label))
            classnames[int(label)] = str(classname)
        splits[split] = (items, labels)
    if sorted(classnames) != list(range(len(classnames))):
        raise DataError(f"{split_path}: labels are not 0 .. {len(classnames) - 1}")
    identity = {"kind": "coop", "name": name, "split": _identity_of([split_path])}
    return Dataset([classnames[i] for i in range(len(classnames))], splits, identity)


def _aircraft(base: Path) -> Dataset:
    variants_file = base / "variants.txt"
    if not variants_file.is_file():
        raise DataError(f"fgvc_aircraft: {variants_file} is missing")
    classnames = [line.strip() for line in variants_file.read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(classnames)}
    splits = {}
    for split in ("train", "val", "test"):
        listing = base / f"images_variant_{split}.txt"
        if not listing.is_file():
            raise DataError(f"fgvc_aircraft: {listing} is missing")
        items, labels = [], []
        for line in listing.read_text().splitlines():
            if not line.strip():
                continue
            image, variant = line.strip().split(" ", 1)
            if variant not in index:
                raise DataError(f"{listing}: unknown variant {variant!r}")
            items.append(base / "images" / f"{image}.jpg")
            labels.append(index[variant])
        splits[split] = (items, labels)
    identity = {"kind": "coop", "name": "fgvc_aircraft", "split": _identity_of([variants_file])}
    return Dataset(classnames, splits, identity)


def _imagenet(base: Path) -> Dataset:
    names_file = base / "classnames.txt"
    if not names_file.is_file():
        raise DataError(f"imagenet: {names_file} is missing (CoOp's 'wnid classname' list)")
    wnids, classnames = [], []
    for line in names_file.read_text().splitlines():
        if line.strip():
            wnid, classname = line.strip().split(" ", 1)
            wnids.append(wnid)
            classnames.append(classname)
    splits = {}
    for split, folder in (("train", "train"), ("test", "val")):
        items, labels = [], []
        for label, wnid in enumerate(wnids):
            class_dir = base / "images" / folder / wnid
            if not class_dir.is_dir():
                raise DataError(f"imagenet: {class_dir} is missing")
            images = _images_in(class_dir)
            items += images
            labels += [label] * len(images)
        splits[split] = (items, labels)
    identity = {"kind": "coop", "name": "imagenet", "split": _identity_of([names_file])}
    return Dataset(classnames, splits, identity)


# ---- few-shot sampling and loading -------------------------------------------------------------

def _val_share(n: int, shots: int, val_shots: int) -> int:
    """How many of a class's n train images go to validation when the data set has no val
    split (Note [Few-shot splits of small classes])."""
    if n < 2:
        return 0
    return min(val_shots, max(n - shots, math.ceil(n / 5)))


# Note [Few-shot splits of small classes]
# Without a val split, validation is carved from train: min(shots, 4) images per class beside
# the `shots` training ones. A class with fewer than shots + 4 images cannot give both, and
# taking all of them for training would leave validation empty (and prompt selection blind).
# Such a class gives v = min(4, max(n - shots, ceil(n / 5))) images to validation and the rest,
# up to shots, to training: at least one of each from two images on (a single image trains).
# Classes with enough images split exactly as before. If no class can spare an image, the data
# has no val split, and a run selects its prompt by training loss instead.
def few_shot(data: Dataset, shots: int, seed: int = 0) -> Dataset:
    """At most `shots` items per class from train, and min(shots, 4) per class from val (val drawn
    from the rest of train when the data set has no val split, Note [Few-shot splits of small
    classes]), chosen with the seed."""
    if shots < 1:
        raise DataError(f"shots must be >= 1, got {shots}")
    if len(data.classnames) < 2:
        raise DataError(f"the data has {len(data.classnames)} class(es); classification needs "
                        "at least 2")
    rng = random.Random(seed)
    items, labels = data.splits["train"]
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    missing = [data.classnames[c] for c in range(len(data.classnames)) if c not in by_class]
    if missing:
        raise DataError(f"the train split has no images of {len(missing)} class(es): {missing[:5]}")
    val_shots = min(shots, 4)
    carve = "val" not in data.splits
    train_idx, rest_idx = [], []
    for label in sorted(by_class):
        n = len(by_class[label])
        keep = n - _val_share(n, shots, val_shots) if carve else n
        chosen = rng.sample(by_class[label], min(shots, keep))
        train_idx += chosen
        rest_idx += [i for i in by_class[label] if i not in set(chosen)]
    splits = dict(data.splits)
    splits["train"] = ([items[i] for i in train_idx], [labels[i] for i in train_idx])
    if not carve:
        v_items, v_labels = data.splits["val"]
        pool = list(range(len(v_items)))
    else:
        v_items, v_labels, pool = items, labels, rest_idx
    by_class = {}
    for i in pool:
        by_class.setdefault(v_labels[i], []).append(i)
    val_idx = [i for label in sorted(by_class)
               for i in rng.sample(by_class[label], min(val_shots, len(by_class[label])))]
    if val_idx:
        splits["val"] = ([v_items[i] for i in val_idx], [v_labels[i] for i in val_idx])
    identity = {**data.identity, "few_shot": {"shots": shots, "seed": seed}}
    return Dataset(data.classnames, splits, identity)


# Note [Pixels wider than 8 bits]
# PIL opens a 16-bit grayscale PNG (or TIFF) in mode I;16 (I for some writers), and
# convert("RGB") clips those values to 255: every image turns white. Such pixels are scaled from
# the 16-bit range to 8 bits first (value / 257, rounded), which keeps the image as it looks.
# Float pixels (mode F) have no range to scale from and are refused.
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _rgb(image, item):
    """A PIL image as 8-bit RGB (Note [Pixels wider than 8 bits])."""
    if image.mode in _SIXTEEN_BIT:
        import numpy as np  # noqa: PLC0415
        from PIL import Image  # noqa: PLC0415

        scaled = np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257), 0, 255)
        image = Image.fromarray(scaled.astype(np.uint8), "L")
    elif image.mode == "F":
        raise DataError(f"cannot read image {item}: its pixels are floats (PIL mode F), which "
                        "have no known range; save it with 8- or 16-bit pixels")
    return image.convert("RGB")


def load_images(items: list, preprocess: Callable) -> torch.Tensor:
    """Preprocessed images (N, 3, H, W) from paths (PIL + preprocess) or tensors (preprocess)."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    out = []
    for item in items:
        if isinstance(item, torch.Tensor):
            out.append(preprocess(item))
            continue
        try:
            with Image.open(item) as image:
                out.append(preprocess(_rgb(image, item)))
        except FileNotFoundError:
            raise DataError(f"image {item} does not exist") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                Image.DecompressionBombError) as error:
            raise DataError(f"cannot read image {item}: {error}") from None
    if not out:
        return torch.empty(0)
    return torch.stack(out)
