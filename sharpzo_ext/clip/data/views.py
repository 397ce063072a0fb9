"""Augmented views of the training images, whose averaged features a head is fitted to.

Note [Views for a head]
A head estimates class statistics from a few shots, and an image's feature carries, besides its
class, where the object sits and which way it faces. Averaging the features of several views of
each training image (the image itself, then random shifts, and in the flip-shift views also
random horizontal flips) estimates the class means from features with that part averaged out.
On the embedded tasks GDA gains 1 to 4 points from 16 views (docs/heads.md). The cost is views x
training images of image encodings, once (the feature cache keeps the averages).

A flip is not always harmless: a mirrored digit is another digit or none, and the same holds for
text, arrows and anything with a handedness. So there are three kinds of views (AUGMENTS): none
(the image alone), shifts only, and shifts with flips; a run chooses among them on validation
unless told which (runs/methods.py), and never assumes that a flip keeps the label.

Views move whole pixels: an integer shift of up to SHIFT of the side, with reflected borders,
then a horizontal flip. No resampling: bilinear crops, rotations or sub-pixel shifts smooth the
pixels, and on a grainy task the smoothed views no longer look like the test images (GDA fell
5-8 points below no views at all in that trial). A flip-shift view is its shift view, mirrored
where its flip is drawn: the two kinds share their shifts and differ by the flips alone, so
the flip-shift views reuse the shift views' encodings of the images they do not mirror. The
views are a pure function of (seed, view, image index), whatever the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["SHIFT", "AUGMENTS", "RECIPE", "Views"]

SHIFT = 0.1    # the largest shift, as a fraction of the image side
AUGMENTS = ("none", "shift", "flip-shift")
RECIPE = "shift-then-flip-0.1"  # in the feature cache key: other recipes are other features
_STREAM = 0x5EED_71E5  # seeds the views' generator beside the run's seed


class Views:
    """The `count` views of `n` images drawn from `seed`: view 0 is the image itself."""

    def __init__(self, count: int, n: int, seed: int):
        self.count = count
        g = torch.Generator().manual_seed((seed * 1_000_003 + _STREAM) % (1 << 63))
        shape = (count - 1, n)
        self.flip = torch.rand(shape, generator=g) < 0.5
        self.shift = torch.rand(shape + (2,), generator=g) * 2 - 1  # in [-1, 1) of SHIFT

    def flips(self, view: int, start: int, b: int) -> torch.Tensor:
        """(b,) bool: which of the images start .. start + b - 1 a flip-shift view mirrors."""
        if view == 0:
            return torch.zeros(b, dtype=torch.bool)
        return self.flip[view - 1, start:start + b]

    def shifted(self, view: int, images: torch.Tensor, start: int) -> torch.Tensor:
        """Shift view `view` of images (B, C, H, W), the dataset's images start .. start + B - 1
        (the flip-shift view is this, mirrored where `flips` says)."""
        if view == 0:
            return images
        b, _, h, w = images.shape
        rows = slice(start, start + b)
        pad_h, pad_w = max(1, round(SHIFT * h)), max(1, round(SHIFT * w))
        padded = F.pad(images, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
        dy = (self.shift[view - 1, rows, 0] * pad_h).round().long() + pad_h
        dx = (self.shift[view - 1, rows, 1] * pad_w).round().long() + pad_w
        return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
