"""Loading the CLIP models PromptTask tunes: open_clip models by name with a pretrained tag or a
local checkpoint file (open_clip's own loaders), Hugging Face CLIPModels from a local checkpoint
directory or the Hugging Face cache ("hf:PATH_OR_NAME", transformers' loaders), and the embedded
default."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import warnings
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
                      f"(such as {', '.join(unexpected[:3])}); they are ignored", stacklevel=3)


def _hf_clip(name: str, device) -> LoadedModel:
    """A Hugging Face CLIPModel with its tokenizer (Note [No network])."""
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
    from sharpzo_ext.clip.hf_preprocess import PreprocessError, hf_preprocess  # noqa: PLC0415

    try:
        preprocess = hf_preprocess(directory / "preprocessor_config.json",
                                   model.config.vision_config.image_size, MEAN, STD)
    except PreprocessError as error:
        raise ModelError(f"hf:{name} has a preprocessor_config.json that cannot be followed: "
                         f"{error}") from None
    files = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin")
                   or p.name in ("config.json", "preprocessor_config.json"))
    identity = {"model": f"hf:{name}", "weights": [_file_identity(p) for p in files]}
    from sharpzo_ext.clip.hf_clip import Tokenizer  # noqa: PLC0415

    length = model.config.text_config.max_position_embeddings
    return LoadedModel(model.to(device).eval(), preprocess, Tokenizer(tokenizer, length), identity)


def load_model(name: str = "embedded", pretrained: str | None = None,
               device: torch.device | str = "cpu") -> LoadedModel:
    """An open_clip model `name` with weights `pretrained` (a tag such as "openai", which needs
    a network the first time, or a local checkpoint file), a Hugging Face CLIPModel
    ("hf:PATH_OR_NAME": a checkpoint directory or a name in the Hugging Face cache), or the
    embedded default ("embedded", optionally with a checkpoint file written by
    scripts/pretrain_embedded.py).

    Note [No network]
    Hugging Face names are looked up in the local cache only. Asking the hub when a name is
    missing would, without a network, retry for about half a minute before failing; users of
    this package often have none, so a missing name fails at once and says what to pass."""
    if name == "embedded":
        return _embedded(pretrained, device)
    if name.startswith("hf:"):
        if pretrained is not None:
            raise ModelError("--pretrained is for open_clip models; an hf: model brings its "
                             "weights in its directory")
        return _hf_clip(name[3:], device)
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
            raise ModelError(
                f"checkpoint {pretrained} does not fit model {name}: {first}") from None
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
