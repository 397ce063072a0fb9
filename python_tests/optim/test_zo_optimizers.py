"""ZOSGD, SparseZO and SharpZO on analytic objectives, and the guarantees every optimizer gives:
reproducibility, bit-for-bit resumption, exception safety, documented memory."""

import copy
import math
import warnings

import pytest
import torch

import sharpzo_ext as sz
from sharpzo_ext.bench.allocations import bytes_allocated
from sharpzo_ext.optim import two_point
from sharpzo_ext.optim import cma
from sharpzo_ext.optim.base import options_from_groups
from sharpzo_ext.optim.sharpzo import (Search, Settings, Warmup, path_sharpness,
                                       sharpness_step)

from markers import CUDA


def quadratic(x, scales=None):
    scales = torch.ones_like(x) if scales is None else scales
    return 0.5 * (scales * x * x).sum(-1)


def make(cls, d=50, seed=0, dtype=torch.float64, device="cpu", **kwargs):
    x0 = torch.randn(d, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    p = torch.nn.Parameter(x0.to(dtype=dtype, device=device))
    return p, cls([p], seed=seed, **kwargs)


def population(f):
    return sz.optim.Population(f)


def train(opt, loss_fn, steps):
    for _ in range(steps):
        opt.step(loss_fn)


# ---- rates on analytic objectives --------------------------------------------------------------

def test_zosgd_matches_the_spsa_rate_on_a_quadratic():
    # For f = |x|^2 / 2 with Gaussian directions,
    # E f(x - eta g) = f (1 - 2 eta + eta^2 (d + 2) / q), minimized at eta = q / (d + 2): f
    # shrinks by (1 - q / (d + 2)) per step in expectation.
    d, q, steps = 50, 2, 150
    finals = []
    for seed in range(6):
        p, opt = make(sz.optim.ZOSGD, d, seed, lr=q / (d + 2), q=q)
        f0 = float(quadratic(p.detach()))
        train(opt, lambda: quadratic(p), steps)
        finals.append(float(quadratic(p.detach())) / f0)
    expected = (1 - q / (d + 2)) ** steps  # 0.003
    assert expected / 5 < math.exp(sum(map(math.log, finals)) / len(finals)) < expected * 5


def test_rademacher_and_one_sided_variants_descend():
    for kwargs in [{"dist": "rademacher"}, {"one_sided": True}, {"momentum": 0.5}]:
        p, opt = make(sz.optim.ZOSGD, 20, 1, lr=0.02, q=2, **kwargs)
        f0 = float(quadratic(p.detach()))
        train(opt, lambda: quadratic(p), 200)
        assert float(quadratic(p.detach())) < 0.05 * f0, kwargs


def test_one_sided_costs_q_plus_one_forward_passes():
    p, opt = make(sz.optim.ZOSGD, 10, 0, lr=0.01, q=3, one_sided=True)
    train(opt, lambda: quadratic(p), 4)
    assert opt.forward_passes == 4 * (3 + 1)
    p, opt = make(sz.optim.ZOSGD, 10, 0, lr=0.01, q=3)
    train(opt, lambda: quadratic(p), 4)
    assert opt.forward_passes == 4 * 2 * 3


def logistic_problem(n=200, d=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w_true = torch.randn(d, generator=gen, dtype=torch.float64)
    y = (A @ w_true > 0).double()
    return lambda w: torch.nn.functional.binary_cross_entropy_with_logits(A @ w, y)


@pytest.mark.parametrize("cls, kwargs, fraction", [
    (sz.optim.ZOSGD, dict(lr=0.05, q=4), 0.45),
    # normalized steps keep a per-coordinate size of about lr: it stops short of ZOSGD's optimum
    (sz.optim.SparseZO, dict(lr=0.02, density=0.8, q=2, refresh=20), 0.5),
])
def test_logistic_regression(cls, kwargs, fraction):
    loss = logistic_problem()
    p = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))
    opt = cls([p], seed=0, **kwargs)
    train(opt, lambda: loss(p), 300)
    assert float(loss(p.detach())) < fraction * math.log(2)  # from ln 2 at w = 0


def rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


