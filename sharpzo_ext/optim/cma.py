"""CMA-ES (pycma's CSA variant) as functions over a state dict and a flat float64 mean: the core
of CMAES and of SharpZO's stage 1.

    state = cma.init(x0, options)             # a dict of tensors and numbers (state_dict-able)
    X = cma.ask(state, seed, options)         # (popsize, d), the same until tell
    cma.tell(state, X, losses, seed, options) # mean, step size, paths, covariance

Every population is drawn from the perturbation stream under `seed` (stream per restart and
generation), so a run is a pure function of the seed, and the state holds everything needed
to resume it bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

import sharpzo_ext.ops as ops
from sharpzo_ext.ops import checks
from sharpzo_ext.optim import cma_factors, state_checks, streams
from sharpzo_ext.optim.cma_constants import CMAConstants

__all__ = ["Options", "constants", "bounds_tensors", "feasible", "ranked", "init", "ask", "tell",
           "restart_due", "restart_", "STATE_KEYS", "check_state"]


@dataclasses.dataclass(frozen=True)
class Options:
    """CMA-ES settings (validated on construction; see CMAES for their meaning). sigma and
    popsize are the starting step size and population (at the start and at each restart; the
    running ones are in the state). diagonal is fixed for a run: the state's covariance is a
    vector or a matrix."""
    sigma: float
    popsize: int | None = None
    diagonal: bool = False
    decomposition: str = "cholesky"
    active: bool = True
    bounds: object = None
    tolfun: float = 1e-11
    tolx: float = 1e-11
    max_condition: float = 1e14

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        set_("sigma", checks.real(self.sigma, "sigma", positive=True))
        if self.popsize is not None:
            set_("popsize", checks.integer(self.popsize, "popsize", 2))
        set_("diagonal", bool(self.diagonal))
        checks.choice(self.decomposition, "decomposition", ("cholesky", "eigh"))
        set_("active", bool(self.active))
        set_("tolfun", checks.real(self.tolfun, "tolfun", nonnegative=True))
        set_("tolx", checks.real(self.tolx, "tolx", nonnegative=True))
        set_("max_condition", checks.real(self.max_condition, "max_condition", positive=True))

    @property
    def kind(self) -> str:
        """The covariance model: "diagonal", "cholesky" or "eigh" (cma_factors.KINDS)."""
        return "diagonal" if self.diagonal else self.decomposition


@functools.lru_cache(maxsize=64)
def constants(n: int, popsize: int, active: bool, diagonal: bool) -> CMAConstants:
    return CMAConstants.pycma(n, popsize, active, diagonal)


def _constants(state: dict, options: Options) -> CMAConstants:
    return constants(state["mean"].numel(), state["popsize"], options.active, options.diagonal)


# Note [Bounds by reflection]
# With bounds, CMA-ES still samples and adapts in the unbounded space; a candidate x is
# evaluated at its mirror image in the box (reflection at the faces, periodic with period
# 2 (upper - lower)). The loss seen by CMA-ES, f(reflect(x)), is continuous and has no flat
# regions (clipping would create them and stall the step size), no penalty weight needs
# tuning, and every point the objective sees, and the parameters between steps, are in the box.
def bounds_tensors(bounds, n: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`bounds`, None or a pair (lower, upper) of scalars or (n,) tensors, as two float64
    tensors of shape (n,); refused unless finite with lower < upper everywhere."""
    if bounds is None:
        return None
    try:
        lower, upper = bounds
    except (TypeError, ValueError):
        raise ValueError("bounds must be a pair (lower, upper)") from None
    try:
        lower = torch.as_tensor(lower, dtype=torch.float64, device=device).expand(n).clone()
        upper = torch.as_tensor(upper, dtype=torch.float64, device=device).expand(n).clone()
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"bounds must be scalars or tensors of shape ({n},)") from None
    if not bool((lower.isfinite() & upper.isfinite() & (lower < upper)).all()):
        raise ValueError("bounds must be finite with lower < upper everywhere")
    return lower, upper


