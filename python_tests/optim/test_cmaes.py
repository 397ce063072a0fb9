"""CMAES: pycma's constants, convergence, reproducibility, resumption, bounds, bad input."""

import copy
import math

import numpy as np
import pytest
import torch

import sharpzo_ext as sz
from sharpzo_ext.optim.cma_constants import CMAConstants

from markers import CUDA


def sphere(X):
    return (X * X).sum(-1)


def ellipsoid(X):
    n = X.shape[-1]
    scale = 1e6 ** (torch.arange(n, dtype=X.dtype, device=X.device) / max(1, n - 1))
    return (scale * X * X).sum(-1)


def rosenbrock(X):
    return (100 * (X[..., 1:] - X[..., :-1] ** 2) ** 2 + (1 - X[..., :-1]) ** 2).sum(-1)


def start(n, seed=0, **kwargs):
    x0 = torch.tensor(np.random.default_rng(seed).uniform(-3, 3, n))
    p = torch.nn.Parameter(x0)
    return p, sz.optim.CMAES([p], **{"sigma": 2.0, "seed": seed, **kwargs})


def evaluations_to(target, f, opt, budget):
    while opt.best[1] >= target and opt.forward_passes < budget:
        opt.step(sz.optim.Population(f))
    return opt.forward_passes


# ---- constants ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n, popsize, expected", [
    (10, None, dict(popsize=10, mueff=3.167299281, cc=0.294990383, c1=0.01528382452,
                    chi_n=3.084726565, w1=0.4562726469, cs=0.3196142529, damps=1.319614253,
                    cmu=0.02355177665, sum_neg=-1.648945714)),
    (512, 40, dict(popsize=40, mu=20, mueff=11.30948209, cc=0.007794078504, c1=7.590472757e-6,
                   chi_n=22.61637256, w1=0.1671247015, cs=0.02528831902, damps=1.025288319,
                   cmu=7.303282779e-5, sum_neg=-1.103932341)),
])
def test_constants_equal_the_reference_values(n, popsize, expected):
    k = CMAConstants.pycma(n, popsize)
    actual = dict(popsize=k.popsize, mu=k.mu, mueff=k.mueff, cc=k.cc, c1=k.c1, chi_n=k.chi_n,
                  w1=k.weights[0], cs=k.cs, damps=k.damps, cmu=k.cmu,
                  sum_neg=sum(w for w in k.weights if w < 0))
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert sum(w for w in k.weights if w > 0) == pytest.approx(1, rel=1e-12)
    assert k.lazy_gap == pytest.approx(1 / (10 * n * (k.c1 + k.cmu)))


@pytest.mark.parametrize("n, popsize", [(3, None), (10, None), (40, 17), (512, 40)])
@pytest.mark.parametrize("diagonal", [False, True])
def test_constants_equal_pycma(n, popsize, diagonal):
    cma = pytest.importorskip("cma")
    opts = {"verbose": -9, "AdaptSigma": cma.sigma_adaptation.CMAAdaptSigmaCSA}
    if popsize:
        opts["popsize"] = popsize
    es = cma.CMAEvolutionStrategy(n * [0.0], 1.0, opts)
    k = CMAConstants.pycma(n, popsize, diagonal=diagonal)
    assert k.popsize == es.sp.popsize and k.mu == es.sp.weights.mu
    np.testing.assert_allclose(k.weights, es.sp.weights, rtol=1e-12)
    c1, cmu, cc = (es.sp.c1_sep, es.sp.cmu_sep, es.sp.cc_sep) if diagonal else (
        es.sp.c1, es.sp.cmu, es.sp.cc)
    assert (k.c1, k.cmu, k.cc) == pytest.approx((c1, cmu, cc), rel=1e-12)
    assert (k.cs, k.damps) == pytest.approx((es.adapt_sigma.cs, es.adapt_sigma.damps), rel=1e-12)


# ---- convergence -------------------------------------------------------------------------------

# pycma 4.5's medians over 15 seeds (docs/algorithms.md, "Convergence anchors"): x0 ~ U[-3, 3]^n,
# sigma0 = 2
@pytest.mark.parametrize("f, n, pycma_median", [(sphere, 10, 1410), (ellipsoid, 10, 4050),
                                                (sphere, 40, 5025)])
