"""sharpzo_ext.optim.blockwise and SparseZO's mask refresh in blocks (Note [A mask refresh in
blocks]): the ordered sums are reference.ordered_sum's, bit for bit; the top k is
sparse_zscore's selection; and the mask a refresh chooses a block at a time is the one the ops
choose over the whole vector (sz.ops.mask_score, then sz.ops.sparse_zscore), for every kind of
mask, parameter dtype and block boundary, without holding a vector of the model's size."""

import numpy as np
import pytest
import torch

import sharpzo_ext as sz
from sharpzo_ext import reference
from sharpzo_ext.bench.allocations import largest_allocation
from sharpzo_ext.optim import blockwise, flat, sparse, streams, two_point

SMALL_BLOCK = 2 * blockwise.CHUNK


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(blockwise, "BLOCK", SMALL_BLOCK)


def _blocks_of(x):
    return lambda start, end: x[start:end]


@pytest.mark.parametrize("n", [1, 4095, 4096, 4097, 3 * SMALL_BLOCK, 3 * SMALL_BLOCK + 77])
def test_ordered_sum_is_the_references(small_blocks, n):
    x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(n)).abs()
    x *= 10.0 ** torch.randint(-8, 8, (n,), generator=torch.Generator().manual_seed(1))
    assert blockwise.ordered_sum(_blocks_of(x), n) == reference.ordered_sum(x.numpy())


def test_moments_are_mask_scores(small_blocks):
    # mask_score with w = 1 is the z-score of |grad| with the ops' moments: recompute it from
    # the blockwise moments and compare bit for bit
    n = 3 * SMALL_BLOCK + 5
    grad = torch.randn(n, generator=torch.Generator().manual_seed(3))
    magnitudes = grad.double().abs()
    mean, denom, finite = blockwise.moments(_blocks_of(magnitudes), n, 1e-8)
    assert finite
    expected = sz.ops.mask_score(torch.ones(n), grad)
    assert torch.equal(((magnitudes - mean) / denom).float(), expected)


def test_moments_of_non_finite_data_are_not_finite(small_blocks):
    x = torch.ones(SMALL_BLOCK + 3, dtype=torch.float64)
    x[SMALL_BLOCK + 1] = float("inf")
    assert not blockwise.moments(_blocks_of(x), x.numel(), 1e-8)[2]


def _scores_with_ties(n, seed):
    """Scores from a few values (ties across every block boundary), signed zeros and NaN."""
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([-2.0, -0.0, 0.0, 0.5, 1.0, 1.0 + 2 ** -20, 3.0, float("nan")])
    return values[torch.randint(0, len(values), (n,), generator=g)]


@pytest.mark.parametrize("k", [1, 7, SMALL_BLOCK, 2 * SMALL_BLOCK + 1, 3 * SMALL_BLOCK])
def test_top_k_is_sparse_zscores_selection(small_blocks, k):
    n = 3 * SMALL_BLOCK
    for score in (_scores_with_ties(n, k), torch.randn(n, generator=torch.Generator())):
        expected = reference.sparse_zscore(torch.ones(n), k, score=score)[1]
        mask = blockwise.top_k_mask(_blocks_of(score), n, k, torch.device("cpu"))
        assert torch.equal(mask, expected)
        assert int(mask.sum()) == k


def _params(dtype, zero=False):
    """Random parameters across block boundaries; `zero`: all 0, or "float32 zero": float64
    values that are 0 once rounded to float32, as the scores see them."""
    g = torch.Generator().manual_seed(5)
    shapes = [(SMALL_BLOCK + 300,), (40, 100), (3,), (2 * SMALL_BLOCK - 1,)]
    params = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    for p in params:
        if zero == "float32 zero":
            p.mul_(1e-50)
        elif zero:
            p.zero_()
    return params


def _objective(params):
    target = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)).to(p.dtype)
              for i, p in enumerate(params)]
    return lambda: sum(float(((p.double() - t.double()) ** 2).sum())
                       for p, t in zip(params, target))


