"""Two-point (SPSA) zeroth-order estimates over the flat parameter vector: the core of ZOSGD,
SparseZO, SparseZO's mask scores and SharpZO's sharpness step.

A direction is a stream of the perturbation stream under the optimizer's seed (flat.py): z_j
has stream id ``stream_ids[j]``, optionally restricted to a flat mask. Directions are
regenerated, never stored (MeZO's seed trick). For each direction the objective is evaluated at
x + eps z_j and x - eps z_j (one-sided: at x + eps z_j and once at x), giving the projected
gradient g_j = (f(x + eps z_j) - f(x - eps z_j)) / (2 eps); the estimate of the gradient is
(1/q) sum_j g_j z_j.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch

import sharpzo_ext.ops as ops
from sharpzo_ext.ops import checks
from sharpzo_ext.optim import flat, streams
from sharpzo_ext.optim.objective import Objective, Population, closure_loss

__all__ = ["Options", "stream_ids", "cost", "losses", "projected_gradients", "loss_estimate",
           "accumulate_", "dense_estimate"]


@dataclasses.dataclass(frozen=True)
class Options:
    """How a step queries the objective (validated on construction).

    eps: perturbation size. q: directions per step. dist: "gaussian" or "rademacher".
    one_sided: (f(x + eps z) - f(x)) / eps, q + 1 evaluations instead of 2q.
    exception_safe: a copy of the (perturbed) parameters restores them bitwise after each
        direction and if the objective raises; without it they are put back by subtracting the
        perturbation again (within a few ulp) and nothing parameter-sized is allocated.
    """
    eps: float = 1e-3
    q: int = 1
    dist: str = "gaussian"
    one_sided: bool = False
    exception_safe: bool = True

    def __post_init__(self):
        object.__setattr__(self, "eps", checks.real(self.eps, "eps", positive=True))
        object.__setattr__(self, "q", checks.integer(self.q, "q", 1))
        checks.choice(self.dist, "dist", ops.DISTRIBUTIONS)
        object.__setattr__(self, "one_sided", bool(self.one_sided))
        object.__setattr__(self, "exception_safe", bool(self.exception_safe))


def stream_ids(purpose: int, counter: int, q: int) -> list[int]:
    """The streams of the q directions of step (or refresh, or generation) `counter`."""
    return [streams.stream_id(purpose, counter, j) for j in range(q)]


def cost(q: int, one_sided: bool) -> int:
    """Objective evaluations of one two-point estimate."""
    return q + 1 if one_sided else 2 * q


def losses(objective: Objective, params: Sequence[torch.Tensor], seed: int,
           ids: Sequence[int], options: Options,
           mask: torch.Tensor | None = None) -> tuple[list[float], list[float]]:
    """(losses at x + eps z_j, losses at x - eps z_j), j over `ids`; one-sided, the second list
    holds f(x) for every j. The parameters are as before on return and if the objective raises
    (bitwise with options.exception_safe)."""
    eps, dist, m = options.eps, options.dist, len(ids)
    if isinstance(objective, Population):
        x = flat.gather(params)
        Z = torch.stack([flat.direction(x.numel(), seed, s, dist, x.device, mask) for s in ids])
        values = objective(torch.cat([x + eps * Z, x[None] if options.one_sided else x - eps * Z]))
        plus = values[:m].tolist()
        return plus, [float(values[m])] * m if options.one_sided else values[m:].tolist()
    restore = flat.snapshot(params, mask) if options.exception_safe else None
    applied: list[tuple[int, float]] = []  # (stream, scale) currently added to the parameters

    def put_back() -> None:
        if restore is not None:
            restore()
        else:
            for stream, scale in reversed(applied):
                flat.perturb_(params, seed, stream, -scale, dist, mask)
        applied.clear()

    plus, minus = [], []
    try:
        center = closure_loss(objective) if options.one_sided else None
        for stream in ids:
            flat.perturb_(params, seed, stream, eps, dist, mask)
            applied.append((stream, eps))
            plus.append(closure_loss(objective))
            if options.one_sided:
                minus.append(center)
            else:
                flat.perturb_(params, seed, stream, -2 * eps, dist, mask)
                applied[-1] = (stream, -eps)
                minus.append(closure_loss(objective))
            put_back()
    except BaseException:
        put_back()
        raise
    return plus, minus


def projected_gradients(plus: Sequence[float], minus: Sequence[float],
                        options: Options) -> list[float]:
    """g_j = (f(x + eps z_j) - f(x - eps z_j)) / (2 eps), or (f(x + eps z_j) - f(x)) / eps.
    A non-finite loss is an error (before any update), since it would turn the update into NaN."""
    bad = [v for v in (*plus, *minus) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"the objective returned a non-finite loss at a perturbed point "
                         f"({bad[0]}); the parameters are unchanged")
    step = options.eps if options.one_sided else 2 * options.eps
    return [(a - b) / step for a, b in zip(plus, minus)]


def loss_estimate(plus: Sequence[float], minus: Sequence[float], one_sided: bool) -> torch.Tensor:
    """f(x): exact for one-sided estimates, else the mean of the pairs (f(x) + O(eps^2))."""
    value = minus[0] if one_sided else sum(plus + minus) / (2 * len(plus))
    return torch.tensor(value, dtype=torch.float64)


# The largest |z_j| element of a direction: Box-Muller from uniforms no smaller than 2^-24 gives
# at most sqrt(-2 ln 2^-24) (docs/stream.md); Rademacher elements are +-1.
Z_MAX = {"gaussian": math.sqrt(-2 * math.log(2.0 ** -24)), "rademacher": 1.0}


def check_step(params: Sequence[torch.Tensor], lrs: Sequence[float],
               coefficients: Sequence[float], dist: str, momenta: Sequence[float]) -> None:
    """ValueError, before anything changes, if lr times the estimate sum_j coefficients[j] z_j
    (lr / (1 - momentum) with momentum, which bounds lr times the buffer) could move a
    parameter by more than its dtype holds: the step would write inf. ZOSGD's update happens in
    place (MeZO's memory), so it is bounded beforehand, not checked after."""
    bound = sum(abs(c) for c in coefficients) * Z_MAX[dist]
    for p, lr, momentum in zip(params, lrs, momenta):
        step = lr / (1 - momentum) * bound
        if not math.isfinite(step) or step > torch.finfo(p.dtype).max:
            raise ValueError(f"lr ({lr:g}) times the gradient estimate (up to {bound:.3g} per "
                             f"coordinate) is beyond what {p.dtype} holds: the step would "
                             "write inf; the parameters are unchanged (lower lr)")


@torch.no_grad()
def accumulate_(out: torch.Tensor, seed: int, ids: Sequence[int], coefficients: Sequence[float],
                dist: str, offset: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """out += sum_j coefficients[j] z_j, in place, for the part of x that `out` holds (from flat
    index `offset`; only where `mask`, a bool tensor of out's shape, is True)."""
    for stream, c in zip(ids, coefficients):
        ops.perturb_(out, seed, stream, c, dist, offset, mask)
    return out


def dense_estimate(objective: Objective, params: Sequence[torch.Tensor], seed: int,
                   ids: Sequence[int], options: Options,
                   dtype: torch.dtype) -> torch.Tensor:
    """The gradient estimate (1/q) sum_j g_j z_j over all of x, q = len(ids), as a flat tensor
    of `dtype`."""
    plus, minus = losses(objective, params, seed, ids, options)
    grads = projected_gradients(plus, minus, options)
    out = torch.zeros(flat.numel(params), dtype=dtype, device=params[0].device)
    return accumulate_(out, seed, ids, [g / len(ids) for g in grads], options.dist)
