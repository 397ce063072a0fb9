"""The Hugging Face family: transformers CLIPModels from a local checkpoint directory or the
Hugging Face cache ("hf:PATH_OR_NAME", transformers' loaders), their text tower (the engine's
blocks over the model's weights), their image features and their tokenizer in open_clip's format.

transformers is imported only by callers that load or hold such a model (_owns looks its CLIP
module up in sys.modules), so `import sharpzo_ext` stays light.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch

from sharpzo_ext.clip.engine import precision as precision_lib
from sharpzo_ext.clip.engine.tower import Block, TextTower
from sharpzo_ext.clip.families.base import (MEAN, STD, Family, LoadedModel, ModelError,
                                            file_identity)
from sharpzo_ext.clip.families.hf_preprocess import PreprocessError, hf_preprocess

__all__ = ["FAMILY", "text_tower", "Tokenizer"]


def _owns(model: object) -> bool:
    """Whether `model` is a transformers CLIPModel; imports nothing (open_clip imports
    transformers where it is installed, but not its CLIP module)."""
    clip = sys.modules.get("transformers.models.clip.modeling_clip")
    return clip is not None and isinstance(model, clip.CLIPModel)


def _block(layer: torch.nn.Module, precision: str) -> Block:
    attn = layer.self_attn
    qkv_weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
    qkv_bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
    identity = torch.nn.Identity()
    return Block(
        ln_1=layer.layer_norm1, ln_2=layer.layer_norm2, ls_1=identity, ls_2=identity,
        act=layer.mlp.activation_fn,
        qkv=precision_lib.linear(qkv_weight, qkv_bias, precision),
        out=precision_lib.linear(attn.out_proj.weight, attn.out_proj.bias, precision),
        fc=precision_lib.linear(layer.mlp.fc1.weight, layer.mlp.fc1.bias, precision),
        proj=precision_lib.linear(layer.mlp.fc2.weight, layer.mlp.fc2.bias, precision),
        heads=attn.num_heads)


def text_tower(model: torch.nn.Module, precision: str = "fp32") -> TextTower:
    """The text tower of a CLIPModel: causal, pooled at the end token, projected by
    text_projection. Its pooling follows transformers: configurations from before the end
    token's id was fixed (eos_token_id 2) pool at the largest token id."""
    text = model.text_model
    eos = text.config.eos_token_id
    return TextTower(
        text.embeddings.token_embedding, text.embeddings.position_embedding.weight,
        [_block(layer, precision) for layer in text.encoder.layers], text.final_layer_norm,
        model.text_projection, "argmax" if eos == 2 else "eos", eos, precision)


