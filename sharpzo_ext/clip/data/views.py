"""Augmented views of the training images, whose averaged features a head is fitted to.

Note [Views for a head]
A head estimates class statistics from a few shots, and an image's feature carries, besides its
class, where the object sits and which way it faces. Averaging the features of several views of
each training image (the image itself, then random horizontal flips and shifts) estimates the
class means from features with that part averaged out. On the embedded grainy task GDA gains
2-3 points from 16 views (docs/heads.md). The cost is views x training images of image
encodings, once (the feature cache keeps the averages).

Views move whole pixels: a horizontal flip and an integer shift of up to SHIFT of the side,
with reflected borders. No resampling: bilinear crops, rotations or sub-pixel shifts smooth
the pixels, and on a grainy task the smoothed views no longer look like the test images
(GDA fell 5-8 points below no views at all in that trial). The views are a pure function of
(seed, view, image index), whatever the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["SHIFT", "RECIPE", "Views"]

SHIFT = 0.1    # the largest shift, as a fraction of the image side
RECIPE = "flip-shift-0.1"  # in the feature cache key: other recipes are other features
_STREAM = 0x5EED_71E5  # seeds the views' generator beside the run's seed


class Views:
    """The `count` views of `n` images drawn from `seed`: view 0 is the image itself."""

    def __init__(self, count: int, n: int, seed: int):
        self.count = count
        g = torch.Generator().manual_seed((seed * 1_000_003 + _STREAM) % (1 << 63))
        shape = (count - 1, n)
        self.flip = torch.rand(shape, generator=g) < 0.5
        self.shift = torch.rand(shape + (2,), generator=g) * 2 - 1  # in [-1, 1) of SHIFT

    def apply(self, view: int, images: torch.Tensor, start: int) -> torch.Tensor:
        """View `view` of images (B, C, H, W), the dataset's images start .. start + B - 1."""
        if view == 0:
            return images
        b, _, h, w = images.shape
        rows = slice(start, start + b)
        flipped = torch.where(self.flip[view - 1, rows].view(b, 1, 1, 1), images.flip(-1), images)
        pad_h, pad_w = max(1, round(SHIFT * h)), max(1, round(SHIFT * w))
        padded = F.pad(flipped, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
        dy = (self.shift[view - 1, rows, 0] * pad_h).round().long() + pad_h
        dx = (self.shift[view - 1, rows, 1] * pad_w).round().long() + pad_w
        return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
