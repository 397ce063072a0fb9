"""CMA-ES as a torch.optim optimizer, with ask/tell, on float64 torch tensors (CPU or CUDA)."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

import sharpzo_ext.ops as ops
from sharpzo_ext.optim import cma_factors, streams
from sharpzo_ext.optim.base import ForwardOnlyOptimizer, check_int, check_positive
from sharpzo_ext.optim.cma_constants import CMAConstants

__all__ = ["CMAES"]


class CMAES(ForwardOnlyOptimizer):
    """Covariance matrix adaptation evolution strategy (pycma's CSA variant), forward-only.

    The parameters hold the mean of the search distribution; ``step(closure)`` samples a
    population, evaluates every candidate and updates mean, step size and covariance. The
    closure either takes no argument (torch.optim style: each candidate is written into the
    parameters in turn, under ``torch.no_grad()``) or takes the population as a ``(popsize, d)``
    matrix and returns ``popsize`` losses in one call (one batched forward). ``step`` returns the
    best loss of the generation. ``ask()`` / ``tell(X, losses)`` expose the same generation
    without the parameters.

    Args:
        params: the parameters (one group; d = their total number of elements).
        sigma: initial step size (> 0).
        popsize: lambda, default pycma's 4 + floor(3 ln d).
        seed: every population is drawn from the perturbation stream of this seed (stream per
            restart and generation), so runs reproduce and instances never interfere.
        diagonal: separable CMA-ES: diagonal covariance, O(d) memory and time (large d).
        bounds: ``(lower, upper)`` scalars or tensors of shape (d,). Note [Bounds by reflection].
        decomposition: "cholesky" (default) or "eigh" (pycma's): Note [Cholesky factor by
            default] in cma_factors.py. Ignored when diagonal.
        active: negative weights for the worst half (active CMA-ES, pycma's default).
        tolfun, tolx, max_condition: stopping tests (pycma's defaults), see ``stop_reason``.
        restarts: IPOP restarts after a stop: each doubles popsize and starts again from the
            initial mean and sigma.

    Losses: NaN and +inf rank last (a failed evaluation); -inf is an error. ``state_dict()``
    holds everything, so ``load_state_dict`` resumes bit for bit.
    """

    def __init__(self, params: Iterable, sigma: float, popsize: int | None = None, seed: int = 0,
                 diagonal: bool = False, bounds=None, decomposition: str = "cholesky",
                 active: bool = True, tolfun: float = 1e-11, tolx: float = 1e-11,
                 max_condition: float = 1e14, restarts: int = 0):
        super().__init__(params, {}, seed)
        if len(self.param_groups) != 1:
            raise ValueError("CMAES searches one vector: pass one parameter group")
        if decomposition not in ("cholesky", "eigh"):
            raise ValueError(f"decomposition must be 'cholesky' or 'eigh', got {decomposition!r}")
        popsize = None if popsize is None else check_int(popsize, "popsize", 2)
        restarts = check_int(restarts, "restarts", 0)
        n = self._numel()
        device = self._params()[0].device
        self.options = {
            "sigma": check_positive(sigma, "sigma"), "diagonal": bool(diagonal),
            "kind": "diagonal" if diagonal else decomposition, "active": bool(active),
            "tolfun": check_positive(tolfun, "tolfun", allow_zero=True),
            "tolx": check_positive(tolx, "tolx", allow_zero=True),
            "max_condition": check_positive(max_condition, "max_condition"),
            "restarts": restarts, "popsize": popsize,
        }
        self.bounds = self._check_bounds(bounds, n, device)
        mean = self._flat()
        self.shared.update({"x0": mean.clone(), "restart": 0, "best_loss": math.inf,
                            "best_x": self._feasible(mean)})
        self._start(mean, self.options["popsize"])
        self._assign(self._feasible(mean))

    # ---- public API ----------------------------------------------------------------------------

    @property
    def mean(self) -> torch.Tensor:
        """The mean of the search distribution (flat, float64, unbounded space)."""
        return self.shared["mean"]

    @property
    def sigma(self) -> float:
        return self.shared["sigma"]

    @property
    def popsize(self) -> int:
        return self.shared["popsize"]

    @property
    def generation(self) -> int:
        return self.shared["generation"]

    @property
    def stop_reason(self) -> str | None:
        """None, or which stopping test the last generation met: "tolfun", "tolx",
        "condition" (after the last allowed restart; earlier ones trigger the restart)."""
        return self.shared["stop"]

    @property
    def best(self) -> tuple[torch.Tensor, float]:
        """(best candidate evaluated so far, in the box, float64; its loss)."""
        return self.shared["best_x"], self.shared["best_loss"]

    def ask(self) -> torch.Tensor:
        """The population of the current generation: (popsize, d), float64, unbounded space
        (evaluate ``feasible(X)`` when bounds are set). The same until ``tell``."""
        s = self.shared
        if s["generation"] - s["decomposed_at"] >= self._constants.lazy_gap:
            self._decompose()
        return s["mean"] + s["sigma"] * cma_factors.sample(s["factor"], self._standard_normal())

    def feasible(self, X: torch.Tensor) -> torch.Tensor:
        """X mapped into the bounds (Note [Bounds by reflection]); X itself without bounds."""
        return self._feasible(X)

    @torch.no_grad()
    def tell(self, X: torch.Tensor, losses) -> None:
        """Updates the distribution from the population X (as returned by ``ask``, in the
        unbounded space) and its losses (sequence or tensor of popsize numbers)."""
        s, k = self.shared, self._constants
        X = torch.as_tensor(X, dtype=torch.float64, device=s["mean"].device)
        losses = torch.as_tensor(losses, dtype=torch.float64).flatten().cpu()
        if X.shape != (s["popsize"], self._numel()):
            raise ValueError(f"X must have shape ({s['popsize']}, {self._numel()}), got "
                             f"{tuple(X.shape)}")
        if losses.numel() != s["popsize"]:
            raise ValueError(f"losses must hold {s['popsize']} values, got {losses.numel()}")
        if bool((losses == -math.inf).any()):
            raise ValueError("losses must not be -inf")
        ranked = torch.where(losses.isnan(), math.inf, losses)
        if not bool(ranked.isfinite().any()):
            raise ValueError("every loss of the population is NaN or infinite")
        order = torch.sort(ranked, stable=True).indices
        self._record(X, ranked, order)
        on_device = order.to(X.device)
        Y = (X[on_device] - s["mean"]) / s["sigma"]
        white = self._whitened(Y, on_device)
        w = k.weights_tensor(Y.device)
        y_w = w[:k.mu] @ Y[:k.mu]
        n = self._numel()
        s["mean"] = s["mean"] + s["sigma"] * y_w
        ps = (1 - k.cs) * s["ps"] + math.sqrt(k.cs * (2 - k.cs) * k.mueff) * (w[:k.mu] @ white[:k.mu])
        t = s["generation"] + 1
        hsig = float(ps @ ps) / (1 - (1 - k.cs) ** (2 * t)) / n - 1 < 1 + 4 / (n + 1)
        pc = (1 - k.cc) * s["pc"] + hsig * math.sqrt(k.cc * (2 - k.cc) * k.mueff) * y_w
        if self.options["active"] and k.mu < s["popsize"]:  # w_i n / ||C^-1/2 y_i||^2, i > mu
            w = w.clone()
            w[k.mu:] *= n / ((white[k.mu:] * white[k.mu:]).sum(dim=1).sqrt() + 1e-9) ** 2
        decay = 1 + k.c1 * (1 - hsig) * k.cc * (2 - k.cc) - k.c1 - k.cmu * sum(k.weights)
        if self.options["diagonal"]:
            s["C"] = decay * s["C"] + k.c1 * pc * pc + k.cmu * (w @ (Y * Y))
        else:
            ops.cma_cov_update_(s["C"], pc, Y, w, k.c1, k.cmu, decay)
        log_change = (k.cs / k.damps) * (float(ps.norm()) / k.chi_n - 1)
        s["sigma"] *= math.exp(min(1.0, max(-1.0, log_change)))
        s.update(ps=ps, pc=pc, generation=t)
        if self.options["diagonal"]:
            self._decompose()  # O(d): every generation
        s["stop"] = self._stop_test(ranked)

    @torch.no_grad()
    def step(self, closure: Callable) -> float:
        """One generation: ask, evaluate (see the class docs for the two closure forms), tell.
        Returns the best loss of the generation. If the closure raises, the parameters are
        bitwise as before and the optimizer state is unchanged."""
        if closure is None:
            raise ValueError("CMAES.step needs a closure that returns the loss")
        if self.shared["stop"] is not None and self.shared["restart"] < self.options["restarts"]:
            self._restart()
        X = self.ask()
        with self._restored_on_error():
            losses = self._evaluate(closure, self._feasible(X))
        self.tell(X, losses)
        self._assign(self._feasible(self.shared["mean"]))
        self.shared["steps"] += 1
        return float(losses.min())

    # ---- internals -----------------------------------------------------------------------------

    @property
    def _constants(self) -> CMAConstants:
        popsize = self.shared["popsize"]
        cached = getattr(self, "_constants_cache", None)
        if cached is None or cached.popsize != popsize:
            cached = CMAConstants.pycma(self._numel(), popsize, self.options["active"],
                                        self.options["diagonal"])
            self._constants_cache = cached
        return cached

    def _start(self, mean: torch.Tensor, popsize: int | None) -> None:
        """(Re)initializes the distribution around `mean`."""
        n = self._numel()
        k = CMAConstants.pycma(n, popsize, self.options["active"], self.options["diagonal"])
        ones = torch.ones(n, dtype=torch.float64, device=mean.device)
        self.shared.update({
            "mean": mean.clone(), "sigma": self.options["sigma"], "popsize": k.popsize,
            "C": ones.clone() if self.options["diagonal"] else torch.diag(ones),
            "pc": torch.zeros_like(ones), "ps": torch.zeros_like(ones), "generation": 0,
            "decomposed_at": 0, "history": [], "stop": None,
        })
        self._decompose()

    def _restart(self) -> None:
        s = self.shared
        s["restart"] += 1
        self._start(s["x0"], 2 * s["popsize"])  # IPOP: double the population

    def _decompose(self) -> None:
        s = self.shared
        s["factor"], repaired = cma_factors.decompose(self.options["kind"], s["C"])
        if repaired is not None:
            s["C"] = repaired
        s["decomposed_at"] = s["generation"]

    def _standard_normal(self, extra: int = 0) -> torch.Tensor:
        """The generation's standard normal samples Z, (popsize, d), and `extra` more values."""
        s, n = self.shared, self._numel()
        stream = streams.stream_id(streams.CMA_SAMPLES, s["restart"], s["generation"])
        values = ops.sample(s["popsize"] * n + extra, self.seed, stream, dtype=torch.float64,
                            device=s["mean"].device)
        return values if extra else values.view(s["popsize"], n)

    # Note [Whitening without solves]
    # CMA-ES needs A^-1 y_i (A the factor of C) for the path ps and the active weights. For the
    # population that ask() drew, y_i = A z_i, so A^-1 y_i is z_i itself (for eigh, B z_i), which
    # the seed regenerates for the cost of sampling; pycma does the same with its stored samples. tell()
    # confirms that X is that population with one random projection, (Y - Z A^T) r = 0 for a
    # fixed random r (one matrix-vector product instead of lambda triangular solves), and whitens
    # explicitly when it is not (solutions injected or modified by the caller).
    def _whitened(self, Y: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        s, n = self.shared, self._numel()
        values = self._standard_normal(extra=n)
        Z, r = values[:-n].view(s["popsize"], n)[order], values[-n:]
        mismatch = Y @ r - Z @ cma_factors.transpose_apply(s["factor"], r)
        if float(mismatch.abs().max()) <= 1e-9 * float(Y.norm() * r.norm()):
            return cma_factors.whiten_samples(s["factor"], Z)
        return cma_factors.whiten(s["factor"], Y)

    def _record(self, X: torch.Tensor, ranked: torch.Tensor, order: torch.Tensor) -> None:
        s = self.shared
        best = float(ranked[order[0]])
        if best < s["best_loss"]:
            s["best_loss"], s["best_x"] = best, self._feasible(X[int(order[0])]).clone()
        horizon = 10 + math.ceil(30 * self._numel() / s["popsize"])
        s["history"] = (s["history"] + [best])[-horizon:]

    def _stop_test(self, ranked: torch.Tensor) -> str | None:
        s, o = self.shared, self.options
        horizon = 10 + math.ceil(30 * self._numel() / s["popsize"])
        finite = ranked[ranked.isfinite()]
        if len(s["history"]) >= horizon and finite.numel() > 0:
            values = s["history"] + finite.tolist()
            if max(values) - min(values) < o["tolfun"]:
                return "tolfun"
        spread = s["C"] if o["diagonal"] else s["C"].diagonal()
        if bool((s["sigma"] * torch.maximum(s["pc"].abs(), spread.sqrt()) < o["tolx"]).all()):
            return "tolx"
        if cma_factors.condition(s["factor"]) > o["max_condition"]:
            return "condition"
        return None

    # Note [Bounds by reflection]
    # With bounds, CMA-ES still samples and adapts in the unbounded space; a candidate x is
    # evaluated at its mirror image in the box (reflection at the faces, periodic with period
    # 2 (upper - lower)). The loss seen by CMA-ES, f(reflect(x)), is continuous and has no flat
    # regions (clipping would create them and stall the step size), no penalty weight needs
    # tuning, and every point the closure sees, and the parameters between steps, are in the box.
    @staticmethod
    def _check_bounds(bounds, n: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        if bounds is None:
            return None
        try:
            lower, upper = bounds
        except (TypeError, ValueError):
            raise ValueError("bounds must be a pair (lower, upper)") from None
        lower = torch.as_tensor(lower, dtype=torch.float64, device=device).expand(n).clone()
        upper = torch.as_tensor(upper, dtype=torch.float64, device=device).expand(n).clone()
        if not bool((lower.isfinite() & upper.isfinite() & (lower < upper)).all()):
            raise ValueError("bounds must be finite with lower < upper everywhere")
        return lower, upper

    def _feasible(self, X: torch.Tensor) -> torch.Tensor:
        if self.bounds is None:
            return X
        lower, upper = self.bounds
        width = upper - lower
        u = torch.remainder(X - lower, 2 * width)
        return lower + torch.where(u <= width, u, 2 * width - u)
