"""ZOSGD: zeroth-order SGD with two-point (SPSA) estimates and MeZO's seed trick."""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import torch

from sharpzo_ext.ops import checks
from sharpzo_ext.optim import flat, state_checks, streams, two_point
from sharpzo_ext.optim.base import ForwardOnlyOptimizer, group_rates, options_from_groups
from sharpzo_ext.optim.objective import Objective

__all__ = ["ZOSGD", "zosgd_"]


@torch.no_grad()
def zosgd_(params: Sequence[torch.Tensor], *, offsets: Sequence[int],
           momentum_buffers: Sequence[torch.Tensor | None], seed: int, ids: Sequence[int],
           grads: Sequence[float], dist: str, lrs: Sequence[float],
           weight_decays: Sequence[float], momenta: Sequence[float]) -> None:
    """The ZOSGD update, in place, each parameter with its own rates: with the estimate
    g = (1/q) sum_j g_j z_j, x <- x (1 - lr weight_decay) - lr g, or with momentum
    b <- momentum b + g, x <- x - lr b (b in `momentum_buffers`). `offsets` are the parameters'
    flat offsets, `ids` the streams of the directions, `grads` their projected gradients g_j.
    The caller bounds the step first (two_point.check_step): in place, a step that overflows
    cannot be taken back."""
    coefficients = [g / len(ids) for g in grads]
    for p, offset, buffer, lr, decay, momentum in zip(params, offsets, momentum_buffers, lrs,
                                                      weight_decays, momenta):
        if decay:
            p.mul_(1 - lr * decay)
        if momentum:
            buffer.mul_(momentum)
            two_point.accumulate_(buffer, seed, ids, coefficients, dist, offset)
            p.add_(buffer, alpha=-lr)
        else:
            two_point.accumulate_(p, seed, ids, [-lr * c for c in coefficients], dist, offset)


def _momenta(param_groups) -> list[float]:
    """The momentum of every parameter, from its group, validated."""
    momenta = []
    for group in param_groups:
        momentum = checks.real(group["momentum"], "momentum", nonnegative=True, below=1)
        momenta += [momentum] * len(group["params"])
    return momenta


class ZOSGD(ForwardOnlyOptimizer):
    """Zeroth-order SGD (MeZO): x <- x - lr * (1/q) sum_j g_j z_j with g_j the two-point estimate
    (f(x + eps z_j) - f(x - eps z_j)) / (2 eps) of the directional derivative along z_j.

    Directions are regenerated from (seed, step, query), never stored: the update re-applies
    them with perturb_. ``step(closure)`` costs 2q forward passes (q + 1 one-sided) and returns
    an estimate of the loss at x. ``closure()`` takes no argument (the parameters are perturbed
    in place); ``step(sz.optim.Population(fn))`` evaluates the 2q perturbed flat vectors as the
    rows of one matrix in one call instead.

    Args:
        params: parameters or parameter groups (per-group ``lr``, ``weight_decay`` and
            ``momentum``; LR schedulers work as with any torch.optim optimizer).
        lr: learning rate.
        eps: perturbation size.
        q: directions per step (their estimates are averaged).
        dist: "gaussian" or "rademacher" directions.
        one_sided: (f(x + eps z) - f(x)) / eps: q + 1 forward passes instead of 2q.
        momentum: heavy-ball momentum on the estimate; needs one parameter-sized buffer,
            allocated at the first step.
        weight_decay: decoupled, x <- x (1 - lr weight_decay).
        exception_safe: keep a copy of the parameters during the step, so that a closure that
            raises leaves them bitwise as they were, and put them back exactly after each
            evaluation. False saves that copy (memory at inference level): the parameters are
            then put back by subtracting the perturbation again, within a few ulp.

    Every argument but ``seed`` is a hyperparameter in ``param_groups``; eps, q, dist,
    one_sided and exception_safe must be the same in every group.

    Memory: the parameters, the copy of ``exception_safe``, and the momentum buffer if any.
    """

    def __init__(self, params: Iterable, lr: float, eps: float = 1e-3, q: int = 1,
                 dist: str = "gaussian", seed: int = 0, one_sided: bool = False,
                 momentum: float = 0.0, weight_decay: float = 0.0, exception_safe: bool = True):
        zo = two_point.Options(eps, q, dist, one_sided, exception_safe)
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                    **dataclasses.asdict(zo)}
        super().__init__(params, defaults, seed)
        self._check_hyperparameters(self.param_groups)

    def _check_hyperparameters(self, param_groups) -> None:
        options_from_groups(two_point.Options, param_groups)
        group_rates(param_groups)
        _momenta(param_groups)

    def _check_state(self, shared: dict, state_dict: dict) -> None:
        """The momentum buffers too: one per parameter, of its shape."""
        super()._check_state(shared, state_dict)
        params = self._all_params()  # torch numbers the state of every parameter, frozen or not
        for index, entry in state_dict["state"].items():
            name = f"state[{index!r}]"
            if not (isinstance(index, int) and 0 <= index < len(params)):
                raise state_checks.InvalidState(name, f"is not one of the {len(params)} "
                                                f"parameters")
            state_checks.keys(entry, name, ("momentum",))
            state_checks.tensor(entry["momentum"], f"{name}.momentum",
                                tuple(params[index].shape), None)

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:
        """One two-point step; returns the estimate of the loss at x (see the class docs)."""
        objective = self._objective(closure)
        groups = self._tuned_groups()
        zo = options_from_groups(two_point.Options, groups)
        lrs, decays = group_rates(groups)
        momenta = _momenta(groups)
        ids = two_point.stream_ids(streams.ZO_DIRECTIONS, self.shared["steps"], zo.q)
        params = [p for group in groups for p in group["params"]]
        plus, minus = two_point.losses(objective, params, self.seed, ids, zo)
        grads = two_point.projected_gradients(plus, minus, zo)
        two_point.check_step(params, lrs, [g / zo.q for g in grads], zo.dist, momenta)
        buffers = [self._momentum_buffer(p) if m else None for p, m in zip(params, momenta)]
        zosgd_(params, offsets=flat.offsets(params), momentum_buffers=buffers, seed=self.seed,
               ids=ids, grads=grads, dist=zo.dist, lrs=lrs, weight_decays=decays, momenta=momenta)
        self._commit(two_point.cost(zo.q, zo.one_sided))
        return two_point.loss_estimate(plus, minus, zo.one_sided)

    def _momentum_buffer(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "momentum" not in state:  # allocated once, at the first step with momentum
            state["momentum"] = torch.zeros_like(p)
        return state["momentum"]
