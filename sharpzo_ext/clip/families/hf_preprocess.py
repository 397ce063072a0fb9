"""The image preprocessing of a Hugging Face CLIP: its preprocessor_config.json read as
transformers' CLIPImageProcessor reads it.

Note [Preprocessing as CLIPImageProcessor]
Every key of preprocessor_config.json that changes the pixels is followed, with the processor's
defaults where a key is absent (224 for the sizes; without the file at all, the model's own
image size):
- do_resize, size: {"shortest_edge": n} (or a bare n) keeps the aspect ratio, the long edge
  becoming int(n * long / short); {"height": h, "width": w} resizes to exactly h x w;
- resample: PIL's codes 0 (nearest), 2 (bilinear) or 3 (bicubic, the default), on uint8 pixels
  with antialiasing, by torchvision's transforms.v2 as the processor does (the older
  transforms.functional rounds uint8 bicubic differently: up to 12 levels apart);
- do_center_crop, crop_size: the crop's corner at int((size - crop) / 2), zero padding where
  the image is smaller than the crop;
- do_rescale, rescale_factor (1/255), do_normalize, image_mean, image_std.
A PIL image is processed from its uint8 pixels, as the processor does; a float tensor in
[0, 1] (the embedded tasks' images) from the uint8 pixels it rounds to, as if saved as a PNG:
torchvision's uint8 bicubic clamps between its two passes, and resampling the float pixels
instead differs from the processor by up to 16 levels where the image is sharp. A key of
another kind, or a resampling filter the processor cannot apply to tensors, is refused. Tested
against CLIPImageProcessor itself on several configurations and aspect ratios.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

__all__ = ["hf_preprocess", "PreprocessError"]

_PROCESSOR_SIZE = 224  # CLIPImageProcessor's size and crop_size where its file has none
_DEFAULTS = {"do_resize": True, "resample": 3, "do_center_crop": True, "do_rescale": True,
             "rescale_factor": 1 / 255, "do_normalize": True}


class PreprocessError(ValueError):
    """A preprocessor_config.json that cannot be followed, saying which key."""


def _size(value, key: str) -> dict:
    """{"shortest_edge": n} or {"height": h, "width": w} from the config's `key`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"shortest_edge": value}
    if isinstance(value, dict):
        if set(value) == {"shortest_edge"} or set(value) == {"height", "width"}:
            if all(isinstance(v, int) and v > 0 for v in value.values()):
                return dict(value)
    raise PreprocessError(f"{key} must be a positive int, {{\"shortest_edge\": n}} or "
                          f"{{\"height\": h, \"width\": w}}; got {value!r}")


def _flag(processor: dict, key: str) -> bool:
    value = processor.get(key, _DEFAULTS[key])
    if not isinstance(value, bool):
        raise PreprocessError(f"{key} must be true or false, got {value!r}")
    return value


def _resized(pixels: torch.Tensor, size: dict, interpolation) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as tvF  # noqa: PLC0415

    height, width = pixels.shape[-2:]
    if "shortest_edge" in size:
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
        new = (new_long, new_short) if width <= height else (new_short, new_long)
    else:
        new = (size["height"], size["width"])
    return tvF.resize(pixels, list(new), interpolation=interpolation, antialias=True)


def _cropped(pixels: torch.Tensor, crop: dict) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as tvF  # noqa: PLC0415

    height, width = pixels.shape[-2:]
    crop_h, crop_w = crop["height"], crop["width"]
    if crop_w > width or crop_h > height:
        pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
        pixels = tvF.pad(pixels, [pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2],
                         fill=0)
        height, width = pixels.shape[-2:]
    return tvF.crop(pixels, int((height - crop_h) / 2.0), int((width - crop_w) / 2.0), crop_h,
                    crop_w)


def hf_preprocess(path: Path, image_size: int, mean: tuple, std: tuple) -> Callable:
    """The preprocessing that preprocessor_config.json at `path` describes (Note
    [Preprocessing as CLIPImageProcessor]); where it is silent, the processor's defaults:
    `image_size`, and OpenAI CLIP's normalization `mean` and `std`. PreprocessError names what
    cannot be followed."""
    from torchvision.transforms import InterpolationMode  # noqa: PLC0415
    from torchvision.transforms.v2 import functional as tvF  # noqa: PLC0415

    try:
        processor = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PreprocessError(str(error).splitlines()[0]) from None
    if not isinstance(processor, dict):
        raise PreprocessError("not a JSON object")
    do_resize, do_crop = _flag(processor, "do_resize"), _flag(processor, "do_center_crop")
    do_rescale, do_normalize = _flag(processor, "do_rescale"), _flag(processor, "do_normalize")
    # a file that omits a size gets the processor's own default; no file, the model's size
    default = _PROCESSOR_SIZE if path.is_file() else image_size
    size = _size(processor.get("size", default), "size")
    crop = _size(processor.get("crop_size", {"height": default, "width": default}), "crop_size")
    if do_crop and "height" not in crop:
        crop = {"height": crop["shortest_edge"], "width": crop["shortest_edge"]}
    filters = {0: InterpolationMode.NEAREST_EXACT, 2: InterpolationMode.BILINEAR,
               3: InterpolationMode.BICUBIC}
    resample = processor.get("resample", _DEFAULTS["resample"])
    if resample not in filters:
        raise PreprocessError(f"resample {resample!r} is not one of PIL's nearest (0), "
                              "bilinear (2) or bicubic (3)")
    try:
        factor = float(processor.get("rescale_factor", _DEFAULTS["rescale_factor"]))
        mean = [float(v) for v in processor.get("image_mean", mean)]
        std = [float(v) for v in processor.get("image_std", std)]
    except (TypeError, ValueError) as error:
        raise PreprocessError(f"rescale_factor, image_mean and image_std must be numbers: "
                              f"{error}") from None
    if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
        raise PreprocessError(f"image_mean and image_std must be 3 numbers (std > 0), got "
                              f"{mean} and {std}")

    def preprocess(image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            pixels = (image * 255).round().clamp(0, 255).to(torch.uint8)
        else:
            pixels = tvF.pil_to_tensor(image.convert("RGB"))
        if do_resize:
            pixels = _resized(pixels, size, filters[resample])
        if do_crop:
            pixels = _cropped(pixels, crop)
        pixels = pixels.float()
        if do_rescale:
            pixels = pixels * factor
        return tvF.normalize(pixels, mean, std) if do_normalize else pixels

    return preprocess
