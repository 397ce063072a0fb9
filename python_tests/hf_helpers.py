"""Tiny randomly initialized Hugging Face CLIPModels and a CLIP tokenizer for the tests, built
here: nothing is downloaded."""

import torch

TEXT = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 77}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
          "num_attention_heads": 2, "image_size": 32, "patch_size": 16}


def tiny_hf_clip(seed=0, **text):
    """A CLIPModel with a 2-layer width-32 text tower; `text` overrides its text config
    (eos_token_id=2 gives the legacy pooling at the largest token id)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(text_config={**TEXT, **text}, vision_config=VISION, projection_dim=24)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # make the random text features less uniform than the init
        model.text_model.embeddings.token_embedding.weight.normal_(0, 0.5)
    return model


def hf_tokenizer():
    """transformers' CLIPTokenizer over open_clip's vocabulary and merges (the same BPE as
    OpenAI's CLIP, whose special tokens transformers spells differently)."""
    from open_clip import tokenizer
    from transformers import CLIPTokenizer

    bpe = tokenizer._tokenizer
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(token, token): i for token, i in bpe.encoder.items()}
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m) for m in merges])


def save_hf_clip(directory, seed=0, tokenizer=True):
    """Writes a tiny CLIPModel (and its tokenizer) as a Hugging Face checkpoint directory."""
    model = tiny_hf_clip(seed)
    model.save_pretrained(directory)
    if tokenizer:
        hf_tokenizer().save_pretrained(directory)
    return model
