"""The prompt-tuning task: PromptTask (the losses of a population of prompts over cached image
features, on an engine), ZIP's low-rank prompt (low_rank.py), the closed-form heads on the
image features (heads.py) and their ensemble with the prompt's logits (ensemble.py)."""
