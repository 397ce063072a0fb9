"""The embedded family: the default CLIP, a small open_clip CLIP pretrained on procedural shapes
(sharpzo_ext/clip/data/synthetic.py) by scripts/pretrain_embedded.py, shipped as safetensors.
Its text tower and image features are open_clip's (openclip.py); only its loading is its own.

Note [Embedded checkpoint format]
Of the model's 4.65 M parameters, 3.16 M are the token embedding (49408 x 64), of which the
captions use about a hundred rows. The checkpoint stores the other tensors in float16 and only
the used rows of the token embedding with their ids ("token_ids", "token_rows"); loading
rebuilds the full table with zeros elsewhere (3 MB instead of 9.3 MB). Every word of a prompt
must therefore be one the checkpoint knows (`words()`); a run warns otherwise
(prompt_task.check_vocabulary).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from sharpzo_ext.clip.data import synthetic
from sharpzo_ext.clip.families import openclip
from sharpzo_ext.clip.families.base import MEAN, STD, LoadedModel, ModelError, refuse_directory

NAME = "embedded"
CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": synthetic.IMAGE_SIZE, "layers": [1, 1, 1, 1], "width": 16,
                   "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}
# Note [A second architecture]
# Defaults that must not depend on a model's embedding scale are checked on a second CLIP built
# differently: a ViT image tower (4x4 patches) instead of the ModifiedResNet, a text tower of
# width 96 and 2 layers instead of 64 and 3, and embeddings of 96. scripts/pretrain_embedded.py
# --arch vit pretrains it on the same shapes; the checkpoint records its architecture, and
# `--model embedded --pretrained FILE` loads it. It is not shipped.
ARCHITECTURES = {
    "resnet": CONFIG,
    "vit": {
        "embed_dim": 96,
        "vision_cfg": {"image_size": synthetic.IMAGE_SIZE, "patch_size": 4, "layers": 3,
                       "width": 64, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 96, "heads": 4,
                     "layers": 2},
    },
}
ASSET = "embedded_clip.safetensors"


def words() -> list[str]:
    """Every word the embedded checkpoint has token embeddings for."""
    vocab = set(synthetic.SHAPES) | set(synthetic.COLORS) | set(synthetic.SIZES)
    vocab |= set(synthetic.BACKGROUNDS) | {"cluttered", "background"}
    for templates in synthetic.CAPTIONS.values():
        for template in templates:
            vocab |= {w for w in template.split() if "{" not in w}
    vocab |= set(synthetic.TASK_PROMPT.replace(".", " .").split()) - {"{}"}
    return sorted(vocab)


def asset_path() -> Path:
    return Path(__file__).parent.parent / "assets" / ASSET


def known_tokens(path: str | Path | None = None) -> frozenset[int]:
    """The token ids the checkpoint has embeddings for."""
    from safetensors import safe_open  # noqa: PLC0415

    with safe_open(str(asset_path() if path is None else path), framework="pt") as f:
        return frozenset(f.get_tensor("token_ids").tolist())


def build(config: dict = CONFIG) -> torch.nn.Module:
    """The embedded architecture, randomly initialized."""
    from open_clip.model import CLIP  # noqa: PLC0415 (open_clip's import is slow)

    return CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"])


def load(path: str | Path | None = None, device="cpu") -> torch.nn.Module:
    """The embedded model with its pretrained weights (float32, eval mode)."""
    from safetensors import safe_open  # noqa: PLC0415

    path = asset_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the embedded CLIP checkpoint is missing: {path} (rebuild it "
                                "with `python scripts/pretrain_embedded.py`)")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model = build(json.loads(metadata.get("config", json.dumps(CONFIG))))
    state = {k: v.float() for k, v in tensors.items() if k not in ("token_ids", "token_rows")}
    table = torch.zeros_like(model.token_embedding.weight)
    table[tensors["token_ids"].long()] = tensors["token_rows"].float()
    state["token_embedding.weight"] = table
    model.load_state_dict(state)
    return model.to(device).eval()


def save(model: torch.nn.Module, path: str | Path, token_ids: torch.Tensor,
         metadata: dict[str, str], config: dict = CONFIG) -> None:
    """Writes the checkpoint format of Note [Embedded checkpoint format], atomically, recording
    the architecture `config` that `model` was built with."""
    from safetensors.torch import save_file  # noqa: PLC0415

    from sharpzo_ext.files import atomic_path  # noqa: PLC0415

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if k != "token_embedding.weight"}
    token_ids = token_ids.unique().sort().values
    state["token_ids"] = token_ids.to(torch.int32)
    state["token_rows"] = model.token_embedding.weight.detach()[token_ids].to(torch.float16)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"config": json.dumps(config), **metadata})


def _load(name: str, checkpoint: str | None, device) -> LoadedModel:
    from open_clip import tokenizer  # noqa: PLC0415
    from torchvision import transforms  # noqa: PLC0415

    path = Path(checkpoint) if checkpoint else asset_path()
    refuse_directory(path)
    try:
        model = load(path, device)
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
                       {"model": "embedded", "weights": digest}, FAMILY, known_tokens(path))


# a loaded embedded model is an open_clip CLIP: families.of finds it as one
FAMILY = dataclasses.replace(openclip.FAMILY, name="embedded", claims=lambda name: name == NAME,
                             owns=lambda model: False, load=_load)
