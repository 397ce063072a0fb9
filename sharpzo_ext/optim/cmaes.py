"""CMA-ES as a torch.optim optimizer, with ask/tell, on float64 torch tensors (CPU or CUDA)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Iterable

import torch

from sharpzo_ext.ops import checks
from sharpzo_ext.optim import cma, flat
from sharpzo_ext.optim.base import ForwardOnlyOptimizer, options_from_groups
from sharpzo_ext.optim.objective import Objective, evaluate_rows

__all__ = ["CMAES"]


class CMAES(ForwardOnlyOptimizer):
    """Covariance matrix adaptation evolution strategy (pycma's CSA variant), forward-only.

    The parameters hold the mean of the search distribution; ``step(closure)`` samples a
    population, evaluates every candidate and updates mean, step size and covariance.
    ``closure()`` takes no argument: each candidate is written into the parameters in turn,
    under ``torch.no_grad()``. ``step(sz.optim.Population(fn))`` evaluates the whole population
    as the rows of one ``(popsize, d)`` matrix in one call instead (one batched forward).
    ``step`` returns the best loss of the generation. ``ask()`` / ``tell(X, losses)`` expose the
    same generation without the parameters.

    Args:
        params: the parameters (one group; d = their total number of elements).
        sigma: initial step size (> 0).
        popsize: lambda, default pycma's 4 + floor(3 ln d).
        seed: every population is drawn from the perturbation stream of this seed (stream per
            restart and generation), so runs reproduce and instances never interfere.
        diagonal: separable CMA-ES: diagonal covariance, O(d) memory and time (large d).
        bounds: ``(lower, upper)`` scalars or tensors of shape (d,). Note [Bounds by
            reflection] in cma.py.
        decomposition: "cholesky" (default) or "eigh" (pycma's): Note [Cholesky factor by
            default] in cma_factors.py. Ignored when diagonal.
        active: negative weights for the worst half (active CMA-ES, pycma's default).
        tolfun, tolx, max_condition: stopping tests (pycma's defaults), see ``stop_reason``.
        restarts: IPOP restarts after a stop: each doubles popsize and starts again from the
            initial mean and sigma.

    Every argument but ``seed`` is a hyperparameter in ``param_groups``; sigma and popsize are
    the starting values (``sigma`` and ``popsize`` are the running ones), diagonal is fixed for a
    run. Losses: NaN and +inf rank last (a failed evaluation); -inf is an error. If a step fails
    (the closure raises, or no loss is finite), the parameters are bitwise as before and the run
    goes on as if the step had not been tried. ``state_dict()`` holds everything, so
    ``load_state_dict`` resumes bit for bit.
    """

    one_vector = True

    def __init__(self, params: Iterable, sigma: float, popsize: int | None = None, seed: int = 0,
                 diagonal: bool = False, bounds=None, decomposition: str = "cholesky",
                 active: bool = True, tolfun: float = 1e-11, tolx: float = 1e-11,
                 max_condition: float = 1e14, restarts: int = 0):
        options = cma.Options(sigma, popsize, diagonal, decomposition, active, bounds, tolfun,
                              tolx, max_condition)
        super().__init__(params, {**dataclasses.asdict(options), "restarts": restarts}, seed)
        self._check_hyperparameters(self.param_groups)
        params = self._params()
        self.shared["cma"] = cma.init(flat.gather(params), options)
        flat.scatter_(params, cma.feasible(self.mean, options.bounds))

    def _check_hyperparameters(self, param_groups) -> None:
        options = options_from_groups(cma.Options, param_groups)
        cma.bounds_tensors(options.bounds, self._numel(), "cpu")
        checks.integer(param_groups[0]["restarts"], "restarts", 0)

    state_keys = ("cma",)

    def _check_state(self, shared: dict, state_dict: dict) -> None:
        super()._check_state(shared, state_dict)
        options = options_from_groups(cma.Options, state_dict["param_groups"])
        cma.check_state(shared["cma"], self._numel(), options)

    def _options(self) -> cma.Options:
        return options_from_groups(cma.Options, self.param_groups)

    # ---- the search distribution ---------------------------------------------------------------

    @property
    def mean(self) -> torch.Tensor:
        """The mean of the search distribution (flat, float64, unbounded space)."""
        return self.shared["cma"]["mean"]

    @property
    def sigma(self) -> float:
        return self.shared["cma"]["sigma"]

    @property
    def popsize(self) -> int:
        return self.shared["cma"]["popsize"]

    @property
    def generation(self) -> int:
        return self.shared["cma"]["generation"]

    @property
    def stop_reason(self) -> str | None:
        """None, or which stopping test the last generation met: "tolfun", "tolx",
        "condition" (after the last allowed restart; earlier ones trigger the restart)."""
        return self.shared["cma"]["stop"]

    @property
    def best(self) -> tuple[torch.Tensor, float]:
        """(best candidate evaluated so far, in the box, float64; its loss)."""
        return self.shared["cma"]["best_x"], self.shared["cma"]["best_loss"]

    # ---- ask / tell / step ---------------------------------------------------------------------

    def ask(self) -> torch.Tensor:
        """The population of the current generation: (popsize, d), float64, unbounded space
        (evaluate ``feasible(X)`` when bounds are set). The same until ``tell``."""
        return cma.ask(self.shared["cma"], self.seed, self._options())

    def feasible(self, X: torch.Tensor) -> torch.Tensor:
        """X mapped into the bounds (Note [Bounds by reflection]); X itself without bounds."""
        return cma.feasible(X, self._options().bounds)

    def tell(self, X: torch.Tensor, losses) -> None:
        """Updates the distribution from the population X (as returned by ``ask``, in the
        unbounded space) and its losses (sequence or tensor of popsize numbers)."""
        cma.tell(self.shared["cma"], X, losses, self.seed, self._options())

    @torch.no_grad()
    def step(self, closure: Objective) -> float:
        """One generation: ask, evaluate (see the class docs for the two objective kinds), tell.
        Returns the best loss of the generation."""
        objective = self._objective(closure)
        options, state, params = self._options(), self.shared["cma"], self._params()
        if cma.restart_due(state, checks.integer(self.param_groups[0]["restarts"], "restarts", 0)):
            state = copy.deepcopy(state)  # kept only if the step succeeds
            cma.restart_(state, options)
        with flat.restored_on_error(flat.snapshot(params)):
            X = cma.ask(state, self.seed, options)
            losses = evaluate_rows(objective, params, cma.feasible(X, options.bounds))
            cma.tell(state, X, losses, self.seed, options)
        self.shared["cma"] = state
        flat.scatter_(params, cma.feasible(state["mean"], options.bounds))
        self._commit(X.shape[0])
        return float(cma.ranked(losses).min())