def test_zosgd_on_rosenbrock():
    p = torch.nn.Parameter(torch.tensor([-1.0, 1.0], dtype=torch.float64))
    opt = sz.optim.ZOSGD([p], lr=1e-3, q=2, seed=0)
    train(opt, lambda: rosenbrock(p), 3000)
    assert float(rosenbrock(p.detach())) < 0.5  # from 4, along the curved valley


# ---- SparseZO ----------------------------------------------------------------------------------

def test_sparse_zo_touches_only_the_mask():
    p, opt = make(sz.optim.SparseZO, 100, 0, lr=0.01, density=0.1, refresh=1000)
    before = p.detach().clone()
    opt.step(lambda: quadratic(p))
    mask = opt.masks[0]
    assert int(mask.sum()) == 10
    assert torch.equal(p.detach()[~mask], before[~mask])
    assert (p.detach()[mask] != before[mask]).all()


def test_score_mask_prefers_large_weights_with_informative_gradients():
    # f depends only on the first 10 coordinates; the weights are large everywhere
    d = 100
    p = torch.nn.Parameter(torch.full((d,), 2.0, dtype=torch.float64))
    scales = torch.zeros(d, dtype=torch.float64)
    scales[:10] = 1
    opt = sz.optim.SparseZO([p], lr=0.01, density=0.1, seed=0, mask_queries=400)
    opt.step(lambda: quadratic(p, scales))
    assert int(opt.masks[0][:10].sum()) >= 9


@pytest.mark.parametrize("mask", ["magnitude", "random"])
def test_other_masks(mask):
    p, opt = make(sz.optim.SparseZO, 100, 0, lr=0.01, density=0.2, mask=mask)
    before = p.detach().abs()
    opt.step(lambda: quadratic(p))
    chosen = opt.masks[0]
    assert int(chosen.sum()) == 20
    if mask == "magnitude":
        assert before[chosen].min() >= before[~chosen].max()


def test_sparse_zo_refreshes_on_schedule_and_counts_its_forward_passes():
    p, opt = make(sz.optim.SparseZO, 30, 0, lr=0.01, density=0.2, refresh=5, q=2, mask_queries=3)
    train(opt, lambda: quadratic(p), 11)  # refreshes at steps 0, 5, 10
    assert opt.shared["refreshes"] == 3
    assert opt.forward_passes == 11 * 2 * 2 + 3 * 2 * 3


def test_normalized_update_has_unit_scale():
    p, opt = make(sz.optim.SparseZO, 1000, 0, lr=1.0, density=0.5, refresh=100)
    before = p.detach().clone()
    opt.step(lambda: quadratic(p))
    change = (before - p.detach())[opt.masks[0]]
    assert abs(float(change.mean())) < 1e-9
    assert float(change.std(unbiased=False)) == pytest.approx(1, abs=1e-6)


# ---- SharpZO -----------------------------------------------------------------------------------

def test_rge_sharpness_direction_correlates_with_the_gradient():
    d = 100
    scales = torch.linspace(0.1, 10, d, dtype=torch.float64)
    cosines = {}
    for q in (1, 4, 16):
        values = []
        for seed in range(10):
            p, opt = make(sz.optim.SharpZO, d, seed, popsize=10,
                          warmup=Warmup(sharpness_queries=q))
            shift, _ = sharpness_step(lambda: quadratic(p, scales), [p], seed, 0,
                                      Settings(sharpness_queries=q), two_point.Options())
            grad = scales * p.detach()
            values.append(float(shift @ grad / (shift.norm() * grad.norm())))
            assert float(shift.norm()) == pytest.approx(0.1)  # rho, not rho / sqrt(popsize)
        cosines[q] = sum(values) / len(values)
    assert cosines[1] > 0.05 and cosines[4] > 0.2 and cosines[16] > 0.35
    assert cosines[1] < cosines[4] < cosines[16]


def test_cge_sharpness_is_the_exact_gradient_direction_on_a_quadratic():
    d = 20
    scales = torch.linspace(1, 3, d, dtype=torch.float64)
    p, _ = make(sz.optim.SharpZO, d, 0, sharpness="cge", popsize=6)
    before = p.detach().clone()
    shift, evaluations = sharpness_step(lambda: quadratic(p, scales), [p], 0, 0,
                                        Settings(sharpness="cge"), two_point.Options())
    grad = scales * p.detach()
    assert torch.allclose(shift, 0.1 * grad / grad.norm(), atol=1e-9)
    assert evaluations == 2 * d and torch.equal(p.detach(), before)