def feasible(X: torch.Tensor, bounds) -> torch.Tensor:
    """X (rows, or one vector) mapped into `bounds` (Options.bounds: None or a pair, Note
    [Bounds by reflection]); X itself without bounds."""
    if bounds is None:
        return X
    lower, upper = bounds_tensors(bounds, X.shape[-1], X.device)
    width = upper - lower
    u = torch.remainder(X - lower, 2 * width)
    return lower + torch.where(u <= width, u, 2 * width - u)


# ---- state -------------------------------------------------------------------------------------

def ranked(losses: torch.Tensor) -> torch.Tensor:
    """Losses as CMA-ES ranks them: NaN (a failed evaluation) as +inf."""
    return torch.where(losses.isnan(), math.inf, losses)


def init(x0: torch.Tensor, options: Options) -> dict:
    """A fresh state around the flat float64 mean x0."""
    state = {"x0": x0.clone(), "restart": 0, "best_loss": math.inf,
             "best_x": feasible(x0, options.bounds).clone()}
    _start(state, x0, options.popsize, options)
    return state


STATE_KEYS = ("x0", "restart", "best_loss", "best_x", "mean", "sigma", "popsize", "C", "pc", "ps",
              "generation", "decomposed_at", "history", "stop", "factor")
STOP_REASONS = (None, "tolfun", "tolx", "condition")
_FACTOR_KEYS = {"diagonal": ("std",), "cholesky": ("L",), "eigh": ("B", "D")}


def check_state(state, n: int, options: Options, name: str = "cma") -> None:
    """Raises state_checks.InvalidState unless `state` is a state of this module (init's
    layout) over n coordinates with the covariance model of `options`."""
    check = state_checks
    check.keys(state, name, STATE_KEYS)
    for key in ("x0", "best_x", "mean", "pc", "ps"):
        check.tensor(state[key], f"{name}.{key}", (n,), torch.float64)
    check.tensor(state["C"], f"{name}.C", (n,) if options.diagonal else (n, n), torch.float64)
    factor = check.keys(state["factor"], f"{name}.factor", _FACTOR_KEYS[options.kind])
    for key, value in factor.items():
        shape = (n, n) if key in ("L", "B") else (n,)
        check.tensor(value, f"{name}.factor.{key}", shape, torch.float64)
    for key in ("restart", "generation", "decomposed_at"):
        check.count(state[key], f"{name}.{key}")
    check.count(state["popsize"], f"{name}.popsize", 2)
    check.number(state["sigma"], f"{name}.sigma", positive=True)
    check.number(state["best_loss"], f"{name}.best_loss")
    check.losses(state["history"], f"{name}.history")
    check.one_of(state["stop"], f"{name}.stop", STOP_REASONS)


def _start(state: dict, mean: torch.Tensor, popsize: int | None, options: Options) -> None:
    """(Re)initializes the distribution around `mean`."""
    n = mean.numel()
    k = constants(n, popsize, options.active, options.diagonal)  # popsize None: pycma's default
    ones = torch.ones(n, dtype=torch.float64, device=mean.device)
    state.update({
        "mean": mean.clone(), "sigma": options.sigma, "popsize": k.popsize,
        "C": ones.clone() if options.diagonal else torch.diag(ones),
        "pc": torch.zeros_like(ones), "ps": torch.zeros_like(ones), "generation": 0,
        "decomposed_at": 0, "history": [], "stop": None,
    })
    _decompose(state, options)


def restart_due(state: dict, restarts: int) -> bool:
    """Whether the last generation met a stopping test and one of `restarts` remains."""
    return state["stop"] is not None and state["restart"] < restarts


def restart_(state: dict, options: Options) -> None:
    """IPOP: start again from x0 and the initial sigma with twice the population."""
    state["restart"] += 1
    _start(state, state["x0"], 2 * state["popsize"], options)


def _decompose(state: dict, options: Options) -> None:
    state["factor"], repaired = cma_factors.decompose(options.kind, state["C"])
    if repaired is not None:
        state["C"] = repaired
    state["decomposed_at"] = state["generation"]


