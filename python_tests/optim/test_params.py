"""Which parameters every optimizer accepts and tunes (sharpzo_ext/optim/params.py): frozen
parameters are left alone as torch.optim leaves them, and parameters it cannot perturb in place
(shared memory, expanded, meta, sparse, integer) are refused at construction."""

import copy

import pytest
import torch

import sharpzo_ext as sz

from test_zo_optimizers import OPTIMIZERS, population, quadratic, train


def frozen_and_tuned(seed=0):
    gen = torch.Generator().manual_seed(seed)
    frozen = torch.nn.Parameter(torch.randn(5, generator=gen, dtype=torch.float64),
                                requires_grad=False)
    tuned = torch.nn.Parameter(torch.randn(16, generator=gen, dtype=torch.float64))
    return frozen, tuned


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
@pytest.mark.parametrize("kind", ["closure", "population"])
def test_frozen_parameters_are_left_alone(cls, kwargs, kind):
    # The frozen parameter comes first: were it counted, the tuned one's flat offset (and so
    # its perturbations) would differ from an optimizer that never saw it.
    frozen, tuned = frozen_and_tuned()
    before = frozen.detach().clone()
    opt = cls([frozen, tuned], seed=0, **kwargs)
    alone = torch.nn.Parameter(tuned.detach().clone())
    ref = cls([alone], seed=0, **kwargs)
    if kind == "closure":
        train(opt, lambda: quadratic(tuned) + quadratic(frozen), 6)
        train(ref, lambda: quadratic(alone) + quadratic(before), 6)
    else:
        train(opt, population(quadratic), 6)
        train(ref, population(quadratic), 6)
    assert torch.equal(frozen.detach(), before)
    assert torch.equal(tuned.detach(), alone.detach())
    assert opt.state_dict()["sharpzo"]["numel"] == 16


def test_a_frozen_group_keeps_its_place_for_schedulers_and_state():
    frozen, tuned = frozen_and_tuned()
    opt = sz.optim.ZOSGD([{"params": [frozen]}, {"params": [tuned], "momentum": 0.9}], lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(lambda: quadratic(tuned))
    scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == [0.005, 0.005]
    assert list(opt.state_dict()["state"]) == [1]  # the tuned parameter's momentum, by its index
    again = sz.optim.ZOSGD([{"params": [frozen]}, {"params": [tuned], "momentum": 0.9}], lr=0.01)
    again.load_state_dict(copy.deepcopy(opt.state_dict()))


def test_freezing_after_construction_is_refused_and_changes_nothing():
    frozen, tuned = frozen_and_tuned()
    opt = sz.optim.SharpZO([frozen, tuned], popsize=6, switch_step=2)
    state, before = copy.deepcopy(opt.state_dict()), tuned.detach().clone()
    tuned.requires_grad_(False)
    with pytest.raises(RuntimeError, match="parameter 1 .* was frozen after"):
        opt.step(lambda: quadratic(tuned))
    frozen.requires_grad_(True)
    tuned.requires_grad_(True)
    with pytest.raises(RuntimeError, match="parameter 0 .* was unfrozen after"):
        opt.step(lambda: quadratic(tuned))
    assert torch.equal(tuned.detach(), before)
    assert opt.state_dict()["sharpzo"]["steps"] == state["sharpzo"]["steps"]


def test_a_state_dict_that_froze_other_parameters_is_refused():
    a = torch.nn.Parameter(torch.zeros(4), requires_grad=False)
    b = torch.nn.Parameter(torch.zeros(4))
    state = sz.optim.ZOSGD([a, b], lr=0.1).state_dict()
    assert state["sharpzo"]["frozen"] == [0]
    a.requires_grad_(True)
    b.requires_grad_(False)
    with pytest.raises(ValueError, match=r"froze parameters \[0\].* freezes \[1\]"):
        sz.optim.ZOSGD([a, b], lr=0.1).load_state_dict(state)


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS[:1] + OPTIMIZERS[4:5])
def test_nothing_to_tune_is_refused(cls, kwargs):
    frozen, _ = frozen_and_tuned()
    with pytest.raises(ValueError, match="none .*frozen"):
        cls([frozen], **kwargs)


def test_a_plain_tensor_is_tuned_whatever_its_flag():
    x = torch.ones(6, dtype=torch.float64)  # requires_grad=False: not a Parameter, not frozen
    opt = sz.optim.ZOSGD([x], lr=0.1, seed=0)
    opt.step(lambda: quadratic(x))
    assert not torch.equal(x, torch.ones(6, dtype=torch.float64))


def views_of_one_tensor():
    w = torch.randn(6)
    return [w, w[:2]]


@pytest.mark.parametrize("params, error, match", [
    (views_of_one_tensor(), ValueError, "share memory"),
    ((lambda w: [w, w])(torch.randn(6)), ValueError, "share memory"),
    ((lambda w: [w[0::2], w[1::2], w[2:3]])(torch.randn(6)), ValueError, "share memory"),
    ([torch.randn(1).expand(4)], ValueError, "expanded"),
    ([torch.empty(4, device="meta")], ValueError, "meta device"),
    ([torch.eye(3).to_sparse()], TypeError, "dense"),
    ([torch.zeros(3, dtype=torch.int64)], TypeError, "floating-point"),
])
@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS[:1] + OPTIMIZERS[2:5] + OPTIMIZERS[6:7])
def test_parameters_it_cannot_perturb_in_place_are_refused(params, error, match, cls, kwargs):
    with pytest.raises(error, match=match):
        cls(params, **kwargs)


def test_disjoint_slices_of_one_tensor_are_accepted():
    # (interleaved views, w[0::2] and w[1::2], are refused: the check compares the span from
    # each view's first element to its last)
    w = torch.zeros(6, dtype=torch.float64)
    opt = sz.optim.ZOSGD([w[:3], w[3:]], lr=0.1, seed=0)
    opt.step(lambda: quadratic(w - 1))
    assert bool((w != 0).all())


def test_an_added_group_that_overlaps_an_earlier_one_is_refused():
    w = torch.zeros(6)
    opt = sz.optim.ZOSGD([w[:3]], lr=0.1)
    with pytest.raises(ValueError, match="an earlier parameter 0 of group 0 and parameter 0 of "
                                         "group 1 share memory"):
        opt.add_param_group({"params": [w[2:]]})
    assert len(opt.param_groups) == 1
