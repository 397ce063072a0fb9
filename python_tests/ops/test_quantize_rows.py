"""quantize_rows against sharpzo_ext.reference (bit for bit), known answers, the error bound it
promises, opcheck, and the same bits on CPU and CUDA."""

import math

import pytest
import torch

import sharpzo_ext as sz
from sharpzo_ext import reference

from markers import CUDA, DEVICES

pytestmark = pytest.mark.ops


def awkward_rows(seed=0):
    """Rows of every kind the op distinguishes: ordinary, zero, tiny, huge, ties at .5, and
    rows with NaN or an infinity."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 77, generator=g)
    x[1] = 0
    x[2] *= 1e-38  # subnormal territory
    x[3] *= 1e30
    x[4] = torch.arange(77) - 38.5  # max 38.5: many values land on .5 after scaling
    x[5, 9] = math.nan
    x[6, 0] = -math.inf
    x[7] = torch.randint(-127, 128, (77,), generator=g).float()
    x[8] = 0
    x[8, 3] = 1e-44  # max|x| / 127 rounds to 0
    return x


def assert_same(actual, expected):
    (q, scale), (rq, rscale) = actual, expected
    assert q.dtype == torch.uint8 and scale.dtype == torch.float32
    assert q.shape == rq.shape and scale.shape == rscale.shape == (q.shape[0], 1)
    assert torch.equal(q.cpu(), rq)
    assert torch.equal(scale.cpu().view(torch.int32), rscale.view(torch.int32)) or torch.equal(
        scale.cpu().nan_to_num(-1.0), rscale.nan_to_num(-1.0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("qmax", [127, 63, 1])
def test_matches_the_reference(device, qmax):
    x = awkward_rows()
    assert_same(sz.ops.quantize_rows(x.to(device), qmax), reference.quantize_rows(x, qmax))
    big = torch.randn(300, 2048, generator=torch.Generator().manual_seed(1)) * 5
    assert_same(sz.ops.quantize_rows(big.to(device), qmax), reference.quantize_rows(big, qmax))


def test_known_answers():
    q, scale = sz.ops.quantize_rows(torch.tensor([[1.5, -127.0, 0.5, 2.5, 127.0],
                                                  [0.0, 0.0, 0.0, 0.0, 0.0],
                                                  [0.1, 0.2, math.nan, 0.0, 0.0]]))
    assert q.tolist() == [[130, 1, 128, 130, 255], [128] * 5, [128] * 5]
    assert scale[0, 0] == 1.0 and scale[1, 0] == 1.0 and math.isnan(scale[2, 0])
    q, scale = sz.ops.quantize_rows(torch.tensor([[1.5, -63.0, 0.5, 2.5, 63.0, 31.5]]), qmax=63)
    assert q.tolist() == [[130, 65, 128, 130, 191, 160]] and scale.item() == 1.0
    q, scale = sz.ops.quantize_rows(torch.tensor([[-4.0, 1.0, 3.0]]), qmax=1)
    assert q.tolist() == [[127, 128, 129]] and scale.item() == 4.0


@pytest.mark.parametrize("qmax", [127, 63])
def test_dequantized_rows_are_within_half_a_step(qmax):
    x = torch.randn(64, 512, generator=torch.Generator().manual_seed(2)) * torch.logspace(
        -3, 3, 64)[:, None]
    q, scale = sz.ops.quantize_rows(x, qmax)
    error = ((q.float() - 128) * scale - x).abs()
    assert (error <= scale / 2 * (1 + 1e-5)).all()
    assert (q.float() - 128).abs().amax(dim=1).eq(qmax).all()  # each row uses the full range


def test_non_contiguous_input_by_logical_index():
    x = torch.randn(40, 30, generator=torch.Generator().manual_seed(3))
    assert_same(sz.ops.quantize_rows(x.T), reference.quantize_rows(x.T.contiguous()))


def test_outputs_are_not_differentiable():
    # #28.12: the outputs required grad and had a grad_fn whose backward left .grad as None
    x = torch.randn(3, 5, requires_grad=True)
    q, scale = sz.ops.quantize_rows(x)
    assert not q.requires_grad and not scale.requires_grad and scale.grad_fn is None
    assert torch.equal(q, sz.ops.quantize_rows(x.detach())[0])


def test_empty_input():
    q, scale = sz.ops.quantize_rows(torch.zeros(3, 0))
    assert q.shape == (3, 0) and torch.equal(scale, torch.ones(3, 1))
    q, scale = sz.ops.quantize_rows(torch.zeros(0, 5))
    assert q.shape == (0, 5) and scale.shape == (0, 1)


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("x, error, message", [
    (torch.zeros(3, 4, dtype=torch.float64), TypeError, "x must be a float32 tensor"),
    (torch.zeros(3, 4, dtype=torch.int8), TypeError, "x must be a float32 tensor"),
    (torch.zeros(12), ValueError, r"x must be 2-D \(rows, columns\)"),
    (torch.zeros(2, 3, 4), ValueError, r"x must be 2-D \(rows, columns\)"),
])
def test_bad_input_is_refused_naming_the_argument(device, x, error, message):
    with pytest.raises(error, match=f"quantize_rows: {message}"):
        sz.ops.quantize_rows(x.to(device))


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("qmax", [0, -1, 128, 255])
def test_qmax_out_of_range_is_refused(device, qmax):
    with pytest.raises(ValueError, match=rf"quantize_rows: qmax must be in \[1, 127\], got {qmax}"):
        sz.ops.quantize_rows(torch.zeros(2, 3, device=device), qmax)


@pytest.mark.parametrize("qmax", [63.5, "63", None, True])
def test_qmax_of_another_type_is_refused(qmax):
    with pytest.raises(TypeError, match="qmax must be an int"):
        sz.ops.quantize_rows(torch.zeros(2, 3), qmax)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    finite = awkward_rows()[[0, 1, 2, 3, 4, 7]]  # opcheck compares outputs with NaN != NaN
    torch.library.opcheck(torch.ops.sharpzo.quantize_rows.default, (finite.to(device),))
    torch.library.opcheck(torch.ops.sharpzo.quantize_rows.default, (finite.to(device), 63))


@pytest.mark.cuda
@CUDA
def test_cpu_and_cuda_give_the_same_bits():
    x = torch.randn(5000, 768, generator=torch.Generator().manual_seed(4)) * 3
    assert_same(sz.ops.quantize_rows(x.cuda()), sz.ops.quantize_rows(x))
    assert_same(sz.ops.quantize_rows(x.cuda(), 63), sz.ops.quantize_rows(x, 63))