def _standard_normal(state: dict, seed: int, extra: int = 0) -> torch.Tensor:
    """The generation's standard normal samples Z, (popsize, d), and `extra` more values."""
    n, popsize = state["mean"].numel(), state["popsize"]
    stream = streams.stream_id(streams.CMA_SAMPLES, state["restart"], state["generation"])
    values = ops.sample(popsize * n + extra, seed, stream, dtype=torch.float64,
                        device=state["mean"].device)
    return values if extra else values.view(popsize, n)


# ---- a generation ------------------------------------------------------------------------------

def _check_model(state: dict, options: Options) -> None:
    if (state["C"].dim() == 1) != options.diagonal:
        raise ValueError(f"diagonal is fixed for a run (its covariance is "
                         f"{'diagonal' if state['C'].dim() == 1 else 'full'}), got "
                         f"diagonal={options.diagonal}")


def _decomposition_due(state: dict, options: Options) -> bool:
    return state["generation"] - state["decomposed_at"] >= _constants(state, options).lazy_gap


# Note [ask changes nothing]
# C is decomposed every lazy_gap generations (pycma's lazy update). tell() does it, after its
# update, for the generation that follows, so ask() only reads the state: a step whose
# evaluation fails leaves the state exactly as it was. States saved before tell() did this
# (sharpzo_ext 0.1.0) can hold a decomposition that is due; ask() then decomposes into a
# temporary and tell() stores the same decomposition, so results are unchanged.
def ask(state: dict, seed: int, options: Options) -> torch.Tensor:
    """The population of the current generation: (popsize, d), float64, in the unbounded space
    (evaluate ``feasible(X, options.bounds)``). The same until ``tell``; changes nothing (Note
    [ask changes nothing])."""
    _check_model(state, options)
    factor = state["factor"]
    if _decomposition_due(state, options):
        factor, _ = cma_factors.decompose(options.kind, state["C"])
    return state["mean"] + state["sigma"] * cma_factors.sample(factor,
                                                               _standard_normal(state, seed))


def _checked_losses(state: dict, X: torch.Tensor, losses) -> tuple[torch.Tensor, torch.Tensor]:
    n, popsize = state["mean"].numel(), state["popsize"]
    X = torch.as_tensor(X, dtype=torch.float64, device=state["mean"].device)
    losses = torch.as_tensor(losses, dtype=torch.float64).flatten().cpu()
    if X.shape != (popsize, n):
        raise ValueError(f"X must have shape ({popsize}, {n}), got {tuple(X.shape)}")
    if losses.numel() != popsize:
        raise ValueError(f"losses must hold {popsize} values, got {losses.numel()}")
    if bool((losses == -math.inf).any()):
        raise ValueError("losses must not be -inf")
    order = ranked(losses)
    if not bool(order.isfinite().any()):
        raise ValueError("every loss of the population is NaN or infinite")
    return X, order


