"""A built-in task of real handwritten digits whose labels a horizontal flip changes: the 1,797
8 x 8 digits that scikit-learn ships (its `load_digits`, the test set of the UCI optical
recognition of handwritten digits data), drawn white on black at 32 x 32.

It is the package's check that nothing assumes a flip keeps the label (Note [Views for a
head]): a mirrored 2, 3, 4, 5, 6, 7 or 9 is no digit at all. scikit-learn is needed for this task
only (`pip install scikit-learn`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["NAME", "CLASSNAMES", "IMAGE_SIZE", "split"]

NAME = "digits"
CLASSNAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGE_SIZE = 32


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit as an RGB image (N, 3, 32, 32) in [0, 1], and its label (N,)."""
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415
    except ImportError:
        raise ImportError("the digits task needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    pixels = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16  # (N, 1, 8, 8)
    images = F.interpolate(pixels, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    return images.clamp(0, 1).expand(-1, 3, -1, -1).contiguous(), torch.as_tensor(digits.target)


def split(shots: int, seed: int, test_per_class: int = 100) -> dict[str, tuple[list, list[int]]]:
    """{split: (images, labels)}: `shots` images of every class for train and for val, and up to
    `test_per_class` of the others for test, drawn with the seed."""
    images, labels = _images()
    g = torch.Generator().manual_seed(seed)
    out: dict[str, tuple[list, list[int]]] = {s: ([], []) for s in ("train", "val", "test")}
    for c in range(len(CLASSNAMES)):
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=g)].tolist()
        for name, chosen in (("train", members[:shots]), ("val", members[shots:2 * shots]),
                             ("test", members[2 * shots:2 * shots + test_per_class])):
            out[name][0].extend(images[i] for i in chosen)
            out[name][1].extend([c] * len(chosen))
    return out
