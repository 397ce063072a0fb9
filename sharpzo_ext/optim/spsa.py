"""SPSA as the forward-only prompt tuners ZIP and BlackVIP run it.

Note [SPSA in ZIP and BlackVIP]
Both published codes estimate the gradient at x with q two-sided simultaneous perturbations
(SP_AVG = 5) whose entries are a random sign times a magnitude uniform in [0.5, 1) (bounded away
from 0, because the estimate divides by them, as Spall's SPSA does):

    g = (1/q) sum_j (f(x + c_k D_j) - f(x - c_k D_j)) / (2 c_k) * (1 / D_j)   (elementwise)

with the gain sequences a_k = a / (k + offset)^alpha and c_k = c / k^gamma at step k = 1, 2, ...
(a = c = 0.01, offset = 1, alpha = 0.4, gamma = 0.1 in both). They differ in what they do with g:
- ZIP ("intrinsic-dimensional clipping", rule="clip"): g is scaled down to norm sqrt(d) when
  its norm reaches sqrt(d), d the number of tuned variables, then x <- x - a_k g;
- BlackVIP (SPSA-GC, "gradient correction", rule="gc"): m <- momentum m + g, then
  x <- x - a_k (g + momentum m), a Nesterov-style look-ahead on the estimate (momentum 0.8 in
  ZIP's runs of BlackVIP, which we follow; 0.9 in BlackVIP's own configurations).
Our directions come from the perturbation stream (signs from a Rademacher stream, magnitudes
0.5 + 0.5 Phi(z) from a Gaussian one), so a run is reproducible from its seed.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from sharpzo_ext.ops import checks
from sharpzo_ext.optim import flat, state_checks, streams, two_point
from sharpzo_ext.optim.base import ForwardOnlyOptimizer, common_hyperparameters
from sharpzo_ext.optim.objective import Objective, evaluate_rows

__all__ = ["SPSA", "RULES", "gains", "directions", "corrected_"]

RULES = ("clip", "gc")
_NAMES = ("a", "c", "offset", "alpha", "gamma", "q", "rule", "momentum")


def gains(k: int, a: float, c: float, offset: float, alpha: float,
          gamma: float) -> tuple[float, float]:
    """(a_k, c_k) at step k >= 1 (Note [SPSA in ZIP and BlackVIP])."""
    return a / (k + offset) ** alpha, c / k ** gamma


def directions(n: int, seed: int, step: int, q: int, device) -> torch.Tensor:
    """The q directions of a step, rows of a (q, n) float64 tensor: signs times magnitudes
    uniform in [0.5, 1)."""
    rows = []
    for j in range(q):
        sign = flat.direction(n, seed, streams.stream_id(streams.SPSA_DIRECTIONS, step, 2 * j),
                              "rademacher", device)
        z = flat.direction(n, seed, streams.stream_id(streams.SPSA_DIRECTIONS, step, 2 * j + 1),
                           "gaussian", device)
        rows.append(sign * (0.75 + 0.25 * torch.erf(z / math.sqrt(2))))
    return torch.stack(rows)


def corrected_(g: torch.Tensor, momentum_buffer: torch.Tensor, rule: str,
               momentum: float) -> torch.Tensor:
    """What the step subtracts (times a_k) for the estimate g: g clipped to norm sqrt(d)
    ("clip"), or g + momentum m after m <- momentum m + g ("gc", m updated in place)."""
    if rule == "clip":
        bound = math.sqrt(g.numel())
        norm = float(g.norm())
        return g * (bound / norm) if norm >= bound else g
    momentum_buffer.mul_(momentum).add_(g)
    return g + momentum * momentum_buffer


class SPSA(ForwardOnlyOptimizer):
    """SPSA with ZIP's clipping or BlackVIP's gradient correction (Note [SPSA in ZIP and
    BlackVIP]). ``step(objective)`` costs 2q forward passes and returns the mean of their losses.
    With ``sz.optim.Population(fn)`` the 2q points are the rows of one call; a closure sees
    them written into the parameters one by one.

    Args:
        params: the tuned tensors (one parameter group: one search over all of them).
        a, c, offset, alpha, gamma: the gain sequences a_k = a / (k + offset)^alpha (step size)
            and c_k = c / k^gamma (perturbation size).
        q: perturbations averaged per step (SP_AVG).
        rule: "clip" (ZIP's intrinsic-dimensional clipping) or "gc" (BlackVIP's SPSA-GC).
        momentum: the gradient correction's momentum (rule "gc").
        seed: the perturbation stream's seed.

    State: the counters and, for "gc", the momentum buffer m (float64, d entries).
    """

    one_vector = True
    state_keys = ("momentum",)

    def __init__(self, params: Iterable, a: float = 0.01, c: float = 0.01, offset: float = 1.0,
                 alpha: float = 0.4, gamma: float = 0.1, q: int = 5, rule: str = "clip",
                 momentum: float = 0.8, seed: int = 0):
        defaults = {"a": a, "c": c, "offset": offset, "alpha": alpha, "gamma": gamma, "q": q,
                    "rule": rule, "momentum": momentum}
        super().__init__(params, defaults, seed)
        self._check_hyperparameters(self.param_groups)
        self.shared["momentum"] = torch.zeros(self._numel(), dtype=torch.float64,
                                              device=self._params()[0].device)

    def _options(self, param_groups=None) -> dict:
        """The hyperparameters, validated."""
        o = common_hyperparameters(param_groups or self.param_groups, _NAMES)
        for name in ("a", "c"):
            o[name] = checks.real(o[name], name, positive=True)
        for name in ("offset", "alpha", "gamma"):
            o[name] = checks.real(o[name], name, nonnegative=True)
        o["momentum"] = checks.real(o["momentum"], "momentum", nonnegative=True, below=1)
        o["q"] = checks.integer(o["q"], "q", 1)
        checks.choice(o["rule"], "rule", RULES)
        return o

    def _check_hyperparameters(self, param_groups) -> None:
        self._options(param_groups)

    def _check_state(self, shared: dict, state_dict: dict) -> None:
        super()._check_state(shared, state_dict)
        state_checks.tensor(shared["momentum"], "momentum", (self._numel(),), torch.float64)

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:
        """One SPSA step (see the class docs); returns the mean loss of its 2q evaluations."""
        objective = self._objective(closure)
        o, params = self._options(), self._params()
        k = self.shared["steps"] + 1
        a_k, c_k = gains(k, o["a"], o["c"], o["offset"], o["alpha"], o["gamma"])
        x = flat.gather(params)
        D = directions(x.numel(), self.seed, self.shared["steps"], o["q"], x.device)
        with flat.restored_on_error(flat.snapshot(params)):
            values = evaluate_rows(objective, params, torch.cat([x + c_k * D, x - c_k * D]))
            flat.scatter_(params, x)
        plus, minus = values[:o["q"]].tolist(), values[o["q"]:].tolist()
        projected = two_point.projected_gradients(plus, minus, two_point.Options(eps=c_k))
        g = (torch.tensor(projected, dtype=torch.float64, device=x.device)[:, None] / D).mean(0)
        buffer = self.shared["momentum"]  # "gc" updates a copy, kept only if the step succeeds
        buffer = buffer.clone() if o["rule"] == "gc" else buffer
        x -= a_k * corrected_(g, buffer, o["rule"], o["momentum"])
        if not flat.fits(params, x):  # x is a copy: the parameters are as they were
            raise ValueError(f"a ({o['a']:g}) times the gradient estimate moves the parameters "
                             "beyond what their dtype holds: the step would write inf; the "
                             "parameters are unchanged (lower a)")
        flat.scatter_(params, x)
        self.shared["momentum"] = buffer
        self._commit(2 * o["q"])
        return torch.tensor(sum(plus + minus) / (2 * o["q"]), dtype=torch.float64)
