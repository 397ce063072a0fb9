"""Every hyperparameter is in param_groups: saved by state_dict, adopted by load_state_dict,
read at each step (so schedulers and users can change it), and validated wherever it is set."""

import copy
import math

import pytest
import torch

import sharpzo_ext as sz
from sharpzo_ext.optim import streams

from sharpzo_options import grouped

# each optimizer with every hyperparameter set away from its default, and the same optimizer
# built with other values (what a resumed run may be constructed with)
CASES = [
    (sz.optim.ZOSGD,
     dict(lr=0.02, eps=0.01, q=3, dist="rademacher", one_sided=True, momentum=0.5,
          weight_decay=0.1, exception_safe=False),
     dict(lr=0.5, eps=0.2, q=1, momentum=0.0)),
    (sz.optim.SparseZO,
     dict(lr=0.02, eps=0.01, k=5, q=2, dist="rademacher", mask="magnitude", refresh=3,
          mask_queries=2, normalize=False, one_sided=True, weight_decay=0.1,
          exception_safe=False),
     dict(lr=0.5, eps=0.2, density=0.9, refresh=100, normalize=True)),
    (sz.optim.CMAES,
     dict(sigma=0.3, popsize=7, diagonal=True, bounds=(-2.0, 2.0), decomposition="eigh",
          active=False, tolfun=1e-9, tolx=1e-9, max_condition=1e10, restarts=2),
     dict(sigma=2.0, popsize=5, diagonal=False, bounds=None)),
    (sz.optim.SharpZO,
     dict(lr=0.02, eps=0.01, sigma=0.3, popsize=7, rho=0.2, switch_step=3, sharpness="rge",
          sharpness_queries=2, k=6, auto_switch=True, stall_generations=4,
          stall_tolerance=1e-2, q=2, refresh=2, mask_queries=3),
     dict(lr=0.5, eps=0.1, sigma=1.0, popsize=5, switch_step=50, sharpness="none", density=0.9)),
    (sz.optim.SPSA,
     dict(a=0.02, c=0.05, offset=2.0, alpha=0.5, gamma=0.2, q=3, rule="gc", momentum=0.5),
     dict(a=0.5, c=0.1, q=1, rule="clip")),
]


def quadratic(x):
    return 0.5 * (x * x).sum(-1) + 0.1 * (1 - torch.cos(5 * x)).sum(-1)


def make(cls, kwargs, seed=0, d=12):
    p = torch.nn.Parameter(torch.linspace(-1, 1.5, d, dtype=torch.float64))
    return p, cls([p], seed=seed, **grouped(cls, kwargs))


def steps(opt, p, n):
    for _ in range(n):
        opt.step(lambda: quadratic(p))


@pytest.mark.parametrize("cls, kwargs, other", CASES)
def test_every_hyperparameter_is_in_param_groups_and_the_state_dict(cls, kwargs, other):
    _, opt = make(cls, kwargs)
    saved = opt.state_dict()["param_groups"][0]
    for name, value in kwargs.items():
        assert opt.param_groups[0][name] == value, name
        assert saved[name] == value, name
        assert opt.defaults[name] == value, name


@pytest.mark.parametrize("cls, kwargs, other", CASES)
def test_load_adopts_the_saved_hyperparameters_and_resumes_bit_for_bit(cls, kwargs, other):
    p, opt = make(cls, kwargs)
    steps(opt, p, 6)
    state, saved_p = copy.deepcopy(opt.state_dict()), p.detach().clone()
    steps(opt, p, 6)
    q, resumed = make(cls, {**kwargs, **other}, seed=99)
    resumed.load_state_dict(state)
    for name, value in kwargs.items():
        assert resumed.param_groups[0][name] == value, name
    with torch.no_grad():
        q.copy_(saved_p)
    steps(resumed, q, 6)
    assert torch.equal(q.detach(), p.detach())
    assert resumed.forward_passes == opt.forward_passes


@pytest.mark.parametrize("cls, kwargs, other", CASES)
def test_an_invalid_saved_hyperparameter_is_refused_naming_it(cls, kwargs, other):
    _, opt = make(cls, kwargs)
    state = copy.deepcopy(opt.state_dict())
    name = {sz.optim.CMAES: "sigma", sz.optim.SPSA: "c"}.get(cls, "eps")
    state["param_groups"][0][name] = -1.0
    _, fresh = make(cls, kwargs)
    before = copy.deepcopy(fresh.param_groups[0])
    with pytest.raises(ValueError, match=name):
        fresh.load_state_dict(state)
    assert {k: v for k, v in fresh.param_groups[0].items() if k != "params"} == {
        k: v for k, v in before.items() if k != "params"}


def test_a_state_of_another_size_or_class_is_refused():
    _, opt = make(sz.optim.ZOSGD, dict(lr=0.1))
    _, larger = make(sz.optim.ZOSGD, dict(lr=0.1), d=13)
    with pytest.raises(ValueError, match="of 12 parameter elements, this ZOSGD has 13"):
        larger.load_state_dict(opt.state_dict())
    _, sparse = make(sz.optim.SparseZO, dict(lr=0.1))
    with pytest.raises(ValueError, match="not a SparseZO state dict .saved by ZOSGD"):
        sparse.load_state_dict(opt.state_dict())


