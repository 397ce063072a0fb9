"""SparseZO: zeroth-order SGD on a sparse, periodically refreshed mask of coordinates, with the
estimate normalized by its mean and standard deviation (SharpZO's stage 2)."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

import sharpzo_ext.ops as ops
from sharpzo_ext.optim import streams, zo
from sharpzo_ext.optim.base import ForwardOnlyOptimizer, check_int, check_positive
from sharpzo_ext.optim.zosgd import check_zo_options

__all__ = ["SparseZO", "MASKS"]

MASKS = ("score", "magnitude", "random")


class SparseZO(ForwardOnlyOptimizer):
    """Zeroth-order SGD that perturbs and updates only k coordinates of the parameters.

    Every ``refresh`` steps the mask of k coordinates (over all parameters together) is chosen
    by a score:
      "score" (default): |w|^2 * zscore(|G|) (sz.ops.mask_score), G a dense two-point estimate of
          the gradient from ``mask_queries`` directions (2 * mask_queries forward passes): large
          weights whose gradient estimate stands out;
      "magnitude": |w|; "random": k uniformly random coordinates (from the seed).
    A step perturbs the masked coordinates with perturb_(..., mask=...) along q directions
    (2q forward passes), forms the estimate g = (1/q) sum_j g_j z_j on the mask, normalizes it to
    zero mean and unit standard deviation over the mask (sz.ops.sparse_zscore: outlier
    estimates are tamed and the step no longer scales with the noisy magnitude of g_j), and
    updates x[mask] <- x[mask] - lr * normalized(g). ``normalize=False`` keeps the raw estimate.
    Weight decay, if any, also applies to the masked coordinates only.

    Args (beyond ZOSGD's lr, eps, q, dist, seed, one_sided, weight_decay, exception_safe):
        density: the fraction of coordinates in the mask (k = ceil(density * d)), or
        k: the number of coordinates (overrides density).
        mask: "score", "magnitude" or "random".
        refresh: steps between mask refreshes.
        mask_queries: directions of the gradient estimate behind a "score" mask.

    Memory: the parameters, the bool masks (d bytes), the copy of the masked values for
    ``exception_safe`` (k values), and per step one parameter-sized estimate; at a refresh, a
    few transient flat copies of size d (mask_score and sparse_zscore on the whole vector).
    """

    def __init__(self, params: Iterable, lr: float, eps: float = 1e-3, density: float = 0.1,
                 k: int | None = None, q: int = 1, dist: str = "gaussian", seed: int = 0,
                 mask: str = "score", refresh: int = 200, mask_queries: int = 5,
                 normalize: bool = True, one_sided: bool = False, weight_decay: float = 0.0,
                 exception_safe: bool = True):
        defaults = {"lr": check_positive(lr, "lr", allow_zero=True),
                    "weight_decay": check_positive(weight_decay, "weight_decay", allow_zero=True)}
        super().__init__(params, defaults, seed)
        n = self._numel()
        if k is None:
            if not 0 < density <= 1:
                raise ValueError(f"density must be in (0, 1], got {density}")
            k = math.ceil(density * n)
        k = check_int(k, "k (of the parameters' elements)", 1, n)
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        self.options = {**check_zo_options(eps, q, dist), "k": k, "mask": mask,
                        "refresh": check_int(refresh, "refresh", 1),
                        "mask_queries": check_int(mask_queries, "mask_queries", 1),
                        "normalize": bool(normalize), "one_sided": bool(one_sided),
                        "exception_safe": bool(exception_safe)}
        # The masks live in the optimizer-wide state: torch casts per-parameter state tensors to
        # the parameter's dtype on load_state_dict, which would turn them into floats.
        self.shared.update({"refreshes": 0, "masks": None})

    @property
    def masks(self) -> list[torch.Tensor] | None:
        """The current mask of each parameter (None before the first step)."""
        return self.shared["masks"]

    @torch.no_grad()
    def step(self, closure: Callable) -> torch.Tensor:
        if closure is None:
            raise ValueError("SparseZO.step needs a closure that returns the loss")
        o, step = self.options, self.shared["steps"]
        if self.masks is None or step % o["refresh"] == 0:
            self._refresh_mask(closure)
        masks = self.masks
        directions = [zo.Direction(streams.stream_id(streams.ZO_DIRECTIONS, step, j), masks)
                      for j in range(o["q"])]
        restore = self._snapshot(masks) if o["exception_safe"] else None
        plus, minus = zo.two_point_losses(self, closure, directions, o["eps"], o["one_sided"],
                                          restore)
        self._update(directions, zo.projected_gradients(plus, minus, o["eps"], o["one_sided"]))
        self.shared["steps"] += 1
        return zo.loss_estimate(plus, minus, o["one_sided"])

    def _update(self, directions: list[zo.Direction], grads: list[float]) -> None:
        o, params, masks = self.options, self._params(), self.masks
        estimates = [torch.zeros_like(p, dtype=torch.float32 if p.element_size() < 4 else None)
                     for p in params]
        for est, mask, offset in zip(estimates, masks, zo.offsets(params)):
            for d, g in zip(directions, grads):
                ops.perturb_(est, self.seed, d.stream, g / o["q"], o["dist"], offset, mask)
        compact = torch.cat([est[mask] for est, mask in zip(estimates, masks)])
        if o["normalize"]:
            compact = ops.sparse_zscore(compact, compact.numel())[0]
        lrs = {id(p): (g["lr"], g["weight_decay"]) for g in self.param_groups for p in g["params"]}
        start = 0
        for p, mask in zip(params, masks):
            count = int(mask.sum())
            lr, decay = lrs[id(p)]
            values = p[mask] * (1 - lr * decay) - lr * compact[start:start + count].to(p.dtype)
            p.masked_scatter_(mask, values)
            start += count

    def _refresh_mask(self, closure: Callable) -> None:
        o, params = self.options, self._params()
        refresh = self.shared["refreshes"]
        w = self._flat(torch.float32)
        if o["mask"] == "random":
            score = ops.sample(w.numel(), self.seed, streams.stream_id(streams.RANDOM_MASK, refresh),
                               device=w.device)
        elif o["mask"] == "magnitude":
            score = w.abs()
        else:
            grad = self._dense_estimate(closure, refresh)
            score = ops.mask_score(w, grad)
        _, flat_mask = ops.sparse_zscore(score, o["k"], score=score, check_finite=False)
        sizes = [p.numel() for p in params]
        self.shared["masks"] = [m.view_as(p).clone()
                                for m, p in zip(flat_mask.split(sizes), params)]
        self.shared["refreshes"] = refresh + 1

    def _dense_estimate(self, closure: Callable, refresh: int) -> torch.Tensor:
        """A dense two-point gradient estimate (flat, float32) from mask_queries directions."""
        o = self.options
        directions = [zo.Direction(streams.stream_id(streams.MASK_DIRECTIONS, refresh, j))
                      for j in range(o["mask_queries"])]
        restore = self._snapshot() if o["exception_safe"] else None
        plus, minus = zo.two_point_losses(self, closure, directions, o["eps"], o["one_sided"],
                                          restore)
        grad = torch.zeros(self._numel(), device=self._params()[0].device)
        for d, g in zip(directions, zo.projected_gradients(plus, minus, o["eps"], o["one_sided"])):
            ops.perturb_(grad, self.seed, d.stream, g / len(directions), o["dist"])
        return grad
