"""Class text features by shared prefixes and by full prompts (clip/engine/encoders.py), against
open_clip's own text transformer with the context put into its token embeddings."""

import pytest
import torch
import torch.nn.functional as F

from sharpzo_ext.clip.engine import Engine
from sharpzo_ext.clip.task.prompt_task import PromptTask

from clip_helpers import LONG_CLASSES as CLASSES, tiny_clip
from markers import CUDA

# suffixes of 3 to 9 tokens: several groups of equal length


@pytest.fixture(params=["vit", "resnet"])
def model_and_tokenizer(request):
    return tiny_clip(request.param)


def open_clip_features(model, task, W):
    """open_clip's encode_text with the context of each row of W in place of "a photo of a"."""
    tokens = task.tokenizer_output  # all 77 positions
    out = []
    for c in task.context(W):
        x = model.token_embedding(tokens)
        x[:, 1:1 + task.n_ctx] = c
        x = x + model.positional_embedding
        x = model.transformer(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection
        out.append(F.normalize(x, dim=-1))
    return torch.stack(out)


def make_task(model, tokenizer, device=None, **engine):
    task = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=12, device=device,
                      engine=Engine(**engine))
    task.tokenizer_output = tokenizer([f"a photo of a {c}." for c in CLASSES])
    return task


W = torch.randn(5, 12, generator=torch.Generator().manual_seed(0)) * 2


@pytest.mark.parametrize("share_prefix", [True, False])
@torch.no_grad()
def test_features_are_open_clips(model_and_tokenizer, share_prefix):
    model, tokenizer = model_and_tokenizer
    task = make_task(model, tokenizer, share_prefix=share_prefix)
    ours = task.text_features(W)
    reference = open_clip_features(model, task, W)
    assert ours.shape == reference.shape == (5, len(CLASSES), 32)
    assert torch.allclose(ours, reference, atol=2e-6)


def test_shared_prefix_suffixes_run_from_the_context_to_the_end_token(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    task = make_task(model, tokenizer)
    ends = task.tokenizer_output.argmax(dim=-1) + 1
    assert torch.equal(task.encoder.lengths, ends - 1 - task.n_ctx)
    assert len(set(ends.tolist())) > 2  # several groups of suffixes of one length


@pytest.mark.parametrize("share_prefix", [True, False])
@torch.no_grad()
def test_memory_bound_only_splits_the_work(model_and_tokenizer, share_prefix):
    model, tokenizer = model_and_tokenizer
    task = make_task(model, tokenizer, share_prefix=share_prefix)
    whole = task.text_features(W)
    # 1: one (candidate, class) prompt per forward; 13, 40: chunks that cut candidates apart
    for bound in (1, 13, 40):
        task.encoder.max_batch_tokens = bound
        assert torch.allclose(task.text_features(W), whole, atol=1e-6)


def test_gradients_through_shared_prefixes_are_the_plain_ones(model_and_tokenizer):
    # CoOp differentiates the loss through the text tower
    model, tokenizer = model_and_tokenizer
    x = F.normalize(torch.randn(12, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    y = torch.arange(12) % len(CLASSES)
    grads = []
    for share_prefix in (True, False):
        task = make_task(model, tokenizer, share_prefix=share_prefix)
        w = W[:1].clone().requires_grad_(True)
        task.losses(w, x, y).sum().backward()
        grads.append(w.grad)
    assert grads[0].abs().max() > 0 and torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@torch.no_grad()
def test_features_on_cuda_are_the_cpus(precision):
    model, tokenizer = tiny_clip("vit")
    cpu = make_task(model, tokenizer, precision=precision).text_features(W)
    gpu = make_task(model, tokenizer, precision=precision, device="cuda").text_features(W.cuda())
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4 if precision == "fp32" else 2e-2)