def test_eps_changed_between_steps_is_the_next_steps_perturbation():
    p = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = sz.optim.ZOSGD([p], lr=0.0, eps=1e-3, q=1, seed=4)
    seen = []

    @sz.optim.Population
    def objective(X):
        seen.append(X.clone())
        return quadratic(X)

    opt.step(objective)
    opt.param_groups[0]["eps"] = 0.25
    opt.step(objective)
    z = sz.ops.sample(6, 4, streams.stream_id(streams.ZO_DIRECTIONS, 1, 0), dtype=torch.float64)
    assert torch.allclose(seen[1][0], 0.25 * z) and torch.allclose(seen[1][1], -0.25 * z)


def test_a_scheduler_sets_sharpzo_stage2_learning_rate():
    # normalized stage-2 steps change the masked coordinates by lr * (unit-std estimate)
    p = torch.nn.Parameter(torch.linspace(-1, 1, 400, dtype=torch.float64))
    opt = sz.optim.SharpZO([p], lr=1.0, switch_step=0, density=0.5, seed=0,
                           search=sz.optim.SharpZO.Search(refresh=100))
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    changes = []
    for _ in range(2):
        before = p.detach().clone()
        opt.step(lambda: quadratic(p))
        scheduler.step()
        changes.append(float((p.detach() - before)[opt.mask].std(unbiased=False)))
    assert changes[0] == pytest.approx(1.0, abs=1e-6)
    assert changes[1] == pytest.approx(0.5, abs=1e-6)


def test_shared_hyperparameters_must_agree_across_groups():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="eps must be the same in every parameter group"):
        sz.optim.ZOSGD([{"params": [a]}, {"params": [b], "eps": 0.1}], lr=0.1)
    opt = sz.optim.ZOSGD([{"params": [a]}, {"params": [b], "lr": 0.5, "momentum": 0.9}], lr=0.1)
    opt.param_groups[1]["q"] = 3
    with pytest.raises(ValueError, match="q must be the same"):
        opt.step(lambda: (a * a).sum() + (b * b).sum())
    assert torch.equal(a.detach(), torch.ones(3)) and opt.forward_passes == 0


@pytest.mark.parametrize("name, value", [("lr", -0.1), ("q", 0), ("dist", "normal"),
                                         ("momentum", 1.0), ("eps", math.nan)])
def test_a_bad_value_set_between_steps_is_refused_at_the_next_step(name, value):
    p, opt = make(sz.optim.ZOSGD, dict(lr=0.1))
    opt.param_groups[0][name] = value
    with pytest.raises((ValueError, TypeError), match=name):
        opt.step(lambda: quadratic(p))


def test_parameters_added_later_join_the_search_and_the_state_dict():
    a = torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64))
    b = torch.nn.Parameter(torch.linspace(0, 1, 4, dtype=torch.float64))
    opt = sz.optim.ZOSGD([a], lr=0.05, q=2, seed=1)
    opt.step(lambda: quadratic(a))
    opt.add_param_group({"params": [b], "lr": 0.01})
    opt.step(lambda: quadratic(a) + quadratic(b))
    state = copy.deepcopy(opt.state_dict())
    c, d = torch.nn.Parameter(a.detach().clone()), torch.nn.Parameter(b.detach().clone())
    twin = sz.optim.ZOSGD([{"params": [c]}, {"params": [d], "lr": 0.01}], lr=0.05, q=2, seed=1)
    twin.load_state_dict(state)
    opt.step(lambda: quadratic(a) + quadratic(b))
    twin.step(lambda: quadratic(c) + quadratic(d))
    assert torch.equal(a.detach(), c.detach()) and torch.equal(b.detach(), d.detach())

    sparse = sz.optim.SparseZO([a], lr=0.05, k=3, seed=1)
    sparse.step(lambda: quadratic(a))
    sparse.add_param_group({"params": [b]})
    sparse.step(lambda: quadratic(a) + quadratic(b))  # a new mask over all 10 elements
    assert sparse.mask.numel() == 10 and int(sparse.mask.sum()) == 3


@pytest.mark.parametrize("cls, kwargs", [(sz.optim.CMAES, dict(sigma=0.5)),
                                         (sz.optim.SharpZO, dict())])
def test_one_vector_optimizers_refuse_a_second_group(cls, kwargs):
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="searches one vector"):
        cls([{"params": [a]}, {"params": [b]}], **kwargs)
    opt = cls([a], **kwargs)
    with pytest.raises(ValueError, match="add none later"):
        opt.add_param_group({"params": [b]})


def test_sharpzo_keeps_the_sparse_settings_of_its_group():
    p = torch.nn.Parameter(torch.zeros(10))
    opt = sz.optim.SharpZO([{"params": [p], "refresh": 5, "k": 3, "mask": "random"}])
    group = opt.param_groups[0]
    assert (group["refresh"], group["k"], group["mask"]) == (5, 3, "random")


def test_cma_es_diagonal_is_fixed_for_a_run():
    p, opt = make(sz.optim.CMAES, dict(sigma=0.5, popsize=6))
    steps(opt, p, 2)
    before = p.detach().clone()
    opt.param_groups[0]["diagonal"] = True
    with pytest.raises(ValueError, match="diagonal is fixed for a run"):
        opt.step(lambda: quadratic(p))
    assert torch.equal(p.detach(), before)


def test_an_integral_float_for_an_int_is_accepted_with_a_warning():
    p = torch.nn.Parameter(torch.zeros(4))
    with pytest.warns(FutureWarning, match="q should be an int"):
        opt = sz.optim.ZOSGD([p], lr=0.1, q=2.0)
    assert opt.param_groups[0]["q"] == 2 and type(opt.param_groups[0]["q"]) is int
    with pytest.raises(TypeError, match="q must be an int"):
        sz.optim.ZOSGD([p], lr=0.1, q=2.5)