def _whole_vector_mask(objective, params, seed, refresh, options, zo):
    """The refresh as the ops make it over the whole vector (the code before blocks)."""
    w = flat.gather(params, torch.float32)
    if options.mask == "random":
        score = sz.ops.sample(w.numel(), seed, streams.stream_id(streams.RANDOM_MASK, refresh))
    elif options.mask == "magnitude":
        score = w.abs()
    else:
        ids = two_point.stream_ids(streams.MASK_DIRECTIONS, refresh, options.mask_queries)
        grad = two_point.dense_estimate(objective, params, seed, ids, zo, torch.float32)
        score = sz.ops.mask_score(w if bool(w.any()) else torch.ones_like(w), grad)
    return sz.ops.sparse_zscore(score, options.k, score=score, check_finite=False)[1]


@pytest.mark.parametrize("kind", sparse.MASKS)
@pytest.mark.parametrize("dtype,zero", [
    (dtype, zero) for dtype in (torch.float32, torch.bfloat16, torch.float64)
    for zero in (False, True)] + [(torch.float64, "float32 zero")])
def test_a_refresh_in_blocks_chooses_the_whole_vectors_mask(small_blocks, kind, dtype, zero):
    params = _params(dtype, zero)
    n = flat.numel(params)
    for k, refresh in ((1, 0), (n // 10, 3), (n - 1, 1)):
        options = sparse.Options(k, kind, mask_queries=3)
        zo = two_point.Options(eps=1e-2)
        objective = _objective(params)
        expected = _whole_vector_mask(objective, params, 11, refresh, options, zo)
        mask, evaluations = sparse.choose_mask(objective, params, 11, refresh, options, zo)
        assert torch.equal(mask, expected), (kind, dtype, zero, k)
        assert evaluations == (6 if kind == "score" else 0)


@pytest.mark.slow
def test_a_refresh_holds_no_vector_of_the_models_size_but_the_mask(monkeypatch):
    # d = 1,000,000 elements in one parameter, blocks of 65,536: before blocks, the refresh
    # allocated float32 vectors of d (4 MB each); now the largest allocation is the mask's d
    # bytes (a block's float64 values are 512 KiB, and so are the key histograms)
    monkeypatch.setattr(blockwise, "BLOCK", 16 * blockwise.CHUNK)
    params = [torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))]
    options = sparse.Options(100_000, "score", mask_queries=2)
    zo = two_point.Options(eps=1e-3, exception_safe=False)

    def refresh():
        sparse.choose_mask(lambda: float(params[0][:64].double().square().sum()), params, 0, 0,
                           options, zo)

    assert largest_allocation(refresh) == 1_000_000  # the new mask (bool)


def test_a_non_finite_score_is_an_error(small_blocks):
    params = _params(torch.float32)
    params[1][3, 7] = float("inf")
    with pytest.raises(ValueError, match="mask score is not finite"):
        sparse.choose_mask(_objective(params), params, 0, 0,
                           sparse.Options(100, "magnitude"), two_point.Options())


def test_sparsezo_on_a_model_of_several_blocks_is_the_run_it_was(small_blocks):
    # the optimizer end to end: a run whose masks are refreshed in blocks equals a run with
    # the whole-vector refresh (the code before blocks), step for step
    results = []
    for choose in (_whole_vector_mask, sparse.choose_mask):
        params = [p.requires_grad_() for p in _params(torch.float32)]
        objective = _objective(params)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sparse, "choose_mask", choose if choose is sparse.choose_mask else
                          lambda *a: (choose(*a), 6))
            opt = sz.optim.SparseZO(params, lr=1e-3, eps=1e-2, density=0.05, refresh=3,
                                    mask_queries=3, seed=4)
            losses = [float(opt.step(objective)) for _ in range(7)]
        results.append((losses, [p.detach().clone() for p in params], opt.mask.clone()))
    (losses0, params0, mask0), (losses1, params1, mask1) = results
    assert losses0 == losses1
    assert all(torch.equal(a, b) for a, b in zip(params0, params1))
    assert torch.equal(mask0, mask1)
    assert np.isfinite(losses1).all()
