"""Property-based fuzzing of every op (hypothesis): dtypes, shapes, strides, devices (CPU and
meta; CUDA when present), k, seeds, scales and masks, mostly valid and sometimes not.

Every generated call either agrees with sharpzo_ext.reference or raises a TypeError or
ValueError that names the argument; never a crash, never silent garbage. Calls whose tensors
sit on two devices are refused. A call refused on the CPU is refused with the same exception
type on meta tensors, and the other way round (Note [Fakes check what the kernels check]).
"""

import math

import pytest
import torch
from hypothesis import given, strategies as st

import sharpzo_ext as sz
from sharpzo_ext import reference

from markers import cuda_kernels_available

pytestmark = pytest.mark.ops

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DTYPES = FLOATS + [torch.int64, torch.bool]
DEVICES = ["cpu", "meta"] + (["cuda"] if cuda_kernels_available() else [])
HOME = "cuda" if cuda_kernels_available() else "cpu"  # where the main tensor lives
REFUSALS = (TypeError, ValueError)


@st.composite
def tensors(draw, shape=None, dtype=None, finite=True):
    """A tensor of `shape` (else drawn, up to 3 dims) and `dtype` (else drawn), contiguous or
    not, with random values (a NaN or an infinity sometimes, unless `finite`)."""
    shape = draw(st.lists(st.integers(0, 5), max_size=3)) if shape is None else list(shape)
    dtype = draw(st.sampled_from(DTYPES)) if dtype is None else dtype
    layout = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    stored = list(shape)
    if layout == "transposed" and len(shape) >= 2:
        stored[-1], stored[-2] = stored[-2], stored[-1]
    elif layout == "strided" and shape:
        stored[-1] *= 2
    if dtype == torch.bool:
        x = torch.rand(stored, generator=gen) < 0.5
    elif dtype == torch.int64:
        x = torch.randint(-5, 5, stored, generator=gen)
    else:
        x = (torch.randn(stored, generator=gen, dtype=torch.float64) * 3).to(dtype)
        if not finite and x.numel() and draw(st.booleans()):
            x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(
                st.sampled_from([math.nan, math.inf, -math.inf]))
    if layout == "transposed" and len(shape) >= 2:
        x = x.transpose(-1, -2)
    elif layout == "strided" and shape:
        x = x[..., ::2]
    assert list(x.shape) == list(shape)
    return x


def stream_ints():
    return st.one_of(st.integers(0, 2**63 - 1), st.integers(-3, -1), st.just(2**63),
                     st.integers(0, 1000))


def scales():
    return st.one_of(st.floats(-10, 10), st.sampled_from([math.nan, math.inf, 0.0]))


def verdict(call):
    """None if call() succeeds, else the exception (a refusal, or the test fails)."""
    try:
        call()
    except REFUSALS as error:
        return error
    return None


def to(device, *tensors):
    return [t if t is None else t.to(device) for t in tensors]


def assert_refusal_names(error, *names):
    assert any(name in str(error) for name in names), str(error)


def assert_meta_agrees(call, *tensors):
    """The op refuses `call(*tensors)` on the CPU iff it refuses it on meta tensors."""
    cpu = verdict(lambda: call(*[t if t is None else t.clone() for t in tensors]))
    meta = verdict(lambda: call(*to("meta", *tensors)))
    assert type(cpu) is type(meta), (cpu, meta)


# ---- perturb_ ----------------------------------------------------------------------------------

@given(x=tensors(), seed=stream_ints(), stream=stream_ints(), offset=stream_ints(),
       scale=scales(), dist=st.sampled_from(["gaussian", "rademacher", "uniform"]),
       mask_kind=st.sampled_from(["none", "same", "other shape", "not bool"]),
       mask_device=st.sampled_from(DEVICES), data=st.data())
