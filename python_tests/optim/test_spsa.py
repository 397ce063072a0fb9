"""SPSA (ZIP's clipped rule and BlackVIP's gradient correction) against analytic answers: the
gain sequences, the directions, one- and two-step updates on linear objectives, where the
two-sided difference is exact, and descent on a quadratic."""

import math

import pytest
import torch

import sharpzo_ext as sz
from sharpzo_ext.optim import spsa


def linear(b):
    return sz.optim.Population(lambda X: (X * b).sum(-1))


def make(x0, **kwargs):
    p = torch.nn.Parameter(torch.as_tensor(x0, dtype=torch.float64).clone())
    return p, sz.optim.SPSA([p], **kwargs)


def test_gains_are_the_published_sequences():
    assert spsa.gains(1, 0.01, 0.01, 1.0, 0.4, 0.1) == (0.01 / 2 ** 0.4, 0.01)
    a_k, c_k = spsa.gains(10, 0.5, 0.2, 3.0, 0.602, 0.101)
    assert a_k == pytest.approx(0.5 / 13 ** 0.602) and c_k == pytest.approx(0.2 / 10 ** 0.101)


def test_directions_are_signs_times_magnitudes_in_half_to_one():
    D = spsa.directions(4000, seed=3, step=0, q=2, device="cpu")
    assert D.shape == (2, 4000) and D.dtype == torch.float64
    assert bool(((D.abs() >= 0.5) & (D.abs() < 1)).all())
    assert abs(float((D > 0).double().mean()) - 0.5) < 0.05           # fair signs
    assert abs(float(D.abs().mean()) - 0.75) < 0.01                  # uniform magnitudes
    assert torch.equal(D, spsa.directions(4000, 3, 0, 2, "cpu"))
    assert not torch.equal(D, spsa.directions(4000, 3, 1, 2, "cpu"))  # a new draw each step


@pytest.mark.parametrize("b", [3.0, -2.5])
def test_clip_rule_in_one_dimension_moves_by_the_step_size(b):
    # d = 1: (f(x + cD) - f(x - cD)) / (2c D) = b exactly, and |b| >= sqrt(1) is clipped to 1
    p, opt = make([0.7], q=3, rule="clip", a=0.01)
    opt.step(linear(torch.tensor([b], dtype=torch.float64)))
    a_1 = 0.01 / 2 ** 0.4
    assert float(p.detach()) == pytest.approx(0.7 - a_1 * math.copysign(1, b), abs=1e-12)


def test_clip_rule_leaves_small_estimates_alone():
    p, opt = make([0.7], q=2, rule="clip", a=0.1)
    opt.step(linear(torch.tensor([0.4], dtype=torch.float64)))
    assert float(p.detach()) == pytest.approx(0.7 - 0.1 / 2 ** 0.4 * 0.4, abs=1e-12)


def test_clip_rule_bounds_the_step_by_the_square_root_of_the_dimension():
    d = 64
    p, opt = make(torch.zeros(d), q=2, rule="clip", a=0.01)
    opt.step(linear(1e3 * torch.linspace(-1, 1, d, dtype=torch.float64)))
    assert float(p.detach().norm()) == pytest.approx(0.01 / 2 ** 0.4 * math.sqrt(d), rel=1e-12)


def test_gradient_correction_in_one_dimension():
    # m1 = b, step 1 subtracts a_1 (b + 0.8 m1) = 1.8 a_1 b; m2 = 0.8 b + b, step 2 subtracts
    # a_2 (b + 0.8 m2) = 2.44 a_2 b
    b, a = 0.3, 0.05
    p, opt = make([1.0], q=2, rule="gc", a=a, momentum=0.8)
    f = linear(torch.tensor([b], dtype=torch.float64))
    opt.step(f)
    x1 = 1.0 - a / 2 ** 0.4 * 1.8 * b
    assert float(p.detach()) == pytest.approx(x1, abs=1e-12)
    opt.step(f)
    assert float(p.detach()) == pytest.approx(x1 - a / 3 ** 0.4 * 2.44 * b, abs=1e-12)
    assert float(opt.shared["momentum"][0]) == pytest.approx(1.8 * b, abs=1e-12)


@pytest.mark.parametrize("rule", ["clip", "gc"])
def test_descends_on_a_quadratic(rule):
    d = 10
    x0 = torch.linspace(-1, 1, d, dtype=torch.float64)
    p, opt = make(x0, q=2, rule=rule, a=0.1, c=0.01, seed=1)
    quadratic = lambda x: 0.5 * (x * x).sum(-1)  # noqa: E731
    for _ in range(300):
        opt.step(sz.optim.Population(quadratic))
    assert float(quadratic(p.detach())) < 0.01 * float(quadratic(x0))


def test_a_step_costs_2q_forward_passes_in_one_population_call():
    calls = []

    def fn(X):
        calls.append(X.shape[0])
        return X.sum(-1)
    p, opt = make(torch.zeros(5), q=4)
    opt.step(sz.optim.Population(fn))
    assert calls == [8] and opt.forward_passes == 8


@pytest.mark.parametrize("kwargs, name", [
    (dict(a=0.0), "a"), (dict(c=-1.0), "c"), (dict(alpha=-0.1), "alpha"), (dict(q=0), "q"),
    (dict(rule="adam"), "rule"), (dict(momentum=1.0), "momentum")])
def test_invalid_hyperparameters_are_refused_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make(torch.zeros(3), **kwargs)
