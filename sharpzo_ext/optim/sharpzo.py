"""SharpZO: a sharpness-aware CMA-ES warm-up, then sparse zeroth-order search (NeurIPS 2025)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Iterable, Sequence

import torch

from sharpzo_ext import deprecated
from sharpzo_ext.ops import checks
from sharpzo_ext.optim import cma, flat, sparse, state_checks, streams, two_point
from sharpzo_ext.optim.base import ForwardOnlyOptimizer, group_rates, options_from_groups
from sharpzo_ext.optim.objective import Objective, evaluate_rows

__all__ = ["SharpZO", "SHARPNESS", "Search", "Settings", "Warmup", "sharpness_step",
           "path_sharpness"]

SHARPNESS = ("rge", "cge", "path", "none")


@dataclasses.dataclass(frozen=True)
class Settings:
    """SharpZO's own hyperparameters (validated on construction; see SharpZO)."""
    rho: float = 0.1
    switch_step: int = 100
    sharpness: str = "rge"
    sharpness_queries: int = 4
    auto_switch: bool = False
    stall_generations: int = 20
    stall_tolerance: float = 1e-3

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("rho", checks.real(self.rho, "rho", nonnegative=True))
        set_("switch_step", checks.integer(self.switch_step, "switch_step", 0))
        checks.choice(self.sharpness, "sharpness", SHARPNESS)
        set_("sharpness_queries", checks.integer(self.sharpness_queries, "sharpness_queries", 1))
        set_("auto_switch", bool(self.auto_switch))
        set_("stall_generations", checks.integer(self.stall_generations, "stall_generations", 1))
        set_("stall_tolerance", checks.real(self.stall_tolerance, "stall_tolerance",
                                            nonnegative=True))


@dataclasses.dataclass(frozen=True)
class Warmup:
    """Stage 1's options beyond SharpZO's own keywords (sigma, popsize, rho, switch_step,
    sharpness): the sharpness estimate's queries, the automatic switch, and CMA-ES's (bounds,
    diagonal, decomposition, active, tolfun, tolx, max_condition: CMAES's meaning). Validated
    when SharpZO is built."""
    sharpness_queries: int = 4
    auto_switch: bool = False
    stall_generations: int = 20
    stall_tolerance: float = 1e-3
    bounds: object = None
    diagonal: bool = False
    decomposition: str = "cholesky"
    active: bool = True
    tolfun: float = 1e-11
    tolx: float = 1e-11
    max_condition: float = 1e14


@dataclasses.dataclass(frozen=True)
class Search:
    """Stage 2's options beyond SharpZO's own keywords (lr, eps, density): SparseZO's, with its
    meaning and defaults. Validated when SharpZO is built."""
    k: int | None = None
    q: int = 1
    dist: str = "gaussian"
    mask: str = "score"
    refresh: int = 200
    mask_queries: int = 5
    normalize: bool = True
    one_sided: bool = False
    weight_decay: float = 0.0
    exception_safe: bool = True


_GROUPS = {"warmup": Warmup, "search": Search}
_GROUP_OF = {f.name: group for group, cls in _GROUPS.items() for f in dataclasses.fields(cls)}
_OLD_DICTS = {"cma_options": {f.name for f in dataclasses.fields(cma.Options)} | {"restarts"},
              "sparse_options": ({f.name for f in dataclasses.fields(two_point.Options)}
                                 | {f.name for f in dataclasses.fields(sparse.Options)}
                                 | {"lr", "weight_decay", "density"})}


def _fields(options, group: str) -> dict:
    """The fields of a Warmup or Search (its defaults for None), by name."""
    cls = _GROUPS[group]
    options = cls() if options is None else options
    if not isinstance(options, cls):
        raise TypeError(f"{group} must be a SharpZO.{cls.__name__}, not "
                        f"{type(options).__name__}")
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(cls)}


