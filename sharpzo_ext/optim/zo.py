"""Two-point (SPSA) evaluations shared by the zeroth-order optimizers.

A direction is a stream of the perturbation stream: z_j = stream (seed, s_j), element i of the
flat parameter vector taking stream index i (each parameter tensor starts at the offset of its
first element in that vector), optionally restricted to a mask. Directions are regenerated,
never stored (MeZO's seed trick).

Two ways to evaluate, chosen by the closure (see takes_population):
- in place: the parameters are perturbed with perturb_ (fused, no allocation), the closure is
  called with no argument, and the parameters are put back;
- population: the closure gets the perturbed flat vectors as rows of one matrix (one batched
  forward for all 2q points), for models whose trainable vector is small (prompt tuning).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import torch

import sharpzo_ext.ops as ops
from sharpzo_ext.optim.base import ForwardOnlyOptimizer, loss_value, takes_population


@dataclasses.dataclass
class Direction:
    stream: int
    masks: Sequence[torch.Tensor] | None = None  # one bool mask per parameter, or None (dense)


def offsets(params: Sequence[torch.Tensor]) -> list[int]:
    out, total = [], 0
    for p in params:
        out.append(total)
        total += p.numel()
    return out


@torch.no_grad()
def perturb_params(opt: ForwardOnlyOptimizer, direction: Direction, scale: float) -> None:
    """params += scale * z(direction), in place."""
    params = opt._params()
    for i, (p, offset) in enumerate(zip(params, offsets(params))):
        mask = None if direction.masks is None else direction.masks[i]
        ops.perturb_(p, opt.seed, direction.stream, scale, opt.options["dist"], offset, mask)


def flat_direction(opt: ForwardOnlyOptimizer, direction: Direction) -> torch.Tensor:
    """z(direction) as a flat float64 vector (population form and estimates)."""
    params = opt._params()
    n = sum(p.numel() for p in params)
    z = ops.sample(n, opt.seed, direction.stream, opt.options["dist"], dtype=torch.float64,
                   device=params[0].device)
    if direction.masks is not None:
        z = z * torch.cat([m.reshape(-1) for m in direction.masks]).to(z.dtype)
    return z


def two_point_losses(opt: ForwardOnlyOptimizer, closure: Callable,
                     directions: Sequence[Direction], eps: float, one_sided: bool,
                     restore: Callable[[], None] | None) -> tuple[list[float], list[float]]:
    """Losses at x + eps z_j and at x - eps z_j (one-sided: at x, the same value for every j).

    In place, the parameters are put back after each direction, and if the closure raises:
    bitwise with `restore` (a snapshot, see ForwardOnlyOptimizer._snapshot), else by
    subtracting the perturbation again (within a few ulp, and no copy of the parameters).
    """
    m = len(directions)
    if takes_population(closure):
        x = opt._flat()
        Z = torch.stack([flat_direction(opt, d) for d in directions])
        X = torch.cat([x + eps * Z, x[None] if one_sided else x - eps * Z])
        losses = opt._evaluate(closure, X)
        plus = losses[:m].tolist()
        return plus, [float(losses[m])] * m if one_sided else losses[m:].tolist()

    applied: list[tuple[Direction, float]] = []  # what is currently added to the parameters

    def put_back() -> None:
        if restore is not None:
            restore()
        else:
            for direction, scale in reversed(applied):
                perturb_params(opt, direction, -scale)
        applied.clear()

    def evaluate() -> float:
        loss = loss_value(closure())
        opt._count(1)
        return loss

    plus, minus = [], []
    try:
        center = evaluate() if one_sided else None
        for d in directions:
            perturb_params(opt, d, eps)
            applied.append((d, eps))
            plus.append(evaluate())
            if one_sided:
                minus.append(center)
            else:
                perturb_params(opt, d, -2 * eps)
                applied[-1] = (d, -eps)
                minus.append(evaluate())
            put_back()
    except BaseException:
        put_back()
        raise
    return plus, minus


def projected_gradients(plus: Sequence[float], minus: Sequence[float], eps: float,
                        one_sided: bool) -> list[float]:
    """Directional derivative estimates (f(x + eps z) - f(x - eps z)) / (2 eps), or one-sided
    (f(x + eps z) - f(x)) / eps. A non-finite loss is an error (before any update: the
    parameters are as they were), since it would turn the update into NaN."""
    if not all(math.isfinite(v) for v in (*plus, *minus)):
        raise ValueError("the closure returned a non-finite loss at a perturbed point "
                         f"({[v for v in (*plus, *minus) if not math.isfinite(v)][0]}); the "
                         "parameters are unchanged")
    return [(a - b) / (eps if one_sided else 2 * eps) for a, b in zip(plus, minus)]


def loss_estimate(plus: Sequence[float], minus: Sequence[float], one_sided: bool) -> torch.Tensor:
    """f(x): exact for one-sided estimates, else the mean of the pairs (f(x) + O(eps^2))."""
    value = minus[0] if one_sided else sum(plus + minus) / (2 * len(plus))
    return torch.tensor(value, dtype=torch.float64)
