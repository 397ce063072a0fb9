"""PromptTask over tiny randomly initialized open_clip models and the embedded default."""

import pytest
import torch
import torch.nn.functional as F

from sharpzo_ext.clip.engine import Engine
from sharpzo_ext.clip.task.prompt_task import PromptTask

from clip_helpers import CLASSES, tiny_clip



@pytest.fixture(params=["vit", "resnet"])
def model_and_tokenizer(request):
    return tiny_clip(request.param)


def features(n=24, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    return features, torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_zero_vector_is_open_clip_zero_shot(model_and_tokenizer, share_prefix):
    model, tokenizer = model_and_tokenizer
    task = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=16,
                      engine=Engine(share_prefix=share_prefix))
    with torch.no_grad():
        prompts = tokenizer([f"a photo of a {c}." for c in CLASSES])
        reference = F.normalize(model.encode_text(prompts), dim=-1)
    ours = task.text_features(task.zero_vector()[None])[0]
    assert torch.allclose(ours, reference, atol=1e-5)
    x, y = features()
    expected = (x @ reference.T).argmax(-1).eq(y).float().mean().item()
    assert task.accuracy(task.zero_vector(), x, y) == pytest.approx(expected)


def test_truncation_is_exact(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    cut = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=16,
                     engine=Engine(share_prefix=False))
    full = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=16,
                      engine=Engine(share_prefix=False, truncate=False))
    assert cut.encoder.tokens.shape[1] < full.encoder.tokens.shape[1] == 77
    W = torch.randn(6, 16, generator=torch.Generator().manual_seed(1)) * 3
    assert torch.allclose(cut.text_features(W), full.text_features(W), atol=2e-6)
    x, y = features()
    assert torch.allclose(cut.losses(W, x, y), full.losses(W, x, y), atol=1e-5)


def test_batched_losses_equal_serial_losses(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    task = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=20)
    x, y = features()
    W = torch.randn(9, 20, generator=torch.Generator().manual_seed(2))
    batched = task.losses(W, x, y)
    serial = torch.stack([task.loss(w, x, y) for w in W])
    assert torch.allclose(batched, serial, atol=1e-6)
    task.encoder.max_batch_tokens = 1  # one prompt per forward: the bound only splits work
    assert torch.allclose(task.losses(W, x, y), batched, atol=1e-6)


def test_direct_context_without_projection():
    model, tokenizer = tiny_clip()
    task = PromptTask(model, tokenizer, CLASSES, ctx_init=None, n_ctx=3, intrinsic_dim=None)
    assert task.dim == 3 * 32 and task.n_ctx == 3
    w = torch.randn(task.dim)
    assert torch.allclose(task.context(w[None])[0], task.ctx0 + w.view(3, 32))


def test_projection_comes_from_the_seed():
    model, tokenizer = tiny_clip()
    a = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=8, seed=3)
    b = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=8, seed=3)
    c = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=8, seed=4)
    assert torch.equal(a.projection, b.projection) and not torch.equal(a.projection, c.projection)
    assert a.n_ctx == 4  # "a photo of a"
    # a unit-norm-per-entry w moves the context by about its own spread
    shift = a.context(torch.randn(200, 8))[:, :, :] - a.ctx0
    assert 0.5 < float(shift.std() / a.ctx0.std()) < 2


def test_low_rank_prompt_is_zips_formula():
    # R = U diag(s) V^T + 1 v^T (n_ctx x k); token i moves by F_i R_i
    model, tokenizer = tiny_clip()
    n, k, r, width = 4, 5, 2, 32
    task = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=n * k + 3, rank=r, seed=2)
    assert task.dim == n * r + r + k * r + k and task.projection.shape == (n, width, k)
    w = torch.randn(task.dim, generator=torch.Generator().manual_seed(0))
    U, s, V, v = w.split([n * r, r, k * r, k])
    R = U.view(n, r) @ torch.diag(s) @ V.view(k, r).T + v
    expected = task.ctx0 + torch.stack([task.projection[i] @ R[i] for i in range(n)])
    assert torch.allclose(task.context(w[None])[0], expected, atol=1e-5)
    start = task.zero_vector()  # ZIP's start: U = 0, s = 1, V random, v = 0, so R = 0
    assert torch.equal(task.context(start[None])[0], task.ctx0)
    assert torch.equal(start[n * r:n * r + r], torch.ones(r)) and start[n * r + r:].abs().sum() > 0
    with pytest.raises(ValueError, match="at least one per context token"):
        PromptTask(model, tokenizer, CLASSES, intrinsic_dim=3, rank=r)