def test_stage1_generation_costs_popsize_plus_2q_forward_passes_in_one_batched_call():
    calls = []
    p, opt = make(sz.optim.SharpZO, 30, 0, popsize=12, switch_step=5,
                  warmup=Warmup(sharpness_queries=3))

    def objective(X):
        calls.append(X.shape[0])
        return quadratic(X)

    opt.step(sz.optim.Population(objective))
    assert opt.forward_passes == 12 + 2 * 3 and calls == [6, 12]


def test_path_sharpness_scores_candidates_uphill_along_the_evolution_path_for_free():
    # sharpness="path": each generation evaluates exactly the CMA-ES candidates shifted by
    # eps* = -rho p_c / |p_c| (p_c = 0 in the first generation), in one call and no other
    calls, rho = [], 0.2
    p, opt = make(sz.optim.SharpZO, 10, 0, popsize=8, sharpness="path", rho=rho, switch_step=9)
    twin_p, twin = make(sz.optim.CMAES, 10, 0, popsize=8, sigma=0.4)
    for generation in range(3):
        expected = path_sharpness(opt.shared["cma"], rho)
        assert generation > 0 or not expected.any()
        if generation:
            pc = opt.shared["cma"]["pc"]
            assert torch.allclose(expected, -rho * pc / pc.norm(), rtol=1e-12)
        X = cma.ask(twin.shared["cma"], twin.seed, options_from_groups(cma.Options,
                                                                       twin.param_groups))

        def objective(Y):
            calls.append(Y.shape[0])
            assert torch.allclose(Y, X + expected, rtol=0, atol=1e-12)
            return quadratic(Y)
        opt.step(sz.optim.Population(objective))
        twin.step(sz.optim.Population(lambda Y: quadratic(Y + expected)))
    assert calls == [8, 8, 8] and opt.forward_passes == 24


def rugged(x):
    # a quadratic bowl with high-frequency ripples: gradients are dominated by the ripples
    return 0.5 * (x * x).sum(-1) + 0.3 * (1 - torch.cos(12 * x)).sum(-1)


def test_sharpzo_beats_zosgd_on_a_rugged_objective_at_equal_budget():
    d, budget = 20, 6000
    wins = 0
    for seed in range(4):
        x0 = torch.full((d,), 2.5, dtype=torch.float64) + 0.1 * seed
        a = torch.nn.Parameter(x0.clone())
        sharp = sz.optim.SharpZO([a], lr=0.01, eps=1e-2, sigma=1.0, popsize=20, seed=seed,
                                 switch_step=200, density=0.5)
        while sharp.forward_passes < budget:
            sharp.step(population(rugged))
        b = torch.nn.Parameter(x0.clone())
        zosgd = sz.optim.ZOSGD([b], lr=0.01, eps=1e-2, q=1, seed=seed)
        while zosgd.forward_passes < budget:
            zosgd.step(lambda: rugged(b))
        wins += float(rugged(a.detach())) < float(rugged(b.detach()))
    assert wins == 4


def test_auto_switch_when_cma_stalls():
    p, opt = make(sz.optim.SharpZO, 5, 0, popsize=8, switch_step=10**6, sharpness="none",
                  warmup=Warmup(auto_switch=True, stall_generations=10, stall_tolerance=1e-3))
    for _ in range(400):
        opt.step(population(lambda X: quadratic(X) + 1.0))  # a floor at 1: progress stalls
        if opt.stage == 2:
            break
    assert opt.stage == 2 and opt.generation < 400


def test_switch_starts_stage2_from_the_cma_mean():
    p, opt = make(sz.optim.SharpZO, 8, 0, popsize=8, switch_step=3)
    for _ in range(3):
        opt.step(population(quadratic))
    assert opt.stage == 2 and torch.equal(p.detach(), opt.mean)
    opt.step(population(quadratic))
    assert opt.shared["sparse_steps"] == 1


# ---- guarantees common to all ------------------------------------------------------------------

