"""perturb_ and sample: the perturbation stream of docs/stream.md, against sharpzo_ext.reference."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

import sharpzo_ext as sz
from sharpzo_ext import reference
from sharpzo_ext.bench.allocations import bytes_allocated

from markers import CUDA, DEVICES

pytestmark = pytest.mark.ops

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SEEDS_STREAMS_OFFSETS = [  # high words set, offsets off any block boundary, near the 2^63 limit
    (0, 0, 0), (1, 2, 3), (2**32 + 5, 2**33 + 7, 127), (2**63 - 1, 2**63 - 1, 2**40 + 129),
    (123456789, 0, 2**63 - 5000)]


def gaussian_tolerance(z: torch.Tensor) -> torch.Tensor:
    return 1e-5 * (1 + z.abs())


def bits(x: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits, for bit-for-bit comparisons (-0.0 != 0.0, NaN == NaN)."""
    return x.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()])


# ---- values against the reference --------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed, stream, offset", SEEDS_STREAMS_OFFSETS)
@pytest.mark.parametrize("n", [1, 5, 127, 1000, 4099])
def test_rademacher_matches_reference_exactly(device, seed, stream, offset, n):
    z = sz.ops.sample(n, seed, stream, "rademacher", offset, device=device)
    expected = reference.sample(n, seed, stream, "rademacher", offset)
    assert torch.equal(z.cpu(), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed, stream, offset", SEEDS_STREAMS_OFFSETS)
@pytest.mark.parametrize("n", [1, 3, 1001, 4099])
def test_gaussian_matches_reference(device, seed, stream, offset, n):
    z = sz.ops.sample(n, seed, stream, "gaussian", offset, device=device).cpu().double()
    expected = reference.sample(n, seed, stream, "gaussian", offset, dtype=torch.float64)
    assert ((z - expected).abs() <= gaussian_tolerance(expected)).all()


def test_gaussian_contract_tolerance_over_a_million_values():
    z = sz.ops.sample(1 << 20, 2024, 7).double()
    expected = reference.sample(1 << 20, 2024, 7, dtype=torch.float64)
    worst = ((z - expected).abs() / gaussian_tolerance(expected)).max().item()
    assert worst < 0.05  # measured 0.013 of the contract's tolerance


def test_known_answer_through_the_op():
    # seed 0, stream 0, block 0 is the all-zero Philox vector 6627e8d5 e169c58d bc57ac4c 9b00dbd8.
    words = [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    expected = torch.tensor([1.0 if (words[j // 32] >> (j % 32)) & 1 else -1.0 for j in range(128)])
    assert torch.equal(sz.ops.sample(128, 0, 0, "rademacher"), expected)
    u = [((w >> 9) + 0.5) * 2.0**-23 for w in words]
    r = math.sqrt(-2 * math.log(u[0]))
    z = sz.ops.sample(2, 0, 0, "gaussian")
    assert z[0].item() == pytest.approx(r * math.cos(2 * math.pi * u[1]), abs=1e-5)
    assert z[1].item() == pytest.approx(r * math.sin(2 * math.pi * u[1]), abs=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_perturb_matches_reference_in_every_dtype(device, dtype, dist):
    x = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0)).to(dtype)
    expected = reference.perturb(x, 11, 3, 0.25, dist, 77)
    out = sz.ops.perturb_(x.to(device), 11, 3, 0.25, dist, 77).cpu()
    if dist == "rademacher":
        assert torch.equal(out, expected)  # +-scale, one rounding: exact in every dtype
    else:
        # One rounding to dtype on top of the float32 stream's contract tolerance.
        eps = torch.finfo(dtype).eps
        tol = 0.25 * gaussian_tolerance(expected.double()) + eps * expected.double().abs()
        assert ((out.double() - expected.double()).abs() <= tol).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_equals_perturbing_zeros(dtype):
    z = sz.ops.sample((7, 33), 5, 1, "gaussian", 9, dtype=dtype)
    x = sz.ops.perturb_(torch.zeros(7, 33, dtype=dtype), 5, 1, 1.0, "gaussian", 9)
    assert torch.equal(bits(x), bits(z))
    assert z.shape == (7, 33) and z.dtype == dtype


# ---- reproducibility ---------------------------------------------------------------------------

@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bit_identical_for_one_and_two_threads(dist, dtype):
    n, offset = (1 << 20) + 37, 1000003
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            x = torch.ones(n, dtype=dtype)
            results.append(bits(sz.ops.perturb_(x, 42, 1, 0.5, dist, offset)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_whole_equals_slices_with_matching_offsets(device, dist):
    base = torch.randn(70001, generator=torch.Generator().manual_seed(1)).to(device)
    whole = sz.ops.perturb_(base.clone(), 9, 4, 0.1, dist, 5)
    sliced = base.clone()
    cuts = [0, 1, 130, 131, 4096, 33333, 70001]
    for lo, hi in zip(cuts, cuts[1:]):
        sz.ops.perturb_(sliced[lo:hi], 9, 4, 0.1, dist, 5 + lo)
    assert torch.equal(bits(whole), bits(sliced))


def test_seed_stream_and_offset_change_the_values():
    z = sz.ops.sample(4096, 1, 2, offset=3)
    assert torch.equal(z, sz.ops.sample(4096, 1, 2, offset=3))
    for other in (sz.ops.sample(4096, 2, 2, offset=3), sz.ops.sample(4096, 1, 3, offset=3),
                  sz.ops.sample(4096, 1, 2, offset=4)):
        assert not torch.equal(z, other)


# ---- statistics --------------------------------------------------------------------------------

def test_gaussian_moments_and_kolmogorov_smirnov():
    n = 1 << 20
    z = sz.ops.sample(n, 31337, 5, dtype=torch.float64).numpy()
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(scipy.stats.skew(z)) < 5 * math.sqrt(6 / n)
    assert abs(scipy.stats.kurtosis(z)) < 5 * math.sqrt(24 / n)
    assert scipy.stats.kstest(z, "norm").pvalue > 1e-3
    # each of the four lanes of a block is itself standard normal
    for lane in range(4):
        assert scipy.stats.kstest(z[lane::4], "norm").pvalue > 1e-3


def test_rademacher_balance():
    n = 1 << 20
    z = sz.ops.sample(n, 4242, 0, "rademacher", dtype=torch.float64).numpy()
    assert set(np.unique(z)) == {-1.0, 1.0}
    assert abs(z.mean()) < 5 / math.sqrt(n)
    for bit in (0, 31):  # no bit position of a word is biased
        assert abs(z[bit::32].mean()) < 5 / math.sqrt(n / 32)


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_different_seeds_streams_and_lags_are_uncorrelated(dist):
    n = 1 << 18
    base = sz.ops.sample(n + 128, 7, 0, dist, dtype=torch.float64).numpy()
    others = {
        "seed": sz.ops.sample(n, 8, 0, dist, dtype=torch.float64).numpy(),
        "stream": sz.ops.sample(n, 7, 1, dist, dtype=torch.float64).numpy(),
        "lag 1": base[1:n + 1], "lag 4": base[4:n + 4], "lag 128": base[128:n + 128],
    }
    for name, other in others.items():
        corr = np.corrcoef(base[:n], other)[0, 1]
        assert abs(corr) < 5 / math.sqrt(n), name


# ---- in place ----------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
@pytest.mark.parametrize("masked", [False, True])
def test_in_place_without_allocating(device, dist, masked):
    x = torch.zeros(1 << 20, device=device)
    mask = (torch.arange(1 << 20, device=device) % 3 == 0) if masked else None
    ptr = x.data_ptr()
    assert bytes_allocated(lambda: sz.ops.perturb_(x, 1, 0, 0.1, dist, 0, mask), device) == 0
    assert x.data_ptr() == ptr
    assert sz.ops.perturb_(x, 1) is x


def test_works_on_a_parameter_under_no_grad():
    p = torch.nn.Parameter(torch.zeros(100))
    with torch.no_grad():
        sz.ops.perturb_(p, 3, scale=2.0)
    assert torch.equal(p.detach(), 2.0 * sz.ops.sample(100, 3))
    assert p.requires_grad and p.grad is None


def test_refuses_a_tensor_requiring_grad_when_grad_mode_is_on():
    p = torch.nn.Parameter(torch.zeros(10))
    with pytest.raises(RuntimeError, match="x requires grad.*no_grad"):
        sz.ops.perturb_(p, 0)
    assert torch.equal(p.detach(), torch.zeros(10))


def test_bumps_the_version_so_autograd_sees_the_change():
    w = torch.ones(5, requires_grad=True)
    y = w * 2
    loss = (y * y).sum()  # saves y
    version = y._version
    with torch.no_grad():
        sz.ops.perturb_(y, 0)
    assert y._version == version + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_plus_minus_plus_returns_within_a_few_ulp():
    x0 = torch.randn(1 << 16, generator=torch.Generator().manual_seed(3))
    x = x0.clone()
    s = 1e-3
    for scale in (s, -2 * s, s):
        sz.ops.perturb_(x, 77, 0, scale)
    z = sz.ops.sample(1 << 16, 77)
    ulp = torch.finfo(torch.float32).eps * (x0.abs() + 2 * s * z.abs())
    assert ((x - x0).abs() <= 3 * ulp).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_perturbation_changes_only_masked_elements(device, dtype):
    x0 = torch.randn(5000, generator=torch.Generator().manual_seed(4)).to(dtype)
    x0[::7] = -0.0  # signed zeros outside the mask must keep their bits
    mask = torch.rand(5000, generator=torch.Generator().manual_seed(5)) < 0.1
    out = sz.ops.perturb_(x0.clone().to(device), 2, 1, 0.5, "rademacher", 10, mask.to(device)).cpu()
    assert torch.equal(bits(out[~mask]), bits(x0[~mask]))
    assert torch.equal(out, reference.perturb(x0, 2, 1, 0.5, "rademacher", 10, mask))


def test_non_contiguous_tensors_use_logical_order():
    x = torch.randn(40, 30, generator=torch.Generator().manual_seed(6))
    xt = x.t()  # non-contiguous view
    expected = reference.perturb(xt.contiguous(), 3, 0, 1.0, "rademacher", 0)
    sz.ops.perturb_(xt, 3, dist="rademacher")
    assert torch.equal(xt, expected)
    assert torch.equal(x, expected.t())  # written through to the base
    mask = torch.zeros(30, 40, dtype=torch.bool)
    mask[::2] = True
    y = torch.zeros(40, 30).t()
    sz.ops.perturb_(y, 3, dist="rademacher", mask=mask.t().contiguous().t())  # both strided
    assert torch.equal(y, reference.perturb(torch.zeros(30, 40), 3, 0, 1.0, "rademacher", 0,
                                            mask.t().contiguous().t()))


def test_empty_and_scalar_tensors():
    e = torch.empty(0)
    assert sz.ops.perturb_(e, 1) is e
    s = torch.tensor(0.0)
    sz.ops.perturb_(s, 1, dist="rademacher")
    assert s.item() == reference.sample(1, 1, dist="rademacher").item()


# ---- opcheck -----------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = torch.randn(3, 50, device=device)
    mask = torch.rand(3, 50, device=device) < 0.5
    torch.library.opcheck(torch.ops.sharpzo.perturb_.default, (x, 1, 2, 0.5, "gaussian", 3, None))
    torch.library.opcheck(torch.ops.sharpzo.perturb_.default, (x, 1, 2, 0.5, "rademacher", 3, mask))
    torch.library.opcheck(torch.ops.sharpzo.sample_.default, (x, 4, 0, "gaussian", 0))


# ---- CUDA --------------------------------------------------------------------------------------

@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_cpu_and_cuda_give_the_same_bits(dtype, dist):
    # Note [Same bits everywhere]: no FMA contraction, only correctly rounded operations.
    n = (1 << 16) + 3
    cpu = sz.ops.sample(n, 99, 3, dist, 12345, dtype=dtype)
    gpu = sz.ops.sample(n, 99, 3, dist, 12345, dtype=dtype, device="cuda").cpu()
    assert torch.equal(bits(cpu), bits(gpu))
    x = torch.randn(n, generator=torch.Generator().manual_seed(8)).to(dtype)
    mask = torch.rand(n, generator=torch.Generator().manual_seed(9)) < 0.3
    on_cpu = sz.ops.perturb_(x.clone(), 5, 0, 0.01, dist, 7, mask)
    on_gpu = sz.ops.perturb_(x.cuda(), 5, 0, 0.01, dist, 7, mask.cuda()).cpu()
    assert torch.equal(bits(on_cpu), bits(on_gpu))


# ---- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=2**63), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed=True), TypeError, "seed"),
    (dict(stream=-2), ValueError, "stream"),
    (dict(offset=-3), ValueError, "offset"),
    (dict(offset=2**64), ValueError, "offset"),
    (dict(dist="normal"), ValueError, "dist"),
    (dict(scale=float("nan")), ValueError, "scale"),
    (dict(scale=float("inf")), ValueError, "scale"),
    (dict(mask=torch.ones(9, dtype=torch.bool)), ValueError, "mask"),
    (dict(mask=torch.ones(10)), TypeError, "mask"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, error, match):
    x = torch.zeros(10)
    args = dict(seed=0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sz.ops.perturb_(x, **args)
    assert torch.equal(x, torch.zeros(10))  # nothing happened


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64])
def test_non_floating_tensors_are_refused(dtype):
    with pytest.raises(TypeError, match="x must be a float16, bfloat16, float32 or float64"):
        sz.ops.perturb_(torch.zeros(4, dtype=dtype), 0)
    with pytest.raises(TypeError, match="out must be"):
        sz.ops.sample(4, 0, dtype=dtype)


def test_raw_op_checks_in_cpp_too():
    # the C++ checks stand behind the Python wrapper for callers of torch.ops directly
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="perturb_: seed must be in"):
        torch.ops.sharpzo.perturb_(x, -1, 0, 1.0, "gaussian", 0, None)
    with pytest.raises(ValueError, match="sample_: offset must be in"):
        torch.ops.sharpzo.sample_(x, 0, 0, "gaussian", -5)


@pytest.mark.cuda
@CUDA
def test_mask_on_another_device_is_refused():
    with pytest.raises(ValueError, match="mask must be on x's device"):
        sz.ops.perturb_(torch.zeros(4, device="cuda"), 0, mask=torch.ones(4, dtype=torch.bool))


def test_a_meta_mask_with_a_cpu_tensor_is_refused():
    # #12: the dispatcher sends the call to the fake kernel, which once did nothing.
    x = torch.zeros(10)
    with pytest.raises(ValueError, match="mask must be on x's device cpu, got meta"):
        sz.ops.perturb_(x, 0, mask=torch.ones(10, dtype=torch.bool, device="meta"))
    assert torch.equal(x, torch.zeros(10))


def test_fake_kernels_check_what_the_kernels_check():
    with pytest.raises(TypeError, match="perturb_: x must be a float16"):
        sz.ops.perturb_(torch.zeros(3, dtype=torch.int64, device="meta"), 0)
    with pytest.raises(ValueError, match="mask must have the shape of x"):
        sz.ops.perturb_(torch.zeros(3, device="meta"), 0,
                        mask=torch.ones(4, dtype=torch.bool, device="meta"))
    with pytest.raises(ValueError, match="dist must be"):
        torch.ops.sharpzo.perturb_(torch.zeros(3, device="meta"), 0, 0, 1.0, "uniform", 0, None)


def test_a_string_scale_is_refused():
    with pytest.raises(TypeError, match="scale must be a number, got str"):
        sz.ops.perturb_(torch.zeros(3), 0, scale="1")
