"""cma_cov_update_ against sharpzo_ext.reference and its algebraic properties."""

import pytest
import torch

import sharpzo_ext as sz
from sharpzo_ext import reference

from markers import CUDA, DEVICES

pytestmark = pytest.mark.ops


def case(d, lam, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=gen, dtype=torch.float64)
    C = (A @ A.T / d + torch.eye(d, dtype=torch.float64)).to(dtype)
    pc = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype)
    Y = torch.randn(lam, d, generator=gen, dtype=torch.float64).to(dtype)
    w = torch.linspace(0.3, -0.2, lam, dtype=torch.float64).to(dtype)  # some negative (active)
    return C, pc, Y, w


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d, lam", [(1, 1), (5, 3), (31, 7), (32, 10), (33, 40), (100, 40),
                                    (512, 40)])
def test_matches_reference(device, dtype, d, lam):
    C, pc, Y, w = case(d, lam, dtype)
    expected = reference.cma_cov_update(C, pc, Y, w, 0.01, 0.02, 0.97)
    out = sz.ops.cma_cov_update_(C.to(device), pc.to(device), Y.to(device), w.to(device), 0.01,
                                 0.02, 0.97).cpu()
    tol = {torch.float32: 2e-6, torch.float64: 1e-13}[dtype]
    assert torch.allclose(out, expected, rtol=tol, atol=tol)
    assert torch.equal(out, out.T)  # exactly symmetric


def test_in_place_and_one_rank_one_term():
    C, pc, Y, w = case(64, 5, torch.float64)
    ptr, version = C.data_ptr(), C._version
    out = sz.ops.cma_cov_update_(C, pc, Y, torch.zeros(5, dtype=torch.float64), 1.0, 0.0, 0.0)
    assert out is C and C.data_ptr() == ptr and C._version == version + 1
    assert torch.allclose(C, torch.outer(pc, pc), rtol=1e-15, atol=0)  # decay 0: exactly c1 pc pc^T


def test_reads_only_the_upper_triangle():
    C, pc, Y, w = case(40, 6, torch.float64)
    garbage = C.clone()
    garbage.tril_(-1).add_(torch.randn(40, 40, dtype=torch.float64).tril(-1))
    garbage += C.triu()
    a = sz.ops.cma_cov_update_(C.clone(), pc, Y, w, 0.1, 0.2, 0.5)
    b = sz.ops.cma_cov_update_(garbage, pc, Y, w, 0.1, 0.2, 0.5)
    assert torch.equal(a, b)


def test_bit_identical_for_one_and_two_threads():
    C, pc, Y, w = case(300, 40, torch.float64, seed=1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sz.ops.cma_cov_update_(C.clone(), pc, Y, w, 0.01, 0.02, 0.97)
        torch.set_num_threads(2)
        two = sz.ops.cma_cov_update_(C.clone(), pc, Y, w, 0.01, 0.02, 0.97)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_non_contiguous_C_is_written_through():
    C, pc, Y, w = case(20, 4, torch.float64)
    big = torch.zeros(40, 40, dtype=torch.float64)
    view = big[::2, ::2]
    view.copy_(C)
    sz.ops.cma_cov_update_(view, pc, Y, w, 0.1, 0.1, 0.9)
    assert torch.allclose(big[::2, ::2], reference.cma_cov_update(C, pc, Y, w, 0.1, 0.1, 0.9))
    assert big[1::2].abs().sum() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    C, pc, Y, w = (t.to(device) for t in case(33, 5, torch.float32))
    torch.library.opcheck(torch.ops.sharpzo.cma_cov_update_.default, (C, pc, Y, w, 0.1, 0.2, 0.9))


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_and_cuda_give_the_same_bits(dtype):
    C, pc, Y, w = case(200, 40, dtype, seed=2)
    cpu = sz.ops.cma_cov_update_(C.clone(), pc, Y, w, 0.01, 0.02, 0.97)
    gpu = sz.ops.cma_cov_update_(C.cuda(), pc.cuda(), Y.cuda(), w.cuda(), 0.01, 0.02, 0.97)
    assert torch.equal(cpu, gpu.cpu())


@pytest.mark.parametrize("mutate, error, match", [
    (lambda C, pc, Y, w: (C.half(), pc.half(), Y.half(), w.half()), TypeError,
     "C must be a float32"),
    (lambda C, pc, Y, w: (C[:, :5], pc, Y, w), ValueError, "square"),
    (lambda C, pc, Y, w: (C, pc[:5], Y, w), ValueError, "pc must have shape"),
    (lambda C, pc, Y, w: (C, pc, Y[:, :5], w), ValueError, "Y must have shape"),
    (lambda C, pc, Y, w: (C, pc, Y, w[:2]), ValueError, "weights must have shape"),
    (lambda C, pc, Y, w: (C, pc.float(), Y, w), TypeError, "pc must have C's dtype"),
])
def test_bad_arguments(mutate, error, match):
    args = mutate(*case(8, 3, torch.float64))
    with pytest.raises(error, match=match):
        sz.ops.cma_cov_update_(*args, 0.1, 0.1, 0.9)


def test_non_finite_coefficients_are_refused():
    with pytest.raises(ValueError, match="decay must be finite"):
        sz.ops.cma_cov_update_(*case(4, 2, torch.float64), 0.1, 0.1, float("nan"))


def test_a_meta_companion_of_a_cpu_matrix_is_refused():
    # #12: C on the CPU with Y on meta silently did nothing.
    C = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="Y must be on C's device cpu, got meta"):
        sz.ops.cma_cov_update_(C, torch.zeros(3, dtype=torch.float64),
                               torch.zeros(2, 3, dtype=torch.float64, device="meta"),
                               torch.ones(2, dtype=torch.float64), 0.1, 0.1, 0.8)


@pytest.mark.parametrize("alias", ["pc", "Y", "weights"])
def test_inputs_aliasing_C_are_refused(alias):
    # #12: cma_cov_update_(A, A[0], A, ...) read rows of C that it had already written.
    A = torch.eye(3, dtype=torch.float64) + 1
    args = {"pc": torch.zeros(3, dtype=torch.float64), "Y": torch.ones(3, 3, dtype=torch.float64),
            "weights": torch.ones(3, dtype=torch.float64)}
    args[alias] = {"pc": A[0], "Y": A, "weights": A[1]}[alias]
    before = A.clone()
    with pytest.raises(ValueError, match=f"{alias} must not share memory with C"):
        sz.ops.cma_cov_update_(A, args["pc"], args["Y"], args["weights"], 0.1, 0.1, 0.8)
    assert torch.equal(A, before)


def test_fake_kernel_checks_shapes_and_dtypes():
    C = torch.eye(3, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="pc must have shape"):
        sz.ops.cma_cov_update_(C, torch.zeros(4, dtype=torch.float64, device="meta"),
                               torch.zeros(2, 3, dtype=torch.float64, device="meta"),
                               torch.ones(2, dtype=torch.float64, device="meta"), 0.1, 0.1, 0.8)
    with pytest.raises(TypeError, match="weights must have C's dtype"):
        sz.ops.cma_cov_update_(C, torch.zeros(3, dtype=torch.float64, device="meta"),
                               torch.zeros(2, 3, dtype=torch.float64, device="meta"),
                               torch.ones(2, device="meta"), 0.1, 0.1, 0.8)