def _image_stages(model: torch.nn.Module,
                  images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(final, pre) features of preprocessed images (N, 3, H, W), neither normalized: the
    vision model's pooler_output and its visual_projection (get_image_features' result)."""
    pre = model.vision_model(pixel_values=images).pooler_output
    return model.visual_projection(pre), pre


class Tokenizer:
    """A Hugging Face CLIP tokenizer with open_clip's calling convention: texts -> (N, length)
    token ids, the end token kept where a text is truncated, and 0 after it."""

    def __init__(self, tokenizer: Callable, length: int):
        self.tokenizer, self.length = tokenizer, length

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        encoded = self.tokenizer(texts, padding="max_length", max_length=self.length,
                                 truncation=True, return_tensors="pt")
        return encoded["input_ids"] * encoded["attention_mask"]


def _hf_directory(name: str) -> Path:
    """The checkpoint directory of "hf:PATH_OR_NAME": a local directory, or a hub name's snapshot
    in the Hugging Face cache (never downloaded: Note [No network])."""
    path = Path(name)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download  # noqa: PLC0415
    from huggingface_hub.errors import HFValidationError  # noqa: PLC0415

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (OSError, ValueError, HFValidationError):
        raise ModelError(f"hf:{name} is neither a directory nor a model in the Hugging Face cache "
                         "(nothing is downloaded); download it where there is a network, or pass "
                         "a local checkpoint directory: --model hf:/path/to/checkpoint") from None


# Note [Every weight or none]
# transformers fills the weights a checkpoint lacks with fresh random ones and reports them only
# in its log (which the loader quiets): a checkpoint whose keys carry a wrapper's prefix, or that
# lost some tensors, would load as a partly random CLIP and tune without complaint. A missing
# weight is refused, naming a few; weights the model does not use are only warned about
# (a checkpoint may carry more than the CLIP, such as a training head).
def _check_loaded_weights(name: str, loading: dict) -> None:
    missing, unexpected = sorted(loading["missing_keys"]), sorted(loading["unexpected_keys"])
    if missing:
        raise ModelError(f"hf:{name} lacks {len(missing)} of CLIPModel's weights (such as "
                         f"{', '.join(missing[:3])}), which would be random: is it a CLIP saved "
                         "whole, with its keys as CLIPModel names them?")
    if unexpected:
        warnings.warn(f"hf:{name} holds {len(unexpected)} weights that CLIPModel does not use "
                      f"(such as {', '.join(unexpected[:3])}); they are ignored", stacklevel=4)


def _load(name: str, pretrained: str | None, device) -> LoadedModel:
    """A Hugging Face CLIPModel with its tokenizer (Note [No network])."""
    if pretrained is not None:
        raise ModelError("--pretrained is for open_clip models; an hf: model brings its "
                         "weights in its directory")
    if importlib.util.find_spec("transformers") is None:
        raise ModelError("hf: models need transformers: pip install 'sharpzo_ext[hf]'")
    directory = _hf_directory(name)
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"hf:{name} has no readable config.json: "
                         f"{str(error).splitlines()[0]}") from None
    if not isinstance(config, dict) or config.get("model_type") != "clip":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise ModelError(f"hf:{name} holds no CLIP model (its config.json says model_type "
                         f"{kind!r}, not 'clip')")
    if not any((directory / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        raise ModelError(f"hf:{name} has no tokenizer (tokenizer.json, or vocab.json and "
                         "merges.txt): save the CLIP's tokenizer into the directory too")
    import transformers  # noqa: PLC0415

    verbosity, bars = (transformers.logging.get_verbosity(),
                       transformers.logging.is_progress_bar_enabled())
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:  # float32 whatever the checkpoint was saved in: the text tower computes in float32
        model, loading = transformers.CLIPModel.from_pretrained(
            directory, local_files_only=True, dtype=torch.float32, output_loading_info=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(  # never a checkpoint's code
            directory, local_files_only=True, trust_remote_code=False)
    except Exception as error:  # noqa: BLE001 (missing or damaged files raise anything)
        raise ModelError(f"cannot load hf:{name}: "
                         f"{(str(error) or type(error).__name__).splitlines()[0]}") from None
    finally:  # the user's own settings again
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    _check_loaded_weights(name, loading)
    try:
        preprocess = hf_preprocess(directory / "preprocessor_config.json",
                                   model.config.vision_config.image_size, MEAN, STD)
    except PreprocessError as error:
        raise ModelError(f"hf:{name} has a preprocessor_config.json that cannot be followed: "
                         f"{error}") from None
    files = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin")
                   or p.name in ("config.json", "preprocessor_config.json"))
    identity = {"model": f"hf:{name}", "weights": [file_identity(p) for p in files]}
    length = model.config.text_config.max_position_embeddings
    return LoadedModel(model.to(device).eval(), preprocess, Tokenizer(tokenizer, length), identity,
                       FAMILY)


def _width(model: torch.nn.Module) -> int:
    return model.config.text_config.hidden_size


FAMILY = Family("hf", claims=lambda name: name.startswith("hf:"), owns=_owns,
                load=lambda name, pretrained, device: _load(name[3:], pretrained, device),
                text_tower=text_tower, image_stages=_image_stages, width=_width)
