"""The open_clip family: models by name with a pretrained tag or a local checkpoint file
(open_clip's own loaders), and their text tower as the engine runs it.

Its text tower is an open_clip CLIP's or CustomTextCLIP's TextTransformer of standard residual
attention blocks (nn.MultiheadAttention, optional LayerScale) with a causal mask; anything else
is refused with a message that says what is missing. It is the fallback family for --model
names (a name no other family claims is open_clip's); a model object is its own only if it is
an open_clip CLIP or CustomTextCLIP.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import torch

from sharpzo_ext.clip.engine import precision as precision_lib
from sharpzo_ext.clip.engine.tower import Block, TextTower
from sharpzo_ext.clip.families.base import (Family, LoadedModel, ModelError, file_identity,
                                            refuse_directory)

__all__ = ["FAMILY", "text_tower", "width", "image_stages"]


def _block(module: torch.nn.Module, precision: str) -> Block:
    attn = getattr(module, "attn", None)
    if (not isinstance(attn, torch.nn.MultiheadAttention) or attn.in_proj_weight is None
            or hasattr(module, "ln_1_kv") or not hasattr(module, "mlp")):
        raise TypeError(f"PromptTask runs open_clip's standard residual attention blocks; a "
                        f"{type(module).__name__} is not one")
    mlp = module.mlp
    return Block(
        ln_1=module.ln_1, ln_2=module.ln_2, ls_1=module.ls_1, ls_2=module.ls_2, act=mlp.gelu,
        qkv=precision_lib.linear(attn.in_proj_weight, attn.in_proj_bias, precision),
        out=precision_lib.linear(attn.out_proj.weight, attn.out_proj.bias, precision),
        fc=precision_lib.linear(mlp.c_fc.weight, mlp.c_fc.bias, precision),
        proj=precision_lib.linear(mlp.c_proj.weight, mlp.c_proj.bias, precision),
        heads=attn.num_heads)


def text_tower(model: torch.nn.Module, precision: str = "fp32") -> TextTower:
    """The text tower of an open_clip CLIP or CustomTextCLIP."""
    tower = getattr(model, "text", model)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final",
              "text_projection", "attn_mask")
    missing = [name for name in needed if not hasattr(tower, name)]
    if missing:
        raise TypeError(f"PromptTask needs an open_clip or Hugging Face CLIP with its own text "
                        f"transformer; {type(model).__name__} has no {', '.join(missing)}")
    if getattr(tower, "cls_emb", None) is not None:
        raise TypeError("PromptTask does not support text towers with a class-token "
                        "embedding (embed_cls)")
    mask = tower.attn_mask
    if mask is None or not torch.equal(torch.isinf(mask), torch.ones_like(
            mask, dtype=torch.bool).triu_(1)):
        raise TypeError("PromptTask needs a causal text transformer (its prompts are cut "
                        "after their end token and share their prefix); this one has "
                        "no causal mask")
    return TextTower(
        tower.token_embedding, tower.positional_embedding,
        [_block(module, precision) for module in tower.transformer.resblocks],
        tower.ln_final, tower.text_projection,
        getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax")),
        getattr(tower, "text_eos_id", getattr(tower, "eos_id", None)), precision)


def width(model: torch.nn.Module) -> int:
    """The width of the text tower's token embeddings."""
    return getattr(model, "text", model).token_embedding.weight.shape[1]


def image_stages(model: torch.nn.Module,
                 images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(final, pre) image features of an open_clip CLIP (Note [Image features by stage]): final
    is what `encode_image` returns, bit for bit; pre is None for image towers other than a
    VisionTransformer with a projection and a ModifiedResNet."""
    visual = model.visual
    if all(hasattr(visual, name) for name in ("_embeds", "transformer", "_pool", "proj")) \
            and visual.proj is not None and not getattr(visual, "output_tokens", False):
        pooled, _ = visual._pool(visual.transformer(visual._embeds(images)))
        return pooled @ visual.proj, pooled
    if all(hasattr(visual, name) for name in ("stem", "layer4", "attnpool")):
        x = visual.stem(images)
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = layer(x)
        return visual.attnpool(x), x.mean(dim=(2, 3))
    return model.encode_image(images), None


def _identity(name: str, pretrained: str | None) -> dict:
    import open_clip  # noqa: PLC0415

    if pretrained is None:
        return {"model": name, "weights": "random"}
    if Path(pretrained).is_file():
        return {"model": name, "weights": file_identity(Path(pretrained))}
    if pretrained not in open_clip.list_pretrained_tags_by_model(name):
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ModelError(f"{pretrained!r} is neither a file nor a pretrained tag of {name} "
                         f"(tags: {', '.join(tags) or 'none'})")
    return {"model": name, "weights": pretrained}


@contextlib.contextmanager
def _random_weights_asked_for():
    """Drops open_clip's warning (on the root logger) that no pretrained weights were loaded:
    a model asked for without them is random on purpose (benchmarks, tests)."""
    def keep(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _load(name: str, pretrained: str | None, device) -> LoadedModel:
    import open_clip  # noqa: PLC0415

    if name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if name.lower() in m.lower()][:8]
        hint = f"; did you mean {', '.join(close)}?" if close else " (see open_clip.list_models())"
        raise ModelError(f"unknown model {name!r}{hint}")
    if pretrained is not None:
        refuse_directory(Path(pretrained))
    identity = _identity(name, pretrained)
    logging.getLogger("open_clip").setLevel(logging.ERROR)
    quiet = _random_weights_asked_for() if pretrained is None else contextlib.nullcontext()
    try:
        with quiet:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device)
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

    def preprocess_any(image):
        if isinstance(image, torch.Tensor):
            from torchvision.transforms.functional import to_pil_image  # noqa: PLC0415

            image = to_pil_image(image)
        return preprocess(image)

    return LoadedModel(model.eval(), preprocess_any, open_clip.get_tokenizer(name), identity,
                       FAMILY)


def _owns(model: object) -> bool:
    """Whether `model` is an open_clip CLIP or CustomTextCLIP; imports nothing (an open_clip
    model exists only once open_clip is imported)."""
    module = sys.modules.get("open_clip.model")
    return module is not None and isinstance(model, (module.CLIP, module.CustomTextCLIP))


FAMILY = Family("open_clip", claims=lambda name: True, owns=_owns, load=_load,
                text_tower=text_tower, image_stages=image_stages, width=width)