@pytest.mark.parametrize("decomposition", ["cholesky", "eigh"])
def test_evaluations_to_1e8_are_close_to_pycma(f, n, pycma_median, decomposition):
    counts = [evaluations_to(1e-8, f, start(n, seed, decomposition=decomposition)[1], 200000)
              for seed in range(5)]
    assert abs(np.median(counts) / pycma_median - 1) < 0.15


def test_rosenbrock():
    _, opt = start(10, seed=3)
    assert evaluations_to(1e-8, rosenbrock, opt, 30000) < 30000
    assert torch.allclose(opt.best[0], torch.ones(10, dtype=torch.float64), atol=1e-3)


def test_separable_variant_on_a_1000d_sphere():
    p = torch.nn.Parameter(torch.full((1000,), 1.0, dtype=torch.float64))
    opt = sz.optim.CMAES([p], sigma=0.5, seed=0, diagonal=True)
    f0 = float(sphere(p.detach()))
    evaluations_to(1e-6 * f0, sphere, opt, 60000)
    assert opt.best[1] < 1e-6 * f0  # six orders of magnitude
    assert opt.shared["cma"]["C"].shape == (1000,)  # O(d) state


# ---- reproducibility, resumption, closures -----------------------------------------------------

def run(opt, f, generations):
    for _ in range(generations):
        opt.step(sz.optim.Population(f))
    return opt.mean.clone(), opt.sigma, opt.shared["cma"]["C"].clone()


def test_same_seed_same_run_and_other_seed_other_run():
    a = run(start(8, seed=1)[1], ellipsoid, 15)
    b = run(start(8, seed=1)[1], ellipsoid, 15)
    other = sz.optim.CMAES([torch.nn.Parameter(start(8, seed=1)[0].detach().clone())], sigma=2.0,
                           seed=2)
    c = run(other, ellipsoid, 15)
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and torch.equal(a[2], b[2])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("kwargs", [{}, {"decomposition": "eigh"}, {"diagonal": True},
                                    {"bounds": (-1.0, 2.0)}])
def test_resume_from_state_dict_is_bit_for_bit(kwargs):
    p, opt = start(12, seed=5, **kwargs)
    run(opt, rosenbrock, 10)
    state = opt.state_dict()
    expected = run(opt, rosenbrock, 10)
    q = torch.nn.Parameter(torch.zeros(12, dtype=torch.float64))
    resumed = sz.optim.CMAES([q], sigma=1.0, seed=99, **kwargs)
    resumed.load_state_dict(state)
    got = run(resumed, rosenbrock, 10)
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]
    assert torch.equal(got[2], expected[2])
    assert resumed.forward_passes == opt.forward_passes


def test_interleaved_instances_equal_separate_runs():
    a, b = start(6, seed=1)[1], start(6, seed=2)[1]
    for _ in range(12):
        a.step(sz.optim.Population(sphere))
        b.step(sz.optim.Population(ellipsoid))
    assert torch.equal(a.mean, run(start(6, seed=1)[1], sphere, 12)[0])
    assert torch.equal(b.mean, run(start(6, seed=2)[1], ellipsoid, 12)[0])


def test_per_candidate_and_population_closures_agree():
    pa, a = start(5, seed=4)
    pb, b = start(5, seed=4)
    for _ in range(8):
        a.step(sz.optim.Population(rosenbrock))
        b.step(lambda: rosenbrock(pb))  # one candidate at a time, written into pb
    assert torch.equal(a.mean, b.mean) and torch.equal(pa, pb)
    assert a.forward_passes == b.forward_passes == 8 * a.popsize


def test_ask_tell_equals_step():
    pa, a = start(7, seed=6)
    _, b = start(7, seed=6)
    for _ in range(5):
        X = b.ask()
        assert torch.equal(X, b.ask())  # the same until tell
        b.tell(X, sphere(X))
        a.step(sz.optim.Population(sphere))
    assert torch.equal(a.mean, b.mean)
    assert torch.equal(pa.detach(), a.mean)  # the parameters hold the mean