def test_perturb_agrees_with_the_reference_or_refuses(x, seed, stream, offset, scale, dist,
                                                      mask_kind, mask_device, data):
    x = x.to(HOME)
    mask = None
    if mask_kind != "none":
        shape = x.shape if mask_kind != "other shape" else (*x.shape, 2)
        mask = data.draw(tensors(shape, torch.bool if mask_kind != "not bool" else torch.float32))
        mask = mask.to(mask_device)
    before = x.clone()
    error = verdict(lambda: sz.ops.perturb_(x, seed, stream, scale, dist, offset, mask))
    if mask is not None and mask.device != x.device and mask_kind == "same":
        assert error is not None  # two devices: refused, whatever else is wrong
    if error is not None:
        assert_refusal_names(error, "x", "seed", "stream", "offset", "scale", "dist", "mask")
        assert torch.equal(x, before) or x.dtype == torch.bool
        return
    expected = reference.perturb(before.cpu(), seed, stream, scale, dist, offset,
                                 None if mask is None else mask.cpu())
    if dist == "rademacher":
        assert torch.equal(x.cpu(), expected)
    else:
        tol = (abs(scale) * 1e-5 * (1 + expected.double().abs())
               + torch.finfo(x.dtype).eps * expected.double().abs())
        assert ((x.cpu().double() - expected.double()).abs() <= tol).all()


@given(x=tensors(), seed=stream_ints(), scale=scales(),
       dist=st.sampled_from(["gaussian", "rademacher", "uniform"]),
       mask_kind=st.sampled_from(["none", "same", "other shape", "not bool"]), data=st.data())
def test_perturb_fake_refuses_what_the_kernel_refuses(x, seed, scale, dist, mask_kind, data):
    mask = None
    if mask_kind != "none":
        shape = x.shape if mask_kind != "other shape" else (*x.shape, 2)
        mask = data.draw(tensors(shape, torch.bool if mask_kind != "not bool" else torch.float32))

    def call(x, mask):
        sz.ops.perturb_(x, seed, 0, scale, dist, 0, mask)

    assert_meta_agrees(call, x, mask)


@given(shape=st.lists(st.integers(0, 4), max_size=3), dtype=st.sampled_from(DTYPES),
       seed=stream_ints(), offset=stream_ints(), dist=st.sampled_from(["gaussian", "rademacher"]))
def test_sample_agrees_with_the_reference_or_refuses(shape, dtype, seed, offset, dist):
    error = verdict(lambda: sz.ops.sample(shape, seed, 1, dist, offset, dtype=dtype))
    if error is not None:
        assert_refusal_names(error, "out", "seed", "offset")
        return
    got = sz.ops.sample(shape, seed, 1, dist, offset, dtype=dtype)
    expected = reference.sample(shape, seed, 1, dist, offset, dtype=dtype)
    tol = 0 if dist == "rademacher" else 1e-5 * (1 + expected.double().abs()) + \
        torch.finfo(dtype).eps * expected.double().abs()
    assert ((got.double() - expected.double()).abs() <= tol).all()


# ---- sparse_zscore, sparse_zscore_, mask_score -------------------------------------------------

def ks():
    return st.one_of(st.integers(-1, 40), st.just(2**63), st.just(2**62))


def epsilons():
    return st.one_of(st.just(1e-8), st.floats(0, 1), st.sampled_from([-1.0, math.nan, math.inf]))


def assert_identical(got, expected):
    torch.testing.assert_close(got.cpu(), expected.cpu(), rtol=0, atol=0, equal_nan=True)


@given(g=tensors(finite=False), k=ks(), eps=epsilons(), check_finite=st.booleans(),
       score_kind=st.sampled_from(["none", "same", "other shape", "not floating", "nonfinite"]),
       score_device=st.sampled_from(DEVICES), in_place=st.booleans(), data=st.data())
