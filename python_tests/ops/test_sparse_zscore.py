"""sparse_zscore, sparse_zscore_ and mask_score against sharpzo_ext.reference (bit for bit: the
reference reproduces the ops' summation order) and against the properties they promise."""

import math

import pytest
import torch

import sharpzo_ext as sz
from sharpzo_ext import reference

from markers import CUDA, DEVICES

pytestmark = pytest.mark.ops

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32,
                                8: torch.int64}[x.element_size()])


def assert_same(actual, expected):
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        assert torch.equal(bits(a.cpu()), bits(e.cpu()))


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ---- agreement with the reference --------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 7, 4095, 4096, 4097, 50003])
def test_matches_reference(device, dtype, n):
    g = randn(n, seed=n, dtype=dtype) * 3 + 1
    for k in sorted({1, max(1, n // 100), max(1, n // 10), n}):
        got = sz.ops.sparse_zscore(g.to(device), k)
        assert_same(got, reference.sparse_zscore(g, k))
        assert int(got[1].sum()) == k


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_full_of_ties_pick_the_lowest_indices(device, dtype):
    g = torch.randint(-2, 3, (3, 1000), generator=torch.Generator().manual_seed(1)).to(dtype)
    k = 777
    values, mask = sz.ops.sparse_zscore(g.to(device), k)
    assert_same((values, mask), reference.sparse_zscore(g, k))
    # independently of the reference: every kept |value| >= every dropped one, and among the
    # entries equal to the threshold the kept ones come first in row-major order
    full, _ = sz.ops.sparse_zscore(g, g.numel())
    score = full.abs().flatten().float()
    kept = mask.flatten().cpu()
    threshold = score[kept].min()
    assert (score[~kept] <= threshold).all()
    at_threshold = (score == threshold).nonzero().flatten()
    chosen = kept[at_threshold]
    assert chosen.any() and not chosen[chosen.long().cumsum(0) < chosen.sum()].logical_not().any()
    assert (chosen.int().diff() <= 0).all()  # a prefix of Trues, then Falses


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_input_gives_zeros_and_the_first_k(device, dtype):
    g = torch.full((5, 9), 3.25, dtype=dtype, device=device)
    values, mask = sz.ops.sparse_zscore(g, 10)
    assert torch.equal(values.cpu(), torch.zeros(5, 9, dtype=dtype))
    assert torch.equal(mask.flatten().cpu(), torch.arange(45) < 10)
    values, mask = sz.ops.sparse_zscore(g, 10, eps=0.0)  # std + eps = 0: still no NaN
    assert not values.isnan().any()


def test_tiny_inputs():
    values, mask = sz.ops.sparse_zscore(torch.tensor([5.0]), 1)
    assert values.tolist() == [0.0] and mask.tolist() == [True]
    values, mask = sz.ops.sparse_zscore(torch.tensor([1.0, 3.0]), 1)
    assert mask.tolist() == [True, False]  # |z| = 1 for both: the tie goes to index 0
    assert values.tolist() == pytest.approx([-1.0, 0.0], abs=1e-7)
    values, mask = sz.ops.sparse_zscore(torch.tensor([1.0, 3.0]), 2)
    assert values.tolist() == pytest.approx([-1.0, 1.0], abs=1e-7) and mask.all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score_dtype", DTYPES)
def test_custom_score(device, score_dtype):
    g = randn(3000, seed=2)
    score = randn(3000, seed=3, dtype=score_dtype)
    values, mask = sz.ops.sparse_zscore(g.to(device), 300, score.to(device))
    assert_same((values, mask), reference.sparse_zscore(g, 300, score))
    full, _ = sz.ops.sparse_zscore(g, 3000)
    assert torch.equal(values.cpu()[mask.cpu()], full[mask.cpu()])  # z-scores of g itself


def test_large_input_and_moments_accuracy():
    g = randn(1 << 22, seed=4) * 5 + 2
    k = 1 << 18
    values, mask = sz.ops.sparse_zscore(g, k)
    assert_same((values, mask), reference.sparse_zscore(g, k))
    gd = g.double()
    expected = ((gd - gd.mean()) / (gd.std(unbiased=False) + 1e-8)).float()
    assert torch.allclose(values[mask], expected[mask], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bit_identical_for_one_and_two_threads(dtype):
    g = randn(300001, seed=5, dtype=dtype)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            results.append(sz.ops.sparse_zscore(g, 30000))
    finally:
        torch.set_num_threads(threads)
    assert_same(results[0], results[1])


# ---- in place, composition ---------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_in_place_variant(device):
    g = randn(40, 50, seed=6).to(device)
    expected = sz.ops.sparse_zscore(g, 123)
    version = g._version
    mask = sz.ops.sparse_zscore_(g, 123)
    assert_same((g, mask), expected)
    assert g._version == version + 1
    gt = randn(50, 40, seed=6).to(device).t()  # non-contiguous: written back in logical order
    mask_t = sz.ops.sparse_zscore_(gt, 123)
    assert_same((gt.contiguous(), mask_t), reference.sparse_zscore(randn(50, 40, seed=6).t(), 123))


@pytest.mark.parametrize("device", DEVICES)
def test_outputs_are_not_differentiable(device):
    # #28.12: the outputs required grad and had a grad_fn whose backward left .grad as None
    g = randn(64, seed=9).to(device).requires_grad_()
    w = randn(64, seed=10).to(device).requires_grad_()
    outputs = (*sz.ops.sparse_zscore(g, 8), sz.ops.sparse_zscore(g, 8, w)[0],
               sz.ops.mask_score(w, g))
    assert all(not out.requires_grad and out.grad_fn is None for out in outputs)
    expected = sz.ops.sparse_zscore(g.detach(), 8)
    assert_same(outputs[:2], expected)  # the values are those of the plain op


def test_mask_composes_with_perturb():
    g = randn(10000, seed=7)
    w = randn(10000, seed=8)
    _, mask = sz.ops.sparse_zscore(g, 1000, sz.ops.mask_score(w, g))
    before = w.clone()
    sz.ops.perturb_(w, 3, scale=0.1, mask=mask)
    assert torch.equal(w[~mask], before[~mask])
    assert (w[mask] != before[mask]).all()


# ---- mask_score --------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("w_dtype", DTYPES)
@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_mask_score_matches_reference(device, w_dtype, grad_dtype):
    w = randn(5000, seed=9, dtype=w_dtype)
    grad = randn(5000, seed=10, dtype=grad_dtype)
    got = sz.ops.mask_score(w.to(device), grad.to(device))
    expected = reference.mask_score(w, grad)
    assert got.dtype == expected.dtype
    assert torch.equal(bits(got.cpu()), bits(expected))
    a = grad.double().abs()
    naive = w.double() ** 2 * (a - a.mean()) / (a.std(unbiased=False) + 1e-8)
    assert torch.allclose(got.cpu().double(), naive, rtol=1e-5, atol=1e-6)


def test_mask_score_of_a_constant_gradient_is_zero():
    assert torch.equal(sz.ops.mask_score(randn(100), torch.full((100,), -2.0)), torch.zeros(100))


# ---- opcheck -----------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    g = randn(6, 70, seed=11).to(device)
    score = randn(6, 70, seed=12).to(device)
    torch.library.opcheck(torch.ops.sharpzo.sparse_zscore.default, (g, 40, None, 1e-8, True))
    torch.library.opcheck(torch.ops.sharpzo.sparse_zscore.default, (g, 40, score, 1e-8, False))
    torch.library.opcheck(torch.ops.sharpzo.sparse_zscore_.default,
                          (g.clone(), 40, None, 1e-8, True))
    torch.library.opcheck(torch.ops.sharpzo.mask_score.default, (g, score, 1e-8, True))


# ---- CUDA --------------------------------------------------------------------------------------

@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_and_cuda_give_the_same_bits(dtype):
    g = torch.randint(-50, 50, (1 << 20,), generator=torch.Generator().manual_seed(13)).to(dtype)
    for k in (1, 1 << 10, 1 << 17):
        assert_same(sz.ops.sparse_zscore(g.cuda(), k), sz.ops.sparse_zscore(g, k))
    w = randn(1 << 20, seed=14, dtype=dtype)
    assert torch.equal(sz.ops.mask_score(w.cuda(), g.cuda()).cpu(), sz.ops.mask_score(w, g))


# ---- non-finite input and bad arguments --------------------------------------------------------

def test_non_finite_input_is_refused_or_propagated():
    g = randn(100, seed=15)
    g[17] = math.nan
    with pytest.raises(ValueError, match="g holds NaN"):
        sz.ops.sparse_zscore(g, 10)
    h = g.clone()
    with pytest.raises(ValueError, match="sparse_zscore_: g holds NaN"):
        sz.ops.sparse_zscore_(h, 10)
    assert torch.equal(h.nan_to_num(), g.nan_to_num())  # untouched
    values, mask = sz.ops.sparse_zscore(g, 10, check_finite=False)
    assert values.isnan().all() and not mask.any()
    g[17] = math.inf
    values, mask = sz.ops.sparse_zscore(g, 10, check_finite=False)
    assert values.isnan().all() and not mask.any()
    score = randn(100, seed=16)
    score[:50] = math.nan
    with pytest.raises(ValueError, match="score holds NaN"):
        sz.ops.sparse_zscore(randn(100), 10, score)
    _, mask = sz.ops.sparse_zscore(randn(100), 60, score, check_finite=False)
    assert mask[50:].all() and mask[:10].all() and not mask[10:50].any()  # NaN ranks lowest
    with pytest.raises(ValueError, match="grad holds NaN"):
        sz.ops.mask_score(randn(4), torch.tensor([1.0, math.inf, 0.0, 2.0]))
    assert sz.ops.mask_score(randn(4), torch.tensor([1.0, math.inf, 0.0, 2.0]),
                             check_finite=False).isnan().all()


@pytest.mark.parametrize("call, error, match", [
    (lambda: sz.ops.sparse_zscore(torch.zeros(10), 0), ValueError, r"k must be in \[1, 10\]"),
    (lambda: sz.ops.sparse_zscore(torch.zeros(10), 11), ValueError, r"k must be in \[1, 10\]"),
    (lambda: sz.ops.sparse_zscore(torch.zeros(10), 2.5), TypeError, "k must be an int"),
    (lambda: sz.ops.sparse_zscore(torch.zeros(0), 1), ValueError, "at least one element"),
    (lambda: sz.ops.sparse_zscore(torch.zeros(10, dtype=torch.int32), 1), TypeError, "g must be"),
    (lambda: sz.ops.sparse_zscore(torch.zeros(10), 1, torch.zeros(9)), ValueError, "score must"),
    (lambda: sz.ops.sparse_zscore(torch.zeros(10), 1, torch.zeros(10, dtype=torch.long)),
     TypeError, "score must be"),
    (lambda: sz.ops.sparse_zscore(torch.zeros(10), 1, eps=-1.0), ValueError, "eps must be"),
    (lambda: sz.ops.sparse_zscore(torch.zeros(10), 1, eps=math.nan), ValueError, "eps must be"),
    (lambda: sz.ops.sparse_zscore_(torch.zeros(10), 20), ValueError, "k must be"),
    (lambda: sz.ops.mask_score(torch.zeros(10), torch.zeros(11)), ValueError, "grad must have"),
    (lambda: sz.ops.mask_score(torch.zeros(3, dtype=torch.int8), torch.zeros(3)), TypeError,
     "w must be"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_score_or_grad_on_another_device_is_refused():
    # #12: a CPU g with a meta score returned uninitialized memory (736 True entries).
    with pytest.raises(ValueError, match="score must be on g's device cpu, got meta"):
        sz.ops.sparse_zscore(torch.randn(1000), 10, score=torch.randn(1000, device="meta"))
    with pytest.raises(ValueError, match="grad must be on w's device cpu, got meta"):
        sz.ops.mask_score(torch.randn(10), torch.randn(10, device="meta"))


def test_fake_kernels_check_k_dtypes_and_shapes():
    g = torch.randn(10, device="meta")
    with pytest.raises(ValueError, match=r"k must be in \[1, 10\]"):
        sz.ops.sparse_zscore(g, 11)
    with pytest.raises(TypeError, match="score must be a float16"):
        sz.ops.sparse_zscore(g, 3, score=torch.zeros(10, dtype=torch.int64, device="meta"))
    with pytest.raises(ValueError, match="grad must have the shape of w"):
        sz.ops.mask_score(g, torch.randn(9, device="meta"))


def test_a_k_beyond_int64_gets_a_clear_message():
    with pytest.raises(ValueError, match="k must be an int <= 9223372036854775807"):
        sz.ops.sparse_zscore(torch.randn(10), 2**63)


def test_an_overflowing_std_is_not_called_nan():
    # Finite values whose squares overflow float64: the message says so, not "NaN".
    g = torch.tensor([1e200, -1e200, 3.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="standard deviation of g overflows float64"):
        sz.ops.sparse_zscore(g, 1)
    with pytest.raises(ValueError, match="holds NaN or infinite"):
        sz.ops.sparse_zscore(torch.tensor([1.0, math.nan]), 1)


def test_in_place_refuses_a_score_sharing_g():
    g = torch.randn(10)
    before = g.clone()
    with pytest.raises(ValueError, match="score must not share memory with g"):
        sz.ops.sparse_zscore_(g, 3, score=g)
    assert torch.equal(g, before)
