"""Loading the CLIP models PromptTask tunes: open_clip models by name with a pretrained tag or a
local checkpoint file (open_clip's own loaders), and the embedded default."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Callable

import torch

__all__ = ["ModelError", "LoadedModel", "load_model", "MEAN", "STD"]

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image normalization
STD = (0.26862954, 0.26130258, 0.27577711)


class ModelError(Exception):
    """A model or checkpoint that cannot be loaded, with a message that says why."""


@dataclasses.dataclass
class LoadedModel:
    model: torch.nn.Module
    preprocess: Callable  # PIL image or float tensor (3, H, W) in [0, 1] -> normalized tensor
    tokenizer: Callable
    identity: dict  # model name and weights, for feature caches and prompt checkpoints
    known_tokens: frozenset[int] | None = None  # the embedded checkpoint's vocabulary


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"file": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise ModelError(f"--pretrained {path} is a directory; expected a checkpoint file")


def _embedded(checkpoint: str | None, device) -> LoadedModel:
    from open_clip import tokenizer  # noqa: PLC0415
    from torchvision import transforms  # noqa: PLC0415

    from sharpzo_ext.clip import embedded, synthetic  # noqa: PLC0415

    path = Path(checkpoint) if checkpoint else embedded.asset_path()
    _refuse_directory(path)
    try:
        model = embedded.load(path, device)
    except FileNotFoundError as error:
        raise ModelError(str(error)) from None
    except Exception as error:  # noqa: BLE001 (safetensors' errors have no common base)
        raise ModelError(f"{path} is not a checkpoint of the embedded model: "
                         f"{(str(error) or type(error).__name__).splitlines()[0]}") from None
    normalize = transforms.Normalize(MEAN, STD)
    size = synthetic.IMAGE_SIZE
    from_pil = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                   transforms.ToTensor(), normalize])

    def preprocess(image):
        return normalize(image) if isinstance(image, torch.Tensor) else from_pil(image)

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return LoadedModel(model, preprocess, tokenizer.tokenize,
                       {"model": "embedded", "weights": digest}, embedded.known_tokens(path))


def load_model(name: str = "embedded", pretrained: str | None = None,
               device: torch.device | str = "cpu") -> LoadedModel:
    """An open_clip model `name` with weights `pretrained` (a tag such as "openai", which needs
    a network the first time, or a local checkpoint file), or the embedded default ("embedded",
    optionally with a checkpoint file written by scripts/pretrain_embedded.py)."""
    if name == "embedded":
        return _embedded(pretrained, device)
    import open_clip  # noqa: PLC0415

    if name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if name.lower() in m.lower()][:8]
        hint = f"; did you mean {', '.join(close)}?" if close else " (see open_clip.list_models())"
        raise ModelError(f"unknown model {name!r}{hint}")
    if pretrained is not None:
        _refuse_directory(Path(pretrained))
    if pretrained is None:
        identity = {"model": name, "weights": "random"}
    elif Path(pretrained).is_file():
        identity = {"model": name, "weights": _file_identity(Path(pretrained))}
    elif pretrained not in open_clip.list_pretrained_tags_by_model(name):
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ModelError(f"{pretrained!r} is neither a file nor a pretrained tag of {name} "
                         f"(tags: {', '.join(tags) or 'none'})")
    else:
        identity = {"model": name, "weights": pretrained}
    logging.getLogger("open_clip").setLevel(logging.ERROR)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained,
                                                                     device=device)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        if pretrained and Path(pretrained).is_file():
            raise ModelError(f"checkpoint {pretrained} does not fit model {name}: {first}") from None
        raise ModelError(f"cannot create {name} with weights {pretrained!r}: {first}") from None
    except Exception as error:  # noqa: BLE001 (unpickling a damaged file raises anything)
        first = (str(error) or type(error).__name__).splitlines()[0]
        if Path(pretrained).is_file():
            raise ModelError(f"cannot read checkpoint {pretrained} for {name}: {first}") from None
        raise ModelError(f"cannot load weights {pretrained!r} for {name}: {first} (no network? "
                         "pass a local checkpoint file instead)") from None
    pil_preprocess = preprocess

    def preprocess_any(image):
        if isinstance(image, torch.Tensor):
            from torchvision.transforms.functional import to_pil_image  # noqa: PLC0415

            image = to_pil_image(image)
        return pil_preprocess(image)

    return LoadedModel(model.eval(), preprocess_any, open_clip.get_tokenizer(name), identity)