def test_sparse_zscore_agrees_with_the_reference_or_refuses(g, k, eps, check_finite, score_kind,
                                                            score_device, in_place, data):
    g = g.to(HOME)
    score = None
    if score_kind != "none":
        shape = g.shape if score_kind != "other shape" else (*g.shape, 2)
        dtype = torch.int64 if score_kind == "not floating" else data.draw(st.sampled_from(FLOATS))
        score = data.draw(tensors(shape, dtype, finite=score_kind != "nonfinite"))
        score = score.to(score_device)
    before = g.clone()
    op = sz.ops.sparse_zscore_ if in_place else sz.ops.sparse_zscore
    result = []
    error = verdict(lambda: result.append(op(g, k, score, eps, check_finite=check_finite)))
    if score is not None and score.device != g.device and score_kind == "same":
        assert error is not None  # two devices: refused, whatever else is wrong
    if error is not None:
        assert_refusal_names(error, "g", "k", "eps", "score")
        assert_identical(g, before)
        return
    values, mask = reference.sparse_zscore(before.cpu(), k, None if score is None else score.cpu(),
                                           eps)
    assert_identical(result[0] if in_place else result[0][1], mask)
    assert_identical(g if in_place else result[0][0], values)


@given(g=tensors(), k=ks(), eps=epsilons(),
       score_kind=st.sampled_from(["none", "same", "other shape", "not floating"]),
       in_place=st.booleans(), data=st.data())
def test_sparse_zscore_fake_refuses_what_the_kernel_refuses(g, k, eps, score_kind, in_place,
                                                            data):
    score = None
    if score_kind != "none":
        shape = g.shape if score_kind != "other shape" else (*g.shape, 2)
        dtype = torch.int64 if score_kind == "not floating" else torch.float32
        score = data.draw(tensors(shape, dtype))
    op = sz.ops.sparse_zscore_ if in_place else sz.ops.sparse_zscore
    assert_meta_agrees(lambda g, score: op(g, k, score, eps), g, score)


@given(w=tensors(finite=False), eps=epsilons(), check_finite=st.booleans(),
       grad_kind=st.sampled_from(["same", "other shape", "not floating"]),
       grad_device=st.sampled_from(DEVICES), data=st.data())
def test_mask_score_agrees_with_the_reference_or_refuses(w, eps, check_finite, grad_kind,
                                                         grad_device, data):
    w = w.to(HOME)
    shape = w.shape if grad_kind != "other shape" else (*w.shape, 2)
    dtype = torch.int64 if grad_kind == "not floating" else data.draw(st.sampled_from(FLOATS))
    grad = data.draw(tensors(shape, dtype, finite=False)).to(grad_device)
    result = []
    error = verdict(lambda: result.append(sz.ops.mask_score(w, grad, eps,
                                                            check_finite=check_finite)))
    if grad.device != w.device and grad_kind == "same":
        assert error is not None  # two devices: refused, whatever else is wrong
    if error is not None:
        assert_refusal_names(error, "w", "grad", "eps")
        return
    assert_identical(result[0], reference.mask_score(w.cpu(), grad.cpu(), eps))


@given(w=tensors(), eps=epsilons(), grad_kind=st.sampled_from(["same", "other shape",
                                                              "not floating"]), data=st.data())
def test_mask_score_fake_refuses_what_the_kernel_refuses(w, eps, grad_kind, data):
    shape = w.shape if grad_kind != "other shape" else (*w.shape, 2)
    grad = data.draw(tensors(shape, torch.int64 if grad_kind == "not floating" else torch.float32))
    assert_meta_agrees(lambda w, grad: sz.ops.mask_score(w, grad, eps), w, grad)


# ---- cma_cov_update_ ---------------------------------------------------------------------------