OPTIMIZERS = [
    (sz.optim.ZOSGD, dict(lr=0.01, q=2)),
    (sz.optim.ZOSGD, dict(lr=0.01, q=2, momentum=0.9, one_sided=True)),
    (sz.optim.SparseZO, dict(lr=0.01, density=0.3, refresh=3)),
    (sz.optim.SharpZO, dict(popsize=8, switch_step=3, search=Search(refresh=2))),
    (sz.optim.CMAES, dict(sigma=0.5)),
    (sz.optim.SharpZO, dict(popsize=8, switch_step=3, search=Search(refresh=2),
                            sharpness="path")),
    (sz.optim.SPSA, dict(q=2)),
    (sz.optim.SPSA, dict(q=2, rule="gc", a=0.05)),
]


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
def test_reproducible_from_the_seed(cls, kwargs):
    runs = []
    for seed in (0, 0, 1):
        p, opt = make(cls, 16, 0, **kwargs)
        opt.shared["seed"] = seed
        train(opt, lambda: quadratic(p), 7)
        runs.append(p.detach().clone())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
def test_resume_from_state_dict_bit_for_bit(cls, kwargs):
    p, opt = make(cls, 16, 3, **kwargs)
    f = lambda: quadratic(p)  # noqa: E731
    train(opt, f, 4)
    state = copy.deepcopy(opt.state_dict())  # as torch.save would: torch's holds live buffers
    saved = p.detach().clone()
    train(opt, f, 5)
    q = torch.nn.Parameter(saved.clone())
    resumed = cls([q], seed=12345, **kwargs)
    resumed.load_state_dict(state)
    train(resumed, lambda: quadratic(q), 5)
    assert torch.equal(q.detach(), p.detach())
    assert resumed.forward_passes == opt.forward_passes


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_raising_closure_leaves_the_parameters_bitwise(cls, kwargs, fail_at):
    p, opt = make(cls, 16, 0, dtype=torch.float32, **kwargs)
    train(opt, lambda: quadratic(p), 4)
    before, steps, state = p.detach().clone(), opt.shared["steps"], opt.state_dict()
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("boom")
        return quadratic(p)

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(failing)
    assert torch.equal(p.detach(), before) and opt.shared["steps"] == steps
    opt.load_state_dict(state)  # and the optimizer can go on


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS[:3])
def test_a_nan_loss_is_refused_before_any_update(cls, kwargs):
    p, opt = make(cls, 8, 0, **kwargs)
    before = p.detach().clone()
    with pytest.raises(ValueError, match="non-finite loss"):
        opt.step(lambda: torch.tensor(math.nan))
    assert torch.equal(p.detach(), before)


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
def test_a_raising_population_closure_leaves_the_parameters_bitwise(cls, kwargs):
    p, opt = make(cls, 16, 0, dtype=torch.float32, **kwargs)
    train(opt, population(quadratic), 4)
    before, steps = p.detach().clone(), opt.shared["steps"]

    @sz.optim.Population
    def failing(X):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(failing)
    assert torch.equal(p.detach(), before) and opt.shared["steps"] == steps


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS[:3])
def test_population_and_in_place_closures_agree_in_float64(cls, kwargs):
    # float64 parameters: x + eps z is the same number whether perturb_ or the flat vector
    # computes it; only the closure's own sums (a vector vs the rows of a matrix) may round
    # differently
    pa, a = make(cls, 12, 0, **kwargs)
    pb, b = make(cls, 12, 0, **kwargs)
    for _ in range(5):
        a.step(lambda: quadratic(pa))
        b.step(population(quadratic))
    assert torch.allclose(pa.detach(), pb.detach(), rtol=1e-12, atol=1e-12)
    assert a.forward_passes == b.forward_passes


def test_memory_is_the_documented_buffers():
    d = 1 << 18
    p = torch.nn.Parameter(torch.zeros(d))
    loss = lambda: torch.dot(p, p)  # noqa: E731  (allocates nothing parameter-sized itself)
    lean = sz.optim.ZOSGD([p], lr=1e-3, seed=0, exception_safe=False)
    step = lambda: lean.step(loss)  # noqa: E731
    step()
    assert bytes_allocated(step) < 1024  # MeZO's seed trick: nothing parameter-sized
    safe = sz.optim.ZOSGD([p], lr=1e-3, seed=0)
    step = lambda: safe.step(loss)  # noqa: E731
    step()
    assert 4 * d <= bytes_allocated(step) < 4 * d + 1024  # the one documented copy