def test_encode_images_is_normalized():
    model, tokenizer = tiny_clip("resnet")
    task = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=4)
    images = torch.rand(5, 3, 32, 32)
    f = task.encode_images(images, batch_size=2)
    assert f.shape == (5, 32) and torch.allclose(f.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_bad_arguments():
    model, tokenizer = tiny_clip()
    with pytest.raises(ValueError, match="at least two classes"):
        PromptTask(model, tokenizer, ["only"])
    task = PromptTask(model, tokenizer, CLASSES, intrinsic_dim=8)
    with pytest.raises(ValueError, match=r"W must have shape \(m, 8\)"):
        task.context(torch.zeros(2, 9))
    with pytest.raises(TypeError, match="a Linear is not a CLIP of a known family"):
        PromptTask(torch.nn.Linear(2, 2), tokenizer, CLASSES)
    with pytest.raises(ValueError, match="max_batch_tokens must be >= 1, got 0"):
        PromptTask(model, tokenizer, CLASSES, engine=Engine(max_batch_tokens=0))
    for share_prefix in (True, False):
        with pytest.raises(ValueError, match="n_ctx=80 context tokens leave no room"):
            PromptTask(model, tokenizer, CLASSES, ctx_init=None, n_ctx=80,
                       engine=Engine(share_prefix=share_prefix))
    with pytest.raises(ValueError, match="truncate=False needs share_prefix=False"):
        PromptTask(model, tokenizer, CLASSES, engine=Engine(truncate=False))
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, int8, got 'fp8'"):
        PromptTask(model, tokenizer, CLASSES, engine=Engine(precision="fp8"))
    with pytest.raises(ValueError, match="'int8' runs on the CPU only, not on cuda"):
        PromptTask(model, tokenizer, CLASSES, device="cuda", engine=Engine(precision="int8"))
    model.attn_mask = None  # a text tower without a causal mask (SigLIP's)
    with pytest.raises(TypeError, match="no causal mask"):
        PromptTask(model, tokenizer, CLASSES)


def test_embedded_model_warns_about_words_it_does_not_know():
    # the task's rule, for the Python API as for a run
    from sharpzo_ext.clip.families import load_model

    loaded = load_model("embedded")
    with pytest.warns(UserWarning, match="no embedding in this checkpoint"):
        PromptTask.of(loaded, ["zebra", "circle"])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PromptTask.of(loaded, ["circle", "star"])  # known words: no warning


def test_the_intrinsic_dimension_is_the_tasks_rule():
    # the embedded model's context holds 4 x 64 = 256 numbers: "auto" (the default) takes half
    # of it, the paper's 512 does not fit and is refused before the projection is allocated,
    # as the command line refuses it
    from sharpzo_ext.clip.families import load_model
    from sharpzo_ext.clip.task.prompt_task import default_intrinsic_dim

    loaded = load_model("embedded")
    assert PromptTask.of(loaded, ["circle", "star"]).dim == 128 == default_intrinsic_dim(4, 64)
    with pytest.raises(ValueError, match="at most the context's size, 4 tokens x 64 = 256, got "
                                         "512"):
        PromptTask.of(loaded, ["circle", "star"], intrinsic_dim=512)
    for bad in (0, 2.5, True, "all"):
        with pytest.raises(ValueError, match="a positive integer, 'auto' or None"):
            PromptTask.of(loaded, ["circle", "star"], intrinsic_dim=bad)
    assert PromptTask.of(loaded, ["circle", "star"], intrinsic_dim=None).dim == 256


def test_a_checkpoint_of_the_second_architecture_loads_as_it_was_saved(tmp_path):
    # scripts/pretrain_embedded.py --arch vit: the checkpoint records its architecture, and
    # load_model("embedded", pretrained=FILE) rebuilds that one (Note [A second architecture])
    from sharpzo_ext.clip.families import embedded
    from sharpzo_ext.clip.families import load_model

    config = embedded.ARCHITECTURES["vit"]
    torch.manual_seed(0)
    model = embedded.build(config).eval()
    ids = torch.tensor([320, 1125, 539, 320, 8117])  # "a photo of a circle"
    path = tmp_path / "vit.safetensors"
    embedded.save(model, path, ids, {"steps": "0"}, config)
    loaded = load_model("embedded", str(path))
    assert loaded.model.visual.__class__.__name__ == "VisionTransformer"
    assert loaded.model.token_embedding.weight.shape[1] == 96
    assert loaded.known_tokens == frozenset(ids.tolist())
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # float16 storage: equal to the float16-rounded weights' output
        expected = model.half().float().encode_image(images)
        assert torch.allclose(loaded.model.encode_image(images), expected, atol=1e-5)


def test_a_loaded_model_keeps_the_family_it_was_loaded_as():
    # the embedded model is an open_clip CLIP object: sniffing it would say open_clip
    from sharpzo_ext.clip.families import load_model, of

    loaded = load_model("embedded")
    task = PromptTask.of(loaded, ["circle", "star"], intrinsic_dim=8)
    assert task.family is loaded.family and task.family.name == "embedded"
    assert of(loaded.model).name == "open_clip"