# Note [SharpZO's old keywords]
# Up to 0.1.x every option of both stages was a keyword of SharpZO (34 parameters), and the
# cma_options / sparse_options dicts overrode them. The stages' options now come as a Warmup and
# a Search; the old keywords and dicts keep working, with a FutureWarning each, until the
# release the deprecation table names, and they override the objects as the dicts did.
def _old_keywords(old: dict) -> dict:
    """The hyperparameters that deprecated keywords set, warning for each."""
    unknown = sorted(set(old) - set(_GROUP_OF) - set(_OLD_DICTS))
    if unknown:
        raise TypeError(f"SharpZO() got an unexpected keyword argument {unknown[0]!r}")
    h = {}
    for name, value in old.items():
        if name in _GROUP_OF:
            group = _GROUP_OF[name]
            deprecated.warn("SharpZO(<name>=...)", stacklevel=3, name=name, group=group,
                            Group=_GROUPS[group].__name__)
            h[name] = value
    for name in _OLD_DICTS:  # after the keywords, which they override
        h.update(_old_dict(old.get(name), name))
    return h


def _old_dict(options: dict | None, argument: str) -> dict:
    """The entries of the old `cma_options` / `sparse_options` dicts."""
    if not options:
        return {}
    unknown = sorted(set(options) - _OLD_DICTS[argument])
    if unknown:
        raise TypeError(f"SharpZO has no {argument} entry {unknown[0]!r}")
    deprecated.warn(f"SharpZO({argument}=...)", stacklevel=4)
    if "restarts" in options:  # accepted by 0.1.0, and ignored there too
        warnings.warn("restarts has no effect in SharpZO: a CMA-ES stop ends stage 1 (with "
                      "auto_switch) instead of restarting it", FutureWarning, stacklevel=4)
    return {k: v for k, v in options.items() if k != "restarts"}


def sharpness_step(objective: Objective, params: Sequence[torch.Tensor], seed: int,
                   generation: int, settings: Settings,
                   zo: two_point.Options) -> tuple[torch.Tensor, int]:
    """(eps* = rho g / ||g|| at the parameters x, as a flat float64 vector; the objective
    evaluations it took), g estimated as settings.sharpness says. The parameters are x again
    on return."""
    n = flat.numel(params)
    device = params[0].device
    if settings.sharpness == "none" or settings.rho == 0:
        return torch.zeros(n, dtype=torch.float64, device=device), 0
    if settings.sharpness == "cge":  # the paper's coordinate-wise estimate: 2d evaluations
        x = flat.gather(params)
        E = zo.eps * torch.eye(n, dtype=torch.float64, device=device)
        losses = evaluate_rows(objective, params, torch.cat([x + E, x - E]))
        flat.scatter_(params, x)  # exact: x holds the parameters' values in float64
        grad = (losses[:n] - losses[n:]).to(device) / (2 * zo.eps)
        evaluations = 2 * n
    else:
        queries = dataclasses.replace(zo, q=settings.sharpness_queries, one_sided=False,
                                      exception_safe=True)
        ids = two_point.stream_ids(streams.SHARPNESS, generation, queries.q)
        grad = two_point.dense_estimate(objective, params, seed, ids, queries, torch.float64)
        evaluations = two_point.cost(queries.q, False)
    norm = float(grad.norm())
    if not math.isfinite(norm):
        raise ValueError("the sharpness gradient estimate is not finite (a NaN or infinite "
                         "loss); the parameters are unchanged")
    return (grad * (settings.rho / norm) if norm > 0 else grad), evaluations


# Note [Sharpness from the evolution path]
# The paper spends extra forward passes on a gradient estimate at the CMA-ES mean only to get
# a direction in which the loss rises. CMA-ES already keeps one: its evolution path p_c, the
# exponentially smoothed sum of its recent mean shifts (in the covariance's metric), points
# downhill, so -p_c points uphill. sharpness="path" scores the candidates at x + eps* with
# eps* = -rho p_c / |p_c|, at no extra forward pass (and none in the first generation, where
# p_c = 0). Measured on the separating embedded tasks (docs/tuning-experiments.md): RGE's
# 2 x sharpness_queries evaluations cost a sixth of the generations at popsize 20 and bought
# no accuracy; the path keeps CMA-ES's pace.
def path_sharpness(cma_state: dict, rho: float) -> torch.Tensor:
    """eps* = -rho p_c / |p_c| from a CMA-ES state (zeros while p_c = 0)."""
    pc = cma_state["pc"]
    norm = float(pc.norm())
    return pc * (-rho / norm) if norm > 0 else torch.zeros_like(pc)