def test_momentum_allocates_its_buffer_once():
    d = 1 << 18
    p = torch.nn.Parameter(torch.zeros(d))
    opt = sz.optim.ZOSGD([p], lr=1e-3, seed=0, momentum=0.9, exception_safe=False)
    step = lambda: opt.step(lambda: torch.dot(p, p))  # noqa: E731
    assert 4 * d <= bytes_allocated(step) < 4 * d + 1024  # the first step: the buffer
    assert bytes_allocated(step) < 1024                   # then nothing parameter-sized


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("kind", ["closure", "population"])
def test_no_finite_loss_fails_the_step_and_changes_nothing(cls, kwargs, bad, kind):
    p, opt = make(cls, 16, 0, dtype=torch.float32, **kwargs)
    train(opt, lambda: quadratic(p), 4)
    before, state = p.detach().clone(), copy.deepcopy(opt.state_dict())
    objective = (lambda: torch.tensor(bad)) if kind == "closure" else population(
        lambda X: torch.full((X.shape[0],), bad))
    with pytest.raises(ValueError, match="non-finite|NaN or infinite|-inf|not finite"):
        opt.step(objective)
    assert torch.equal(p.detach(), before)
    assert opt.shared["steps"] == state["sharpzo"]["steps"]
    assert opt.forward_passes == state["sharpzo"]["forward_passes"]


def test_sharpzo_validates_every_option_at_construction():
    p = torch.nn.Parameter(torch.zeros(10))
    for kwargs, error, match in [
        (dict(search=Search(mask="top")), ValueError, "mask"),
        (dict(search=Search(refresh=0)), ValueError, "refresh"),
        (dict(search=Search(q=0)), ValueError, "q"), (dict(search=Search(k=11)), ValueError, "k"),
        (dict(warmup=Warmup(decomposition="qr")), ValueError, "decomposition"),
        (dict(sigma=0.0), ValueError, "sigma"), (dict(popsize=1), ValueError, "popsize"),
        (dict(warmup=Warmup(bounds=(1.0, 0.0))), ValueError, "bounds"),
        (dict(warmup=Warmup(stall_generations=0)), ValueError, "stall_generations"),
        (dict(sparse_options={"refreh": 2}), TypeError, "refreh"),
        (dict(refreh=2), TypeError, "unexpected keyword argument 'refreh'"),
        (dict(search=Warmup()), TypeError, "search must be a SharpZO.Search, not Warmup"),
    ]:
        with pytest.raises(error, match=match):
            sz.optim.SharpZO([p], **kwargs)


def test_sharpzo_deprecated_keywords_and_option_dicts_still_work():
    # Note [SharpZO's old keywords]: the same run, with a FutureWarning per deprecated surface
    runs = []
    for kwargs in (dict(search=Search(refresh=2, q=2), warmup=Warmup(diagonal=True)),
                   dict(refresh=2, q=2, diagonal=True),
                   dict(sparse_options={"refresh": 2, "q": 2}, cma_options={"diagonal": True})):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 10, dtype=torch.float64))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt = sz.optim.SharpZO([p], popsize=6, switch_step=2, seed=0, **kwargs)
        runs.append((p, [w.category for w in caught]))
        train(opt, lambda: quadratic(p), 5)
    assert runs[0][1] == [] and runs[1][1] == [FutureWarning] * 3
    assert runs[2][1] == [FutureWarning] * 2
    assert torch.equal(runs[0][0].detach(), runs[1][0].detach())
    assert torch.equal(runs[0][0].detach(), runs[2][0].detach())