def test_injected_solutions_are_whitened_explicitly():
    _, a = start(6, seed=7)
    _, b = start(6, seed=7)
    X = a.ask()
    X2 = X.clone()
    X2[0] = X[0] * 0.5  # a modified candidate
    a.tell(X2, sphere(X2))
    # the fast path would whiten row 0 as if it were unmodified: compare with explicit whitening
    Y = (X2 - b.mean) / b.sigma
    white = sz.optim.cma_factors.whiten(b.shared["cma"]["factor"], Y)
    order = sphere(X2).argsort()
    k = CMAConstants.pycma(6, b.popsize)
    w = k.weights_tensor()
    b.tell(X2, sphere(X2))
    expected_ps = math.sqrt(k.cs * (2 - k.cs) * k.mueff) * (w[:k.mu] @ white[order][:k.mu])
    assert torch.allclose(a.shared["cma"]["ps"], expected_ps, rtol=1e-10, atol=1e-12)


# ---- bounds ------------------------------------------------------------------------------------

def test_bounds_are_always_respected():
    p = torch.nn.Parameter(torch.full((4,), 0.9, dtype=torch.float64))
    opt = sz.optim.CMAES([p], sigma=3.0, seed=0, bounds=(torch.tensor([0.0, -1, -1, -1]), 1.0))
    seen = []

    def f(X):
        seen.append(X.clone())
        return ((X - torch.tensor([0.0, 2.0, -2.0, 0.3], dtype=X.dtype)) ** 2).sum(-1)

    for _ in range(120):
        opt.step(sz.optim.Population(f))
        assert (p >= torch.tensor([0.0, -1, -1, -1])).all() and (p <= 1).all()
    allx = torch.cat(seen)
    assert (allx[:, 0] >= 0).all() and (allx[:, 1:] >= -1).all() and (allx <= 1).all()
    assert torch.allclose(opt.best[0], torch.tensor([0.0, 1.0, -1.0, 0.3], dtype=torch.float64),
                          atol=1e-3)


# ---- stopping and restarts ---------------------------------------------------------------------

def test_tolx_stop_and_ipop_restart():
    _, opt = start(4, seed=0, tolx=1e-3, restarts=1)
    for _ in range(200):
        opt.step(sz.optim.Population(sphere))
        if opt.shared["cma"]["restart"] == 1:
            break
    assert opt.shared["cma"]["restart"] == 1 and opt.popsize == 2 * (4 + int(3 * math.log(4)))
    _, done = start(4, seed=0, tolx=1e-3)
    for _ in range(200):
        done.step(sz.optim.Population(sphere))
        if done.stop_reason:
            break
    assert done.stop_reason == "tolx"


# ---- exception safety and bad input ------------------------------------------------------------

def test_a_raising_closure_changes_nothing():
    p, opt = start(5, seed=1)
    run(opt, sphere, 3)
    before_p, before = p.detach().clone(), opt.state_dict()
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return sphere(p)

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(failing)
    assert torch.equal(p.detach(), before_p)
    assert opt.generation == 3 and torch.equal(opt.mean, before["sharpzo"]["cma"]["mean"])


def test_a_failed_step_with_a_restart_due_changes_nothing():
    p, opt = start(4, seed=0, tolx=1e-3, restarts=1)
    while opt.stop_reason is None:
        opt.step(sz.optim.Population(sphere))
    before_p, before = p.detach().clone(), copy.deepcopy(opt.state_dict())

    @sz.optim.Population
    def failing(X):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(failing)
    assert torch.equal(p.detach(), before_p) and opt.shared["cma"]["restart"] == 0
    assert opt.popsize == before["sharpzo"]["cma"]["popsize"]
    assert torch.equal(opt.mean, before["sharpzo"]["cma"]["mean"])
    opt.step(sz.optim.Population(sphere))  # the restart happens with the step that succeeds
    assert opt.shared["cma"]["restart"] == 1