class SharpZO(ForwardOnlyOptimizer):
    """Two stages over the same parameters, driven by one objective.

    Stage 1, for ``switch_step`` generations: CMA-ES whose candidates are scored at the
    worst-case neighbour x + eps*, with the sharpness step eps* = rho * g / ||g|| and g a cheap
    gradient estimate at the CMA-ES mean: "rge" (default: ``sharpness_queries`` two-point
    random-direction queries, 2 * sharpness_queries forward passes), "cge" (the paper's
    coordinate-wise estimate, 2d forward passes), "path" (g = -p_c, CMA-ES's evolution path:
    no forward pass; Note [Sharpness from the evolution path]) or "none" (plain CMA-ES). With a
    Population objective a generation is two batched calls (rge, cge: the sharpness queries,
    then the popsize candidates) or one (path, none). Scoring candidates at a
    sharpness-perturbed point smooths the landscape the evolution strategy sees, which favours
    flat minima.

    Stage 2: sparse zeroth-order search from the CMA-ES mean, exactly SparseZO's steps.

    The switch (Note [When SharpZO switches]) happens after ``switch_step`` generations, or
    earlier with ``warmup.auto_switch`` when CMA-ES stalls: no improvement of the best loss by
    more than ``stall_tolerance`` (relative) over ``stall_generations`` generations, or a CMA-ES
    stopping test. ``stage`` says which stage runs; ``step`` returns the best loss of a stage-1
    generation (at the perturbed points) and the loss estimate of a stage-2 step.

    The keywords are the paper's: lr, eps and density (stage 2), sigma, popsize, rho,
    switch_step and sharpness (stage 1), and seed. The stages' other options come as objects:
    ``warmup=SharpZO.Warmup(...)`` (the sharpness queries, the automatic switch, CMA-ES's
    options) and ``search=SharpZO.Search(...)`` (SparseZO's: k, q, dist, mask, refresh,
    mask_queries, normalize, one_sided, weight_decay, exception_safe). Every one of them but
    ``seed`` is a hyperparameter in the one parameter group (density as the k it gives),
    validated here, at construction. Passing the stages' options as keywords, or as the
    ``cma_options`` / ``sparse_options`` dicts, is deprecated (Note [SharpZO's old keywords]).

    None of the released code's defects (docs/algorithms.md): the radius is rho, not
    rho / sqrt(popsize); the stage-2 estimate is rebuilt every step (no accumulating buffer)
    with the parameter's shape; the mask keeps the largest scores; the population is batched;
    every draw comes from the seed.
    """

    Warmup = Warmup
    Search = Search

    def __init__(self, params: Iterable, lr: float = 1e-3, eps: float = 1e-3,
                 sigma: float = 0.4, popsize: int | None = 40, rho: float = 0.1,
                 switch_step: int = 100, sharpness: str = "rge", density: float = 0.1,
                 seed: int = 0, *, warmup: Warmup | None = None, search: Search | None = None,
                 **old):
        h = {"lr": lr, "eps": eps, "sigma": sigma, "popsize": popsize, "rho": rho,
             "switch_step": switch_step, "sharpness": sharpness, "density": density,
             **_fields(warmup, "warmup"), **_fields(search, "search")}
        h.update(_old_keywords(old))
        zo = two_point.Options(h["eps"], h["q"], h["dist"], h["one_sided"], h["exception_safe"])
        search = cma.Options(h["sigma"], h["popsize"], h["diagonal"], h["decomposition"],
                             h["active"], h["bounds"], h["tolfun"], h["tolx"], h["max_condition"])
        settings = Settings(h["rho"], h["switch_step"], h["sharpness"], h["sharpness_queries"],
                            h["auto_switch"], h["stall_generations"], h["stall_tolerance"])
        super().__init__(params, {"lr": h["lr"], "weight_decay": h["weight_decay"],
                                  **dataclasses.asdict(zo), **dataclasses.asdict(search),
                                  **dataclasses.asdict(settings)}, seed)
        local_search = sparse.Options(sparse.resolve_k(h["density"], h["k"], self._numel()),
                                      h["mask"], h["refresh"], h["mask_queries"], h["normalize"])
        self._add_defaults(dataclasses.asdict(local_search))
        self._check_hyperparameters(self.param_groups)
        params = self._params()
        self.shared.update({"stage": 1, "best_history": [], "sparse_steps": 0,
                            "mask": None, "refreshes": 0,
                            "cma": cma.init(flat.gather(params), search)})
        flat.scatter_(params, cma.feasible(self.mean, search.bounds))
        if settings.switch_step == 0:
            self.shared["stage"] = 2

    one_vector = True

    def _check_hyperparameters(self, param_groups) -> None:
        for cls in (two_point.Options, Settings, sparse.Options):
            options_from_groups(cls, param_groups)
        search = options_from_groups(cma.Options, param_groups)
        cma.bounds_tensors(search.bounds, self._numel(), "cpu")
        group_rates(param_groups)

    state_keys = ("stage", "best_history", "sparse_steps", "cma", *sparse.STATE_KEYS)

    def _check_state(self, shared: dict, state_dict: dict) -> None:
        super()._check_state(shared, state_dict)
        groups = state_dict["param_groups"]
        state_checks.one_of(shared["stage"], "stage", (1, 2))
        state_checks.losses(shared["best_history"], "best_history")
        state_checks.count(shared["sparse_steps"], "sparse_steps")
        cma.check_state(shared["cma"], self._numel(), options_from_groups(cma.Options, groups))
        sparse.check_state(shared, self._numel(), options_from_groups(sparse.Options, groups).k)

    @property
    def stage(self) -> int:
        return self.shared["stage"]

    @property
    def generation(self) -> int:
        """Stage-1 generations so far (CMA-ES's own count: stage 1 never restarts)."""
        return self.shared["cma"]["generation"]

    @property
    def mean(self) -> torch.Tensor:
        """The CMA-ES mean (flat, float64): the parameters during stage 1."""
        return self.shared["cma"]["mean"]

    @property
    def mask(self) -> torch.Tensor | None:
        """Stage 2's current flat bool mask (None before its first step)."""
        return self.shared["mask"]

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:
        """A stage-1 generation or a stage-2 step (see the class docs)."""
        objective = self._objective(closure)
        if self.shared["stage"] == 2:
            return self._stage2_step(objective)
        return self._stage1_step(objective)

    # ---- stage 1 -------------------------------------------------------------------------------

    def _stage1_step(self, objective: Objective) -> torch.Tensor:
        search = options_from_groups(cma.Options, self.param_groups)
        settings = options_from_groups(Settings, self.param_groups)
        zo = options_from_groups(two_point.Options, self.param_groups)
        s, params = self.shared, self._params()
        state = s["cma"]
        with flat.restored_on_error(flat.snapshot(params)):
            if settings.sharpness == "path":
                shift, evaluations = path_sharpness(state, settings.rho), 0
            else:
                shift, evaluations = sharpness_step(objective, params, self.seed,
                                                    state["generation"], settings, zo)
            X = cma.ask(state, self.seed, search)
            losses = evaluate_rows(objective, params, cma.feasible(X + shift, search.bounds))
            cma.tell(state, X, losses, self.seed, search)
        flat.scatter_(params, cma.feasible(state["mean"], search.bounds))
        best = float(cma.ranked(losses).min())
        s["best_history"] = (s["best_history"] + [best])[-(settings.stall_generations + 1):]
        if state["generation"] >= settings.switch_step or self._stalled(settings):
            s["stage"] = 2
        self._commit(evaluations + X.shape[0])
        return torch.tensor(best, dtype=torch.float64)

    # Note [When SharpZO switches]
    # The paper runs CMA-ES for a fixed number of generations (change_point: 100 in the released
    # script, 100-500 in its sweeps); switch_step keeps that rule. CMA-ES is a global, smoothing
    # explorer and converges slowly near a minimum, where a local method is cheaper per unit of
    # progress; auto_switch detects that moment instead of guessing it: it switches when the best
    # loss of a generation has not improved by more than stall_tolerance (relative) over the
    # last stall_generations generations, or when a CMA-ES stopping test fires.
    def _stalled(self, settings: Settings) -> bool:
        history = self.shared["best_history"]
        if not settings.auto_switch:
            return False
        if self.shared["cma"]["stop"] is not None:
            return True
        if len(history) <= settings.stall_generations:
            return False
        old, new = history[0], min(history[1:])
        return new > old - settings.stall_tolerance * max(abs(old), 1e-12)

    # ---- stage 2 -------------------------------------------------------------------------------

    def _stage2_step(self, objective: Objective) -> torch.Tensor:
        done = sparse.step(objective, self._tuned_groups(), self.shared, self.seed,
                           self.shared["sparse_steps"])
        self.shared["sparse_steps"] += 1
        self._commit(done.evaluations)
        return done.loss