def test_sharpzo_takes_the_papers_keywords_in_the_documented_order():
    # the public contract: SharpZO(params, lr, eps, sigma, popsize, rho, switch_step, sharpness,
    # density, seed, ...); the stages' other options are objects, so at most 13 parameters
    import inspect
    names = list(inspect.signature(sz.optim.SharpZO).parameters)
    assert names[:10] == ["params", "lr", "eps", "sigma", "popsize", "rho", "switch_step",
                          "sharpness", "density", "seed"]
    assert len(names) <= 13
    p = torch.nn.Parameter(torch.zeros(10))
    opt = sz.optim.SharpZO([p], 0.1, 0.01, 0.5, 6, 0.2, 3, "path", 0.5, 7)
    group = opt.param_groups[0]
    assert (group["lr"], group["eps"], group["sigma"], group["popsize"], group["rho"],
            group["switch_step"], group["sharpness"], group["k"], opt.seed) == (
        0.1, 0.01, 0.5, 6, 0.2, 3, "path", 5, 7)


def test_parameter_groups_and_lr_schedulers():
    a = torch.nn.Parameter(torch.ones(5, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(5, dtype=torch.float64))
    opt = sz.optim.ZOSGD([{"params": [a]}, {"params": [b], "lr": 0.0}], lr=0.1, seed=0)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(lambda: quadratic(a) + quadratic(b))
    scheduler.step()
    assert torch.equal(b.detach(), torch.ones(5, dtype=torch.float64)) and not torch.equal(
        a.detach(), torch.ones(5, dtype=torch.float64))
    assert opt.param_groups[0]["lr"] == 0.05


@pytest.mark.parametrize("cls, kwargs", [(sz.optim.ZOSGD, dict(lr=0.02, q=4)),
                                         (sz.optim.SparseZO, dict(lr=0.02, q=4, density=0.5))])
def test_bfloat16_parameters(cls, kwargs):
    p, opt = make(cls, 64, 0, dtype=torch.bfloat16, **kwargs)
    f0 = float(quadratic(p.detach().double()))
    train(opt, lambda: quadratic(p.float()), 600)
    assert p.dtype == torch.bfloat16 and float(quadratic(p.detach().double())) < 0.5 * f0


@pytest.mark.parametrize("call, match", [
    (lambda p: sz.optim.ZOSGD([p], lr=-1.0), "lr"),
    (lambda p: sz.optim.ZOSGD([p], lr=0.1, eps=0.0), "eps"),
    (lambda p: sz.optim.ZOSGD([p], lr=0.1, q=0), "q"),
    (lambda p: sz.optim.ZOSGD([p], lr=0.1, dist="uniform"), "dist"),
    (lambda p: sz.optim.ZOSGD([p], lr=0.1, momentum=1.0), "momentum"),
    (lambda p: sz.optim.SparseZO([p], lr=0.1, density=0.0), "density"),
    (lambda p: sz.optim.SparseZO([p], lr=0.1, k=11), "k .* must be an int in \\[1, 10\\]"),
    (lambda p: sz.optim.SparseZO([p], lr=0.1, mask="top"), "mask"),
    (lambda p: sz.optim.SharpZO([p], sharpness="fd"), "sharpness"),
    (lambda p: sz.optim.SharpZO([p], switch_step=-1), "switch_step"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.nn.Parameter(torch.zeros(10)))


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS[:3])
def test_cuda_parameters_match_cpu(cls, kwargs):
    p, opt = make(cls, 16, 0, **kwargs)
    q, gpu = make(cls, 16, 0, device="cuda", **kwargs)
    train(opt, lambda: quadratic(p), 5)
    train(gpu, lambda: quadratic(q), 5)
    assert torch.allclose(p.detach(), q.detach().cpu(), rtol=1e-10, atol=1e-12)


# ---- #12: small masks, masks at w = 0, construction-time validation -----------------------------

@pytest.mark.parametrize("k", [1, 2, 3])
def test_sparse_zo_with_a_few_coordinates_still_descends(k):
    # A z-score of one value is 0 (k = 1 never moved) and of two is -1, +1 whatever the
    # gradient (k = 2 climbed half the time): below MIN_NORMALIZED_K the raw estimate is used.
    target = torch.linspace(-1, 1, 6, dtype=torch.float64)
    p = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = sz.optim.SparseZO([p], lr=0.05, k=k, q=2, refresh=5, seed=1)
    f0 = float(((p.detach() - target) ** 2).sum())
    for _ in range(300):
        opt.step(lambda: ((p - target) ** 2).sum())
    assert float(((p.detach() - target) ** 2).sum()) < 0.2 * f0


def test_sparse_zo_first_mask_at_zero_follows_the_gradient():
    # At w = 0 the score |w|^2 zscore(|G|) is 0 everywhere; the mask was coordinates 0..k-1.
    target = torch.zeros(20, dtype=torch.float64)
    target[[7, 13]] = 5.0
    p = torch.nn.Parameter(torch.zeros(20, dtype=torch.float64))
    opt = sz.optim.SparseZO([p], lr=0.01, k=2, mask_queries=40, seed=0)
    opt.step(lambda: ((p - target) ** 2).sum())
    assert opt.mask.nonzero().flatten().tolist() == [7, 13]


def test_sharpzo_refuses_stage_two_options_at_construction():
    # #12: --density 2 once failed only at the switch, after stage 1 had run.
    p = torch.nn.Parameter(torch.zeros(8))
    for kwargs, match in [(dict(density=2), "density"), (dict(search=Search(k=0)), "k"),
                          (dict(search=Search(mask="best")), "mask"),
                          (dict(search=Search(refresh=0)), "refresh")]:
        with pytest.raises(ValueError, match=match):
            sz.optim.SharpZO([p], switch_step=100, **kwargs)


@pytest.mark.parametrize("cls, kwargs", [(sz.optim.ZOSGD, dict(lr=0.1)),
                                         (sz.optim.SparseZO, dict(lr=0.1)),
                                         (sz.optim.CMAES, dict(sigma=0.5)),
                                         (sz.optim.SharpZO, dict())])
def test_integer_parameters_are_refused(cls, kwargs):
    with pytest.raises(TypeError, match="floating-point parameters; parameter 0 of group 0"):
        cls([torch.zeros(4, dtype=torch.int64)], **kwargs)


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
def test_parameters_without_elements_are_refused_at_construction(cls, kwargs):
    # #28.11: SPSA took them and failed at its first step with a ZeroDivisionError
    kwargs = {"lr": 0.1, **kwargs} if cls in (sz.optim.ZOSGD, sz.optim.SparseZO) else kwargs
    with pytest.raises(ValueError, match="needs parameters with at least one element"):
        cls([torch.nn.Parameter(torch.zeros(0)), torch.nn.Parameter(torch.zeros(2, 0))],
            **kwargs)


@pytest.mark.parametrize("cls, kwargs, name", [
    (sz.optim.ZOSGD, dict(lr=1e308), "lr"),
    (sz.optim.ZOSGD, dict(lr=1e37, momentum=0.9), "lr"),  # lr / (1 - momentum) overflows
    (sz.optim.SparseZO, dict(lr=1e308), "lr"),
    (sz.optim.SharpZO, dict(lr=1e308, switch_step=0), "lr"),
    (sz.optim.SPSA, dict(a=1e308), "a"),
    (sz.optim.SPSA, dict(a=1e300, rule="gc"), "a"),
])
def test_a_step_that_would_write_inf_is_refused_and_changes_nothing(cls, kwargs, name):
    # #28.13: lr=1e308 (SparseZO) and a=1e308 (SPSA) wrote inf into the parameters; ZOSGD's
    # error named `scale`, which the user never passed
    w = torch.nn.Parameter(torch.linspace(-1, 1, 8))
    opt = cls([w], **kwargs)
    before, state = w.detach().clone(), opt.state_dict()
    with pytest.raises(ValueError, match=rf"^{name} \(1e\+\d+\) times the .*write inf; the "
                                         rf"parameters are unchanged \(lower {name}\)"):
        opt.step(lambda: (w.double() ** 2).sum())
    assert torch.equal(w.detach(), before) and opt.forward_passes == 0
    assert str(opt.state_dict()) == str(state)


@pytest.mark.parametrize("losses", [lambda X: torch.zeros(X.shape[0], dtype=torch.complex64),
                                    lambda X: torch.zeros(X.shape[0], dtype=torch.bool),
                                    lambda X: None, lambda X: "0.5"])
def test_population_losses_must_be_real_numbers(losses):
    p = torch.nn.Parameter(torch.zeros(4))
    opt = sz.optim.CMAES([p], sigma=0.5)
    with pytest.raises(TypeError, match="population objective must return"):
        opt.step(sz.optim.Population(losses))
    assert torch.equal(p.detach(), torch.zeros(4))
