"""What a method tunes (clip/task/tuned.py): the image-side adapter (adapter.py) and the prompt
with the adapter (joint.py), against their formulas, zero-shot CLIP, and the guarantees a
population method needs."""

import pytest
import torch
import torch.nn.functional as F

from sharpzo_ext.clip.task.adapter import SCALE, ImageAdapter
from sharpzo_ext.clip.task.features import Features
from sharpzo_ext.clip.task.joint import PromptAndAdapter
from sharpzo_ext.clip.task.prompt_task import PromptTask

from clip_helpers import CLASSES, tiny_clip

G = torch.Generator().manual_seed(0)
FEATURES = Features(F.normalize(torch.randn(6, 32, generator=G), dim=1),
                    F.normalize(torch.randn(6, 48, generator=G), dim=1))
LABELS = torch.tensor([0, 1, 2, 3, 4, 0])


@pytest.fixture(scope="module")
def task():
    model, tokenizer = tiny_clip("vit")
    return PromptTask(model, tokenizer, CLASSES, intrinsic_dim=16, seed=1)


@pytest.fixture(scope="module")
def adapter(task):
    return ImageAdapter.beside(task, pre_width=48, dim=24, seed=5)


def adapted(adapter, w):
    """The adapted features normalize(f + A p) of FEATURES, A the (E, P) map w spans, formed in
    float64."""
    A = adapter.U.double() @ torch.diag(w.double()) @ adapter.V.double().T
    return F.normalize(FEATURES.final.double() + FEATURES.pre.double() @ A.T, dim=-1).float()


@pytest.mark.parametrize("dim", [24, 40], ids=["d<=E", "d>E"])
def test_the_adapter_is_its_formula(task, dim):
    adapter = ImageAdapter.beside(task, pre_width=48, dim=dim, seed=5)
    assert adapter.orthonormal == (dim <= 32)
    W = torch.randn(3, dim, generator=G) * 2
    text = task.text_features(task.zero_vector()[None])[0]
    for w, logits in zip(W, adapter.logits(W, FEATURES)):
        expected = task.logit_scale * adapted(adapter, w) @ text.T
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-4)


def test_its_zero_vector_is_zero_shot_clip(task, adapter):
    zero_shot = task.logits(task.zero_vector()[None], FEATURES)
    torch.testing.assert_close(adapter.logits(adapter.zero_vector()[None], FEATURES), zero_shot)


@pytest.mark.parametrize("dim", [256, 768], ids=["d<=E", "d>E"])
def test_a_unit_gaussian_w_moves_the_final_feature_by_its_scale(task, dim):
    # Note [Adapter scale], at ViT-B/16's widths
    adapter = ImageAdapter(F.normalize(torch.randn(10, 512, generator=G), dim=1), 768, dim)
    pre = F.normalize(torch.randn(200, 768, generator=G), dim=1)
    w = torch.randn(dim, generator=G)
    shift = (pre @ adapter.V * w) @ adapter.U.T
    assert 0.8 * SCALE < float(shift.norm(dim=1).mean()) < 1.2 * SCALE
    if adapter.orthonormal:  # what |U y|^2 = SCALE^2 |y|^2 / d rests on
        torch.testing.assert_close(adapter.U.T @ adapter.U, SCALE ** 2 / dim * torch.eye(dim))


def test_it_comes_from_its_seed(task, adapter):
    again = ImageAdapter.beside(task, pre_width=48, dim=24, seed=5)
    other = ImageAdapter.beside(task, pre_width=48, dim=24, seed=6)
    assert torch.equal(again.U, adapter.U) and torch.equal(again.V, adapter.V)
    assert not torch.equal(other.V, adapter.V)


def test_a_candidate_s_loss_is_the_same_alone_and_in_a_population(task, adapter):
    W = torch.randn(7, 24, generator=G)
    together = adapter.losses(W, FEATURES, LABELS)
    alone = torch.stack([adapter.losses(w[None], FEATURES, LABELS)[0] for w in W])
    assert torch.equal(together, alone)
    joint = PromptAndAdapter(task, adapter)
    W = torch.randn(5, joint.dim, generator=G) * 0.3
    together = joint.losses(W, FEATURES, LABELS)
    alone = torch.stack([joint.losses(w[None], FEATURES, LABELS)[0] for w in W])
    assert torch.equal(together, alone)


def test_the_joint_vector_is_the_prompt_s_then_the_adapter_s(task, adapter):
    joint = PromptAndAdapter(task, adapter)
    assert joint.dim == task.dim + adapter.dim
    assert torch.equal(joint.zero_vector(), torch.cat([task.zero_vector(),
                                                       adapter.zero_vector()]))
    W = torch.randn(2, joint.dim, generator=G) * 0.5
    for w, logits in zip(W, joint.logits(W, FEATURES)):
        text = task.text_features(w[None, :task.dim])[0]
        image = adapted(adapter, w[task.dim:])
        torch.testing.assert_close(logits, task.logit_scale * image @ text.T, rtol=1e-5,
                                   atol=1e-4)
    # the prompt part alone is the prompt; the adapter part alone the adapter
    w = torch.cat([W[0, :task.dim], torch.zeros(adapter.dim)])
    torch.testing.assert_close(joint.logits(w[None], FEATURES), task.logits(w[None, :task.dim],
                                                                           FEATURES))
    metadata, tensors = joint.record(W[0])
    assert metadata["adapter_dim"] == "24" and metadata["intrinsic_dim"] == "16"
    assert tensors["ctx"].shape == (task.n_ctx, task.text.width)


def test_gradients_reach_the_adapter_s_vector_only(task, adapter):
    w = torch.zeros(24, requires_grad=True)
    adapter.loss(w, FEATURES, LABELS).backward()
    assert w.grad is not None and bool(w.grad.abs().sum() > 0)
    assert not adapter.U.requires_grad and not adapter.V.requires_grad


def test_bad_arguments_are_named(task, adapter):
    with pytest.raises(ValueError, match=r"W must have shape \(m, 24\)"):
        adapter.logits(torch.zeros(2, 5), FEATURES)
    with pytest.raises(ValueError, match="pre-projection features of width 48"):
        adapter.logits(torch.zeros(1, 24), Features(FEATURES.final, FEATURES.pre[:, :40]))
    with pytest.raises(ValueError, match="pre-projection features are not known"):
        adapter.logits(torch.zeros(1, 24), Features(FEATURES.final))
    with pytest.raises(ValueError, match="dim must be a positive int"):
        ImageAdapter(torch.randn(3, 32), 48, dim=0)
    with pytest.raises(ValueError, match="class features"):
        ImageAdapter(torch.randn(32), 48)
