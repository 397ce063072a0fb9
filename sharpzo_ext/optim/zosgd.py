"""ZOSGD: zeroth-order SGD with two-point (SPSA) estimates and MeZO's seed trick."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

import sharpzo_ext.ops as ops
from sharpzo_ext.optim import streams, zo
from sharpzo_ext.optim.base import ForwardOnlyOptimizer, check_int, check_positive

__all__ = ["ZOSGD"]


def check_zo_options(eps, q, dist) -> dict:
    if dist not in ops.DISTRIBUTIONS:
        raise ValueError(f"dist must be one of {ops.DISTRIBUTIONS}, got {dist!r}")
    return {"eps": check_positive(eps, "eps"), "q": check_int(q, "q", 1), "dist": dist}


class ZOSGD(ForwardOnlyOptimizer):
    """Zeroth-order SGD (MeZO): x <- x - lr * (1/q) sum_j g_j z_j with g_j the two-point estimate
    (f(x + eps z_j) - f(x - eps z_j)) / (2 eps) of the directional derivative along z_j.

    Directions are regenerated from (seed, step, query), never stored: the update re-applies
    them with perturb_. ``step(closure)`` costs 2q forward passes (q + 1 one-sided) and returns
    an estimate of the loss at x. The closure takes no argument (the parameters are perturbed in
    place) or takes the 2q perturbed flat vectors as rows of a matrix (one batched call).

    Args:
        params: parameters or parameter groups (per-group ``lr`` and ``weight_decay``; LR
            schedulers work as with any torch.optim optimizer).
        lr: learning rate.
        eps: perturbation size.
        q: directions per step (their estimates are averaged).
        dist: "gaussian" or "rademacher" directions.
        one_sided: (f(x + eps z) - f(x)) / eps: q + 1 forward passes instead of 2q.
        momentum: heavy-ball momentum on the estimate; needs one parameter-sized buffer.
        weight_decay: decoupled, x <- x (1 - lr weight_decay).
        exception_safe: keep a copy of the parameters during the step, so that a closure that
            raises leaves them bitwise as they were, and put them back exactly after each
            evaluation. False saves that copy (memory at inference level): the parameters are
            then put back by subtracting the perturbation again, within a few ulp.

    Memory: the parameters, the copy of ``exception_safe``, and the momentum buffer if any.
    """

    def __init__(self, params: Iterable, lr: float, eps: float = 1e-3, q: int = 1,
                 dist: str = "gaussian", seed: int = 0, one_sided: bool = False,
                 momentum: float = 0.0, weight_decay: float = 0.0, exception_safe: bool = True):
        defaults = {"lr": check_positive(lr, "lr", allow_zero=True),
                    "weight_decay": check_positive(weight_decay, "weight_decay", allow_zero=True)}
        super().__init__(params, defaults, seed)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.options = {**check_zo_options(eps, q, dist), "one_sided": bool(one_sided),
                        "momentum": float(momentum), "exception_safe": bool(exception_safe)}

    @torch.no_grad()
    def step(self, closure: Callable) -> torch.Tensor:
        if closure is None:
            raise ValueError("ZOSGD.step needs a closure that returns the loss")
        o, step = self.options, self.shared["steps"]
        directions = [zo.Direction(streams.stream_id(streams.ZO_DIRECTIONS, step, j))
                      for j in range(o["q"])]
        restore = self._snapshot() if o["exception_safe"] else None
        plus, minus = zo.two_point_losses(self, closure, directions, o["eps"], o["one_sided"],
                                          restore)
        grads = zo.projected_gradients(plus, minus, o["eps"], o["one_sided"])
        self._update(directions, grads)
        self.shared["steps"] += 1
        return zo.loss_estimate(plus, minus, o["one_sided"])

    def _update(self, directions: list[zo.Direction], grads: list[float]) -> None:
        o, q = self.options, self.options["q"]
        params = self._params()
        offsets = dict(zip(map(id, params), zo.offsets(params)))
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if decay:
                    p.mul_(1 - lr * decay)
                offset = offsets[id(p)]
                if o["momentum"]:
                    buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                    buf.mul_(o["momentum"])
                    for d, g in zip(directions, grads):
                        ops.perturb_(buf, self.seed, d.stream, g / q, o["dist"], offset)
                    p.add_(buf, alpha=-lr)
                else:
                    for d, g in zip(directions, grads):
                        ops.perturb_(p, self.seed, d.stream, -lr * g / q, o["dist"], offset)
