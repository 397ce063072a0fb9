"""SparseZO: zeroth-order SGD on a sparse, periodically refreshed mask of coordinates, with the
estimate normalized by its mean and standard deviation (SharpZO's stage 2)."""

from __future__ import annotations

import dataclasses
from typing import Iterable

import torch

from sharpzo_ext.optim import flat, sparse, two_point
from sharpzo_ext.optim.base import ForwardOnlyOptimizer, group_rates, options_from_groups
from sharpzo_ext.optim.objective import Objective

__all__ = ["SparseZO", "MASKS"]

MASKS = sparse.MASKS


class SparseZO(ForwardOnlyOptimizer):
    """Zeroth-order SGD that perturbs and updates only k coordinates of the parameters.

    Every ``refresh`` steps the mask of k coordinates (over all parameters together) is chosen
    by a score:
      "score" (default): |w|^2 * zscore(|G|) (sz.ops.mask_score), G a dense two-point estimate of
          the gradient from ``mask_queries`` directions (2 * mask_queries forward passes): large
          weights whose gradient estimate stands out (at w = 0 everywhere: zscore(|G|));
      "magnitude": |w|; "random": k uniformly random coordinates (from the seed).
    A step perturbs the masked coordinates with perturb_(..., mask=...) along q directions
    (2q forward passes), forms the estimate g = (1/q) sum_j g_j z_j on the mask, normalizes it to
    zero mean and unit standard deviation over the mask (sz.ops.sparse_zscore: outlier
    estimates are tamed and the step no longer scales with the noisy magnitude of g_j), and
    updates x[mask] <- x[mask] - lr * normalized(g). ``normalize=False`` keeps the raw estimate,
    and so does k < 8, where a z-score would destroy the direction (k = 1 would never move).
    Weight decay, if any, also applies to the masked coordinates only. The objective is a
    closure or a Population, as for ZOSGD.

    Args (beyond ZOSGD's lr, eps, q, dist, seed, one_sided, weight_decay, exception_safe):
        density: the fraction of coordinates in the mask (k = ceil(density * d)), or
        k: the number of coordinates (overrides density).
        mask: "score", "magnitude" or "random".
        refresh: steps between mask refreshes.
        mask_queries: directions of the gradient estimate behind a "score" mask.

    Every argument but ``seed`` is a hyperparameter in ``param_groups`` (density as the k it
    gives); lr and weight_decay may differ between groups, the others may not. A group added
    later joins the search: the next step chooses a mask of k coordinates over all parameters.

    Memory: the parameters, the flat bool mask (d bytes), the copy of the masked values for
    ``exception_safe`` (k values), and per step the float32 estimate of one parameter at a time.
    A refresh adds the new mask (d bytes), a buffer of fixed size (``blockwise.BUFFER_BYTES``,
    32 MiB: the scores are made and ranked a block at a time, Note [A mask refresh in blocks]),
    and with ``exception_safe`` a copy of the parameters while its dense estimate perturbs them
    all; the mask it chooses is the one the whole score vector gives.
    """

    def __init__(self, params: Iterable, lr: float, eps: float = 1e-3, density: float = 0.1,
                 k: int | None = None, q: int = 1, dist: str = "gaussian", seed: int = 0,
                 mask: str = "score", refresh: int = 200, mask_queries: int = 5,
                 normalize: bool = True, one_sided: bool = False, weight_decay: float = 0.0,
                 exception_safe: bool = True):
        zo = two_point.Options(eps, q, dist, one_sided, exception_safe)
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay,
                                  **dataclasses.asdict(zo)}, seed)
        options = sparse.Options(sparse.resolve_k(density, k, self._numel()), mask, refresh,
                                 mask_queries, normalize)
        self._add_defaults(dataclasses.asdict(options))
        self._check_hyperparameters(self.param_groups)
        self.shared.update({"mask": None, "refreshes": 0})

    def _check_hyperparameters(self, param_groups) -> None:
        options_from_groups(two_point.Options, param_groups)
        options = options_from_groups(sparse.Options, param_groups)
        if options.k > self._numel():
            raise ValueError(f"k must be at most the parameters' {self._numel()} elements, got "
                             f"{options.k}")
        group_rates(param_groups)

    state_keys = sparse.STATE_KEYS

    def _check_state(self, shared: dict, state_dict: dict) -> None:
        super()._check_state(shared, state_dict)
        k = options_from_groups(sparse.Options, state_dict["param_groups"]).k
        sparse.check_state(shared, self._numel(), k)

    @property
    def mask(self) -> torch.Tensor | None:
        """The current flat bool mask over all parameters (None before the first step)."""
        return self.shared["mask"]

    @property
    def masks(self) -> list[torch.Tensor] | None:
        """The current mask of each parameter, of its shape (views of ``mask``)."""
        return None if self.mask is None else flat.pieces(self._params(), self.mask)

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:
        """One masked two-point step (and a mask refresh when due); returns the estimate of the
        loss at x."""
        objective = self._objective(closure)
        done = sparse.step(objective, self._tuned_groups(), self.shared, self.seed,
                           self.shared["steps"])
        self._commit(done.evaluations)
        return done.loss

    def add_param_group(self, param_group: dict) -> None:
        """Adds parameters; the next step chooses a mask over all of them (k stays)."""
        super().add_param_group(param_group)
        if getattr(self, "shared", None) is not None:  # not while __init__ adds the first groups
            self.shared["mask"] = None
