"""The two objective kinds: a closure (no argument) or a Population (rows of X), declared at the
call site and never guessed; a callable of the wrong kind is a clear TypeError at its first call."""

import functools

import pytest
import torch

import sharpzo_ext as sz

OPTIMIZERS = [
    (sz.optim.ZOSGD, dict(lr=0.01, q=2)),
    (sz.optim.SparseZO, dict(lr=0.01, density=0.5, refresh=2)),
    (sz.optim.CMAES, dict(sigma=0.5, popsize=6)),
    (sz.optim.SharpZO, dict(popsize=6, switch_step=2,
                            search=sz.optim.SharpZO.Search(refresh=2))),
]


def sphere(X):
    return (X * X).sum(-1)


def make(cls, kwargs, d=8):
    p = torch.nn.Parameter(torch.linspace(-1, 1, d, dtype=torch.float64))
    return p, cls([p], seed=0, **kwargs)


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
def test_a_function_of_x_passed_as_a_closure_is_a_type_error_naming_population(cls, kwargs):
    p, opt = make(cls, kwargs)
    before = p.detach().clone()
    with pytest.raises(TypeError, match=r"calls closure\(\) with no argument.*sz.optim.Population"):
        opt.step(lambda X: sphere(X))
    assert torch.equal(p.detach(), before) and opt.forward_passes == 0


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
def test_a_closure_wrapped_in_population_is_a_type_error(cls, kwargs):
    p, opt = make(cls, kwargs)
    before = p.detach().clone()
    with pytest.raises(TypeError, match=r"called as fn\(X\).*without Population"):
        opt.step(sz.optim.Population(lambda: sphere(p)))
    assert torch.equal(p.detach(), before) and opt.forward_passes == 0


class RowLoss(torch.nn.Module):
    def forward(self, X):
        return sphere(X)


@torch.no_grad()
def decorated_rows(X):
    return sphere(X)


@pytest.mark.parametrize("wrapped", [RowLoss(), decorated_rows], ids=["module", "no_grad"])
def test_wrappers_of_a_function_of_x_get_the_hint_too(wrapped):
    _, opt = make(sz.optim.ZOSGD, dict(lr=0.1))
    with pytest.raises(TypeError, match="missing 1 required positional argument.*Population"):
        opt.step(wrapped)


def test_a_decorated_closure_wrapped_in_population_gets_the_hint():
    p, opt = make(sz.optim.CMAES, dict(sigma=0.5, popsize=6))

    @torch.no_grad()
    def closure():
        return sphere(p)

    with pytest.raises(TypeError, match=r"takes 0 positional arguments.*called as fn\(X\)"):
        opt.step(sz.optim.Population(closure))


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
def test_a_type_error_raised_inside_the_objective_is_not_rewritten(cls, kwargs):
    p, opt = make(cls, kwargs)

    def closure():
        return sphere(p) + "oops"  # a bug in the user's code, not a wrong kind

    with pytest.raises(TypeError) as raised:
        opt.step(closure)
    assert "Population" not in str(raised.value)
    with pytest.raises(TypeError) as raised:  # a TypeError of torch's argument parser, in C
        opt.step(functools.partial(torch.dot, p, "x"))
    assert "Population" not in str(raised.value)


@pytest.mark.parametrize("closure, match", [(None, "needs a closure"),
                                            (3.0, "needs a closure or a Population, got float")])
def test_no_callable_at_all(closure, match):
    _, opt = make(sz.optim.ZOSGD, dict(lr=0.1))
    with pytest.raises(TypeError, match=match):
        opt.step(closure)


def test_population_needs_a_callable():
    with pytest.raises(TypeError, match="callable"):
        sz.optim.Population(torch.zeros(3))


def test_callables_that_were_guessed_before_are_closures_now():
    # each of these took the population path, or not, by its signature; now each is a closure
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))

    class Loss(torch.nn.Module):
        def forward(self):
            return sphere(p)

    class Holder:
        def loss(self, scale=1.0):
            return scale * sphere(p)

    def variadic(*args):
        assert args == ()
        return sphere(p)

    results = []
    for closure in (lambda: sphere(p), Loss(), Holder().loss, variadic, lambda X=None: sphere(p)):
        p.data.fill_(1.0)
        opt = sz.optim.ZOSGD([p], lr=0.01, q=2, seed=0)
        opt.step(closure)
        results.append(p.detach().clone())
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_population_as_a_decorator_and_a_prompt_objective():
    @sz.optim.Population
    def objective(X):
        return sphere(X)

    assert isinstance(objective, sz.optim.Population)
    assert torch.equal(objective(torch.ones(3, 2)), torch.full((3,), 2.0, dtype=torch.float64))


def test_a_population_must_return_one_loss_per_row():
    with pytest.raises(ValueError, match="must return 3 losses"):
        sz.optim.Population(lambda X: torch.zeros(2))(torch.zeros(3, 4))


def test_the_distributed_shards_are_population_objectives():
    shard = sz.distributed.PopulationShard(sphere)
    data = sz.distributed.DataShard(sz.optim.Population(sphere), weight=1.0)
    assert isinstance(shard, sz.optim.Population) and isinstance(data, sz.optim.Population)
    X = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(shard(X), sphere(X)) and torch.equal(data(X), sphere(X))  # one process
    p, opt = make(sz.optim.CMAES, dict(sigma=0.5, popsize=6))
    opt.step(shard)
    assert opt.forward_passes == 6


def test_a_closure_returning_a_vector_is_refused():
    p, opt = make(sz.optim.ZOSGD, dict(lr=0.1))
    with pytest.raises(ValueError, match="scalar loss"):
        opt.step(lambda: p * p)
