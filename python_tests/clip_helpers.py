"""Tiny randomly initialized open_clip models for the CLIP tests (nothing is downloaded)."""

import torch

# class names of the tiny tasks: of one and of several tokens, and (LONG_CLASSES) one prompt far
# longer than the others
CLASSES = ["cat", "dog", "sailing boat", "great white shark", "tree"]
LONG_CLASSES = CLASSES + ["a very long class name with many words"]

TINY_CONFIGS = {
    "vit": {"embed_dim": 32,
            "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1,
                           "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                         "layers": 2}},
    "resnet": {"embed_dim": 32,
               "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8,
                              "head_width": 16},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4,
                            "layers": 1}},
}


def tiny_clip(kind="vit", seed=0):
    from open_clip import tokenizer
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    cfg = TINY_CONFIGS[kind]
    model = CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"]).eval()
    with torch.no_grad():  # make the random text features less uniform than the init
        model.token_embedding.weight.normal_(0, 0.5)
    return model, tokenizer.tokenize