@st.composite
def cov_updates(draw):
    """(C, pc, Y, weights, c1, cmu, decay), valid or with one thing wrong."""
    d, lam = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    A = draw(tensors((d, d), dtype))
    C = (A @ A.T).contiguous() if dtype.is_floating_point else A
    pc, Y, weights = draw(tensors((d,), dtype)), draw(tensors((lam, d), dtype)), \
        draw(tensors((lam,), dtype))
    coefficients = [draw(st.floats(-1, 1)) for _ in range(3)]
    fault = draw(st.sampled_from(["none", "C dtype", "C shape", "pc shape", "Y shape",
                                  "weights dtype", "coefficient", "alias pc", "alias Y",
                                  "device"]))
    if fault == "C dtype":
        C = C.half()
    elif fault == "C shape":
        C = C[:, :-1] if d > 1 else C.reshape(-1)
    elif fault == "pc shape":
        pc = torch.cat([pc, pc])
    elif fault == "Y shape":
        Y = Y[:, :-1] if d > 1 else Y.reshape(-1)
    elif fault == "weights dtype":
        weights = weights.to(torch.float64 if dtype == torch.float32 else torch.float32)
    elif fault == "coefficient":
        coefficients[draw(st.integers(0, 2))] = draw(st.sampled_from([math.nan, math.inf]))
    elif fault == "alias pc":
        pc = C[0]
    elif fault == "alias Y":
        Y, weights = C[:min(lam, d)], weights[:min(lam, d)]
    elif fault == "device":
        Y = Y.to(draw(st.sampled_from(DEVICES[1:])))
    return fault, (C, pc, Y, weights, *coefficients)


@given(case=cov_updates())
def test_cma_cov_update_agrees_with_the_reference_or_refuses(case):
    fault, (C, pc, Y, weights, c1, cmu, decay) = case
    C, pc, weights = (t.to(HOME) if t.device.type == "cpu" else t for t in (C, pc, weights))
    if Y.device.type == "cpu" and not fault.startswith("alias"):
        Y = Y.to(HOME)
    expected = None
    if fault == "none":
        expected = reference.cma_cov_update(C.cpu(), pc.cpu(), Y.cpu(), weights.cpu(), c1, cmu,
                                            decay)
    error = verdict(lambda: sz.ops.cma_cov_update_(C, pc, Y, weights, c1, cmu, decay))
    if fault != "none":
        assert error is not None, fault
        assert_refusal_names(error, "C", "pc", "Y", "weights", "c1", "cmu", "decay")
        return
    assert error is None, error
    if expected is not None:
        tol = {torch.float32: 2e-6, torch.float64: 1e-13}[C.dtype]
        torch.testing.assert_close(C.cpu(), expected, rtol=tol, atol=tol * float(
            expected.abs().max().clamp_min(1)))


@given(case=cov_updates())
def test_cma_cov_update_fake_refuses_what_the_kernel_refuses(case):
    fault, (C, pc, Y, weights, c1, cmu, decay) = case
    if fault.startswith("alias") or fault == "device":
        return  # memory and device mixes: the tests above
    assert_meta_agrees(lambda *t: sz.ops.cma_cov_update_(*t, c1, cmu, decay), C, pc, Y, weights)


# ---- quantize_rows -----------------------------------------------------------------------------

QMAX = st.one_of(st.just(127), st.integers(-1, 130))


@given(x=tensors(finite=False), qmax=QMAX)
def test_quantize_rows_agrees_with_the_reference_or_refuses(x, qmax):
    x = x.to(HOME)
    result = []
    error = verdict(lambda: result.append(sz.ops.quantize_rows(x, qmax)))
    if error is not None:
        assert x.dtype != torch.float32 or x.dim() != 2 or not 1 <= qmax <= 127
        assert_refusal_names(error, "x", "qmax")
        return
    (q, scale), (rq, rscale) = result[0], reference.quantize_rows(x.cpu(), qmax)
    assert_identical(q, rq)
    assert_identical(scale, rscale)


@given(x=tensors(), qmax=QMAX)
def test_quantize_rows_fake_refuses_what_the_kernel_refuses(x, qmax):
    assert_meta_agrees(lambda t: sz.ops.quantize_rows(t, qmax), x)