def test_step_returns_the_best_finite_loss_when_some_are_nan():
    _, opt = start(5, seed=0)
    best = opt.step(sz.optim.Population(
        lambda X: torch.where(torch.arange(X.shape[0]) % 2 == 0, math.nan, sphere(X))))
    assert math.isfinite(best) and best == opt.best[1]


def test_nan_and_inf_losses_rank_last():
    _, a = start(6, seed=2)
    _, b = start(6, seed=2)
    X = a.ask()
    losses = sphere(X)
    worst = losses.argsort()[-2:]
    bad = losses.clone()
    bad[worst[0]], bad[worst[1]] = math.nan, math.inf
    a.tell(X, losses)
    b.tell(X, bad)
    assert torch.equal(a.mean, b.mean)  # the worst two are last either way


@pytest.mark.parametrize("call, error, match", [
    (lambda: start(3, popsize=1), ValueError, "popsize"),
    (lambda: start(3, sigma=0.0), ValueError, "sigma"),
    (lambda: start(3, sigma=math.nan), ValueError, "sigma"),
    (lambda: start(3, decomposition="qr"), ValueError, "decomposition"),
    (lambda: start(3, bounds=(1.0, 0.0)), ValueError, "bounds"),
    (lambda: sz.optim.CMAES([torch.nn.Parameter(torch.zeros(3))], sigma=1.0, seed=-1), ValueError,
     "seed"),
    (lambda: sz.optim.CMAES([torch.nn.Parameter(torch.zeros(3))], sigma=1.0, seed=0.5), TypeError,
     "seed"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_tell_leaves_the_state_unchanged():
    _, opt = start(4, seed=0)
    X = opt.ask()
    before = opt.state_dict()
    for losses, match in [(torch.zeros(3), "losses must hold"),
                          (torch.full((opt.popsize,), math.nan), "NaN or infinite"),
                          (torch.tensor([-math.inf] + [0.0] * (opt.popsize - 1)), "-inf")]:
        with pytest.raises(ValueError, match=match):
            opt.tell(X, losses)
    with pytest.raises(ValueError, match="X must have shape"):
        opt.tell(X[:2], torch.zeros(opt.popsize))
    assert torch.equal(opt.mean, before["sharpzo"]["cma"]["mean"]) and opt.generation == 0


def test_population_closure_must_return_popsize_losses():
    _, opt = start(4, seed=0)
    with pytest.raises(ValueError, match="must return"):
        opt.step(sz.optim.Population(lambda X: torch.zeros(2)))


def test_state_dict_of_another_optimizer_is_refused():
    _, opt = start(4)
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(4))], lr=1)
    with pytest.raises(ValueError, match="not a CMAES state dict"):
        opt.load_state_dict(sgd.state_dict())


@pytest.mark.cuda
@CUDA
def test_cuda_parameters():
    p = torch.nn.Parameter(torch.full((10,), 2.0, dtype=torch.float64, device="cuda"))
    opt = sz.optim.CMAES([p], sigma=1.0, seed=0)
    evaluations_to(1e-8, sphere, opt, 5000)
    assert opt.best[1] < 1e-8 and p.device.type == "cuda"


def test_step_returns_the_best_finite_loss_when_a_candidate_is_nan():
    # #12: one NaN candidate made step() return NaN.
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = sz.optim.CMAES([p], sigma=0.5, popsize=6, seed=0)
    calls = []

    def closure():
        calls.append(float((p.detach() ** 2).sum()))
        return math.nan if len(calls) == 1 else calls[-1]

    assert opt.step(closure) == min(calls[1:])


def test_a_failed_generation_leaves_the_state_as_it_was():
    # Note [ask changes nothing]: the decomposition due at a generation is tell()'s work.
    p = torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64))
    opt = sz.optim.CMAES([p], sigma=0.3, popsize=5, seed=3)
    opt.step(lambda: (p.detach() ** 2).sum())
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="-inf"):
        opt.step(lambda: -math.inf)
    after = opt.state_dict()
    assert after["sharpzo"]["cma"]["decomposed_at"] == before["sharpzo"]["cma"]["decomposed_at"]
    assert torch.equal(after["sharpzo"]["cma"]["factor"]["L"],
                       before["sharpzo"]["cma"]["factor"]["L"])