@torch.no_grad()
def tell(state: dict, X: torch.Tensor, losses, seed: int, options: Options) -> None:
    """Updates the distribution from the population X (as returned by ``ask``, in the
    unbounded space) and its losses. NaN and +inf rank last; -inf, or no finite loss at all, is
    a ValueError that leaves the state unchanged."""
    _check_model(state, options)
    X, ranks = _checked_losses(state, X, losses)
    if _decomposition_due(state, options):  # a state saved before tell() decomposed
        _decompose(state, options)
    s, k, n = state, _constants(state, options), state["mean"].numel()
    order = torch.sort(ranks, stable=True).indices
    _record(s, X, ranks, order, options)
    on_device = order.to(X.device)
    Y = (X[on_device] - s["mean"]) / s["sigma"]
    white = _whitened(s, Y, on_device, seed)
    w = k.weights_tensor(Y.device)
    y_w = w[:k.mu] @ Y[:k.mu]
    s["mean"] = s["mean"] + s["sigma"] * y_w
    ps = (1 - k.cs) * s["ps"] + math.sqrt(k.cs * (2 - k.cs) * k.mueff) * (w[:k.mu] @ white[:k.mu])
    t = s["generation"] + 1
    hsig = float(ps @ ps) / (1 - (1 - k.cs) ** (2 * t)) / n - 1 < 1 + 4 / (n + 1)
    pc = (1 - k.cc) * s["pc"] + hsig * math.sqrt(k.cc * (2 - k.cc) * k.mueff) * y_w
    if options.active and k.mu < s["popsize"]:  # w_i n / ||C^-1/2 y_i||^2, i > mu
        w = w.clone()
        w[k.mu:] *= n / ((white[k.mu:] * white[k.mu:]).sum(dim=1).sqrt() + 1e-9) ** 2
    decay = 1 + k.c1 * (1 - hsig) * k.cc * (2 - k.cc) - k.c1 - k.cmu * sum(k.weights)
    if options.diagonal:
        s["C"] = decay * s["C"] + k.c1 * pc * pc + k.cmu * (w @ (Y * Y))
    else:
        ops.cma_cov_update_(s["C"], pc, Y, w, k.c1, k.cmu, decay)
    log_change = (k.cs / k.damps) * (float(ps.norm()) / k.chi_n - 1)
    s["sigma"] *= math.exp(min(1.0, max(-1.0, log_change)))
    s.update(ps=ps, pc=pc, generation=t)
    if options.diagonal:
        _decompose(s, options)  # O(d): every generation
    s["stop"] = _stop_test(s, ranks, options)
    if _decomposition_due(s, options):  # for the next generation (Note [ask changes nothing])
        _decompose(s, options)


# Note [Whitening without solves]
# CMA-ES needs A^-1 y_i (A the factor of C) for the path ps and the active weights. For the
# population that ask() drew, y_i = A z_i, so A^-1 y_i is z_i itself (for eigh, B z_i), which
# the seed regenerates for the cost of sampling; pycma does the same with its stored samples.
# tell() confirms that X is that population with one random projection, (Y - Z A^T) r = 0 for a
# fixed random r (one matrix-vector product instead of lambda triangular solves), and whitens
# explicitly when it is not (solutions injected or modified by the caller).
def _whitened(state: dict, Y: torch.Tensor, order: torch.Tensor, seed: int) -> torch.Tensor:
    n = state["mean"].numel()
    values = _standard_normal(state, seed, extra=n)
    Z, r = values[:-n].view(state["popsize"], n)[order], values[-n:]
    factor = state["factor"]
    mismatch = Y @ r - Z @ cma_factors.transpose_apply(factor, r)
    if float(mismatch.abs().max()) <= 1e-9 * float(Y.norm() * r.norm()):
        return cma_factors.whiten_samples(factor, Z)
    return cma_factors.whiten(factor, Y)


def _horizon(state: dict) -> int:
    """Generations of best losses that tolfun looks back over (pycma's)."""
    return 10 + math.ceil(30 * state["mean"].numel() / state["popsize"])


def _record(state: dict, X: torch.Tensor, ranks: torch.Tensor, order: torch.Tensor,
            options: Options) -> None:
    best = float(ranks[order[0]])
    if best < state["best_loss"]:
        state["best_loss"] = best
        state["best_x"] = feasible(X[int(order[0])], options.bounds).clone()
    state["history"] = (state["history"] + [best])[-_horizon(state):]


def _stop_test(state: dict, ranks: torch.Tensor, options: Options) -> str | None:
    finite = ranks[ranks.isfinite()]
    if len(state["history"]) >= _horizon(state) and finite.numel() > 0:
        values = state["history"] + finite.tolist()
        if max(values) - min(values) < options.tolfun:
            return "tolfun"
    spread = state["C"] if options.diagonal else state["C"].diagonal()
    if bool((state["sigma"] * torch.maximum(state["pc"].abs(), spread.sqrt())
             < options.tolx).all()):
        return "tolx"
    if cma_factors.condition(state["factor"]) > options.max_condition:
        return "condition"
    return None
