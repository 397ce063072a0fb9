"""Sparse zeroth-order search over the flat parameter vector: the core of SparseZO and of
SharpZO's stage 2 (both call `step`).

A step perturbs and updates only the k coordinates of a flat mask. The mask is chosen every
``refresh`` steps by a score over all of x, and the estimate on the mask is normalized to zero
mean and unit standard deviation (sz.ops.sparse_zscore) before the update
x[mask] <- x[mask] (1 - lr weight_decay) - lr normalized(g).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch

import sharpzo_ext.ops as ops
from sharpzo_ext.ops import checks
from sharpzo_ext.optim import blockwise, flat, state_checks, streams, two_point
from sharpzo_ext.optim.base import group_rates, options_from_groups
from sharpzo_ext.optim.objective import Objective

__all__ = ["Options", "MASKS", "STATE_KEYS", "check_state", "resolve_k", "choose_mask", "update_",
           "Step", "step"]

MASKS = ("score", "magnitude", "random")


STATE_KEYS = ("mask", "refreshes")  # of the state dict that step() reads and updates


def check_state(state: dict, n: int, k: int) -> None:
    """Raises state_checks.InvalidState unless state["mask"] is None or a flat bool mask of k of
    the n coordinates, and state["refreshes"] counts refreshes."""
    if state["mask"] is not None:
        mask = state_checks.tensor(state["mask"], "mask", (n,), torch.bool)
        if int(mask.sum()) != k:
            raise state_checks.InvalidState("mask", f"must select k = {k} coordinates, got "
                                            f"{int(mask.sum())}")
    state_checks.count(state["refreshes"], "refreshes")


def resolve_k(density, k, n: int) -> int:
    """The mask size: k if given, else ceil(density * n); in [1, n]."""
    if k is None:
        density = checks.real(density, "density", positive=True)
        if density > 1:
            raise ValueError(f"density must be in (0, 1], got {density}")
        k = math.ceil(density * n)
    return checks.integer(k, "k (of the parameters' elements)", 1, n)


@dataclasses.dataclass(frozen=True)
class Options:
    """How the mask is chosen (validated on construction).

    k: coordinates in the mask. mask: "score" (|w|^2 * zscore(|G|), sz.ops.mask_score, G a
    dense two-point estimate from mask_queries directions; Note [Scores at w = 0]),
    "magnitude" (|w|) or "random". refresh: steps between refreshes. normalize: z-score the
    estimate on the mask (when k >= MIN_NORMALIZED_K: Note [No z-score of a few values]).
    """
    k: int
    mask: str = "score"
    refresh: int = 200
    mask_queries: int = 5
    normalize: bool = True

    def __post_init__(self):
        object.__setattr__(self, "k", checks.integer(self.k, "k", 1))
        checks.choice(self.mask, "mask", MASKS)
        object.__setattr__(self, "refresh", checks.integer(self.refresh, "refresh", 1))
        object.__setattr__(self, "mask_queries",
                           checks.integer(self.mask_queries, "mask_queries", 1))
        object.__setattr__(self, "normalize", bool(self.normalize))


SCORE_EPS = 1e-8  # added to the standard deviation of |G| (sz.ops.mask_score's eps)


# Note [Scores at w = 0]
# The score |w|^2 * zscore(|G|) prefers large weights whose gradient estimate stands out. At
# w = 0, where prompt tuning starts, it is 0 everywhere, and the top k would be the first k
# coordinates (ties go to the lower index) whatever the gradient says. All weights are then
# equal, so the score ranks by its other factor: zscore(|G|), the score of w = 1.
def choose_mask(objective: Objective, params: Sequence[torch.Tensor], seed: int, refresh: int,
                options: Options, zo: two_point.Options) -> tuple[torch.Tensor, int]:
    """(a new flat bool mask of options.k coordinates, the objective evaluations it took) for
    the `refresh`-th refresh: the top k of the scores, ties to the lower index (Note [Score
    order]), chosen a block at a time (Note [A mask refresh in blocks]). The mask is the one
    sz.ops.sparse_zscore selects from sz.ops.mask_score over the whole vector."""
    n, device, evaluations = flat.numel(params), params[0].device, 0
    if options.mask == "random":
        stream = streams.stream_id(streams.RANDOM_MASK, refresh)

        def scores(start: int, end: int) -> torch.Tensor:
            return ops.sample(end - start, seed, stream, offset=start, device=device)
    elif options.mask == "magnitude":
        def scores(start: int, end: int) -> torch.Tensor:
            return flat.segment(params, start, end, torch.float32).abs()
    else:
        scores = _gradient_scores(objective, params, seed, refresh, options, zo)
        evaluations = two_point.cost(options.mask_queries, zo.one_sided)

    def finite_scores(start: int, end: int) -> torch.Tensor:
        score = scores(start, end)
        if not bool(score.isfinite().all()):
            raise ValueError("a mask score is not finite (a weight is inf or NaN, or so large "
                             "that its square overflows float32); the parameters are unchanged")
        return score

    return blockwise.top_k_mask(finite_scores, n, options.k, device), evaluations


def _gradient_scores(objective: Objective, params: Sequence[torch.Tensor], seed: int,
                     refresh: int, options: Options,
                     zo: two_point.Options) -> blockwise.Blocks:
    """The "score" mask's scores |w|^2 * zscore(|G|) (sz.ops.mask_score's, bit for bit), a block
    at a time: G, the float32 dense estimate from options.mask_queries directions, is
    regenerated from the stream for each block a pass reads."""
    ids = two_point.stream_ids(streams.MASK_DIRECTIONS, refresh, options.mask_queries)
    plus, minus = two_point.losses(objective, params, seed, ids, zo)
    coefficients = [g / len(ids) for g in two_point.projected_gradients(plus, minus, zo)]
    n, device = flat.numel(params), params[0].device

    def magnitudes(start: int, end: int) -> torch.Tensor:
        estimate = torch.zeros(end - start, dtype=torch.float32, device=device)
        two_point.accumulate_(estimate, seed, ids, coefficients, zo.dist, start)
        return estimate.double().abs_()

    mean, denom, finite = blockwise.moments(magnitudes, n, SCORE_EPS)
    if not finite:
        raise ValueError("the gradient estimate behind the mask is not finite (the losses' "
                         "differences overflow float32); the parameters are unchanged")
    weighted = any(bool(flat.segment(params, start, end, torch.float32).any())  # as scored:
                   for start, end in blockwise.blocks(n))  # Note [Scores at w = 0]

    def scores(start: int, end: int) -> torch.Tensor:  # in place: the blocks' own tensors
        z = magnitudes(start, end).sub_(mean).div_(denom) if denom > 0 else torch.zeros(
            end - start, dtype=torch.float64, device=device)
        if not weighted:
            return z.float()
        w = flat.segment(params, start, end, torch.float32).double()
        return w.mul_(w).mul_(z).float()

    return scores


# Note [No z-score of a few values]
# Normalizing the estimate on the mask subtracts its mean and divides by its standard
# deviation. Over many coordinates that keeps the direction and fixes the step's scale; over a
# few it destroys the direction: one value always z-scores to 0 (k = 1 never moves), two always
# to -1 and +1, whatever their signs (half of every k = 2 step climbs). Below MIN_NORMALIZED_K
# coordinates the raw estimate is used, as with normalize=False.
MIN_NORMALIZED_K = 8


@torch.no_grad()
def update_(params: Sequence[torch.Tensor], mask: torch.Tensor, *, seed: int,
            ids: Sequence[int], grads: Sequence[float], dist: str, lrs: Sequence[float],
            weight_decays: Sequence[float], normalize: bool) -> None:
    """x[mask] <- x[mask] (1 - lr weight_decay) - lr normalized(g), g = (1/q) sum_j g_j z_j on
    the mask, with each parameter's own lr and weight decay. Allocates one estimate per
    parameter, of its size (float32, float64 for float64 parameters)."""
    coefficients = [g / len(ids) for g in grads]
    masks = flat.pieces(params, mask)
    compact = []
    for p, m, offset in zip(params, masks, flat.offsets(params)):
        estimate = torch.zeros_like(p, dtype=torch.float64 if p.dtype == torch.float64
                                    else torch.float32)
        two_point.accumulate_(estimate, seed, ids, coefficients, dist, offset, m)
        compact.append(estimate[m])
    compact = torch.cat(compact)
    if normalize and compact.numel() >= MIN_NORMALIZED_K:
        compact = ops.sparse_zscore(compact, compact.numel())[0]
    start, updated = 0, []
    for p, m, lr, decay in zip(params, masks, lrs, weight_decays):
        count = int(m.sum())
        values = p[m] * (1 - lr * decay) - lr * compact[start:start + count].to(p.dtype)
        if not bool(torch.isfinite(values).all()):  # before any parameter changes
            raise ValueError(f"lr ({lr:g}) times the normalized estimate is beyond what "
                             f"{p.dtype} holds: the step would write inf; the parameters are "
                             "unchanged (lower lr)")
        updated.append(values)
        start += count
    for p, m, values in zip(params, masks, updated):
        p.masked_scatter_(m, values)


@dataclasses.dataclass(frozen=True)
class Step:
    """What one sparse step did: the loss estimate at x and the objective evaluations."""
    loss: torch.Tensor
    evaluations: int


def step(objective: Objective, param_groups: Sequence[dict], state: dict, seed: int,
         index: int) -> Step:
    """Step `index` (0, 1, ...) of the sparse search over the parameters of `param_groups`, with
    their hyperparameters: refreshes the mask in `state` ("mask", "refreshes") when it is due
    (or None), then one masked two-point step along q directions and the update. The parameters
    and `state` change only if every evaluation succeeds."""
    zo = options_from_groups(two_point.Options, param_groups)
    options = options_from_groups(Options, param_groups)
    lrs, decays = group_rates(param_groups)
    params = [p for group in param_groups for p in group["params"]]
    mask, refreshes, evaluations = state["mask"], state["refreshes"], 0
    if mask is None or index % options.refresh == 0:
        mask, evaluations = choose_mask(objective, params, seed, refreshes, options, zo)
        refreshes += 1
    ids = two_point.stream_ids(streams.ZO_DIRECTIONS, index, zo.q)
    plus, minus = two_point.losses(objective, params, seed, ids, zo, mask)
    grads = two_point.projected_gradients(plus, minus, zo)
    update_(params, mask, seed=seed, ids=ids, grads=grads, dist=zo.dist, lrs=lrs,
            weight_decays=decays, normalize=options.normalize)
    state.update(mask=mask, refreshes=refreshes)
    return Step(two_point.loss_estimate(plus, minus, zo.one_sided),
                evaluations + two_point.cost(zo.q, zo.one_sided))
