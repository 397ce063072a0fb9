"""Forward-only training on torch.distributed: only losses cross the network.

Every rank runs the same optimizer with the same seed on the same parameters. Wrapping the
population objective is all it takes (Note [Distributed forward-only training]):

    import sharpzo_ext as sz
    rank, world = sz.distributed.init()                    # torchrun's environment; gloo
    objective = sz.distributed.PopulationShard(task.objective(features, labels))
    opt.step(objective)                                    # every rank: the same update

or, with the data split across ranks instead of the candidates,

    mine = sz.distributed.shard(len(labels))               # this rank's slice of the data
    objective = sz.distributed.DataShard(task.objective(features[mine], labels[mine]),
                                         weight=(mine.stop - mine.start) / len(labels))

Both are Population objectives themselves (sharpzo_ext.optim.Population) that wrap another one
(or a plain function of X, which they wrap in a Population). Optimizers that perturb the
parameters in place and call a closure (ZOSGD on a language model) take ShardedLoss, a closure
over this rank's part of the batch whose every call returns the loss over the whole batch
(Note [Sharded closures]):

    mine = sz.distributed.shard(len(tokens))
    closure = sz.distributed.ShardedLoss(lambda: lm_loss(model, tokens[mine]),
                                         weight=(mine.stop - mine.start) / len(tokens),
                                         params=params)
    opt.step(closure)                                      # every rank: the same update

Note [Distributed forward-only training]
Candidates (CMA-ES populations, the 2q points of two-point estimates) are functions of the
optimizer's state and seed, so every rank generates the same ones; only their losses differ in
where they are computed. PopulationShard evaluates a contiguous block of rows per rank and
all-gathers the losses; DataShard evaluates all rows on a rank's part of the data, all-gathers
the weighted losses and sums them in rank order (an all-reduce would be free to sum in any
order, and ranks could round differently). Either way a step moves O(popsize) numbers, never
O(d), and every rank then applies the identical update. Each collective also carries a checksum
of the population, so ranks whose states drifted apart (say, linear algebra that rounds
differently on two machines) stop with a clear error instead of silently training different
models. A rank that dies makes the others fail within the process group's timeout with a
DistributedError.

Note [Sharded closures]
A closure-based optimizer moves the parameters themselves to each point and calls the closure,
so the point is never a matrix that could be split or checksummed. Every rank moves its own
copy of the parameters the same way (the same seed and step), and ShardedLoss evaluates this
rank's part of the batch there, all-gathers the weighted float64 losses and sums them in rank
order, as DataShard does: every rank gets the same float, hence takes the same step. A step
moves one float64 per evaluation (plus the checksum below) per peer, never O(d). The loss is
a weighted sum of the shards' mean losses, which is the mean over the whole batch when each
weight is the shard's share of what the loss averages over (its share of the tokens, when
sequences differ in length), and then equals a single process's loss over the whole batch only
within float rounding: a forward on part of the batch can round differently, and so does a sum
of means. A single process that adds the same shards' weighted losses in rank order gets the
same losses bit for bit.
What detects ranks that diverged is a checksum of the parameters at the point evaluated, as
the population's checksum does for the others; summing all d of them at every evaluation would
cost a pass over the weights per forward, so it covers a fixed strided sample of at most
SAMPLE elements of each parameter. Ranks with different seeds, step counts, eps or starting
weights disagree there from their first evaluation (SparseZO with a tiny mask may take some
steps to move a sampled element: the check is a guard, not a proof). Without `params` nothing
is checked.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from typing import Callable, Iterable

import torch
import torch.distributed as dist

from sharpzo_ext.errors import UserError
from sharpzo_ext.ops import checks
from sharpzo_ext.optim.objective import Population, closure_loss

__all__ = ["DistributedError", "CommStats", "init", "initialized", "finish", "shard", "shard_of",
           "PopulationShard", "DataShard", "ShardedLoss"]

SAMPLE = 16  # elements of each parameter in ShardedLoss's checksum (Note [Sharded closures])


class DistributedError(UserError, RuntimeError):
    """A peer is gone (or stopped answering within the timeout), or the ranks diverged."""


@dataclasses.dataclass
class CommStats:
    """What this rank sent in the collectives of a wrapper."""
    bytes_sent: int = 0
    collectives: int = 0


def init(timeout_s: float = 60.0) -> tuple[int, int]:
    """Initializes the default process group from torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT) if it is not yet. Returns (rank, world size); (0, 1) outside a
    distributed launch.

    The backend is gloo whatever device the model runs on: the wrappers exchange a few losses
    as CPU tensors, which gloo carries between CPU and GPU machines alike (nccl would need them
    on the GPU, for no gain at that size)."""
    if initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def initialized() -> bool:
    """Whether the default process group exists."""
    return dist.is_available() and dist.is_initialized()


def finish(wait: bool = True) -> None:
    """Waits until every rank gets here (unless not `wait`: a run that failed), then destroys
    the default process group: the end of a run that init() started (Note [Ending a distributed
    run]). Nothing outside a distributed launch.

    Note [Ending a distributed run]
    Ranks other than 0 finish stepping before rank 0 has written its results. Exiting then,
    with the process group still alive, leaves its teardown to the interpreter's shutdown, where
    gloo can abort the process (seen once in CI: rank 1 killed by SIGABRT, so torchrun stopped
    rank 0 before it wrote the summary). A barrier keeps every rank until rank 0 is done, and the
    group is destroyed while the interpreter is still whole. A rank whose run failed destroys
    it without waiting: its peers then fail at their next collective instead of at the timeout."""
    if not initialized():
        return
    try:
        if wait:
            dist.barrier()
    except RuntimeError as error:
        raise DistributedError(f"a peer stopped answering at the end of the run "
                               f"({str(error).splitlines()[0]})") from None
    finally:
        dist.destroy_process_group()


def _rank_world(group) -> tuple[int, int]:
    if not initialized():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def shard_of(n: int, rank: int, world: int) -> slice:
    """Rank `rank`'s contiguous block of range(n) (block sizes differ by at most one)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def shard(n: int, group=None) -> slice:
    """This rank's contiguous block of range(n)."""
    return shard_of(n, *_rank_world(group))


def _checksum(X: torch.Tensor) -> float:
    return float(X.detach().double().sum())


def _sample_checksum(params: list[torch.Tensor]) -> float:
    """The sum of a strided sample of at most SAMPLE elements of each parameter (the same
    elements at every call), O(SAMPLE) reads per parameter, not O(d). math.fsum rounds the exact
    sum once, so ranks on different devices (whose tensor sums add in different orders) agree."""
    samples = [p.detach().reshape(-1)[::max(1, -(-p.numel() // SAMPLE))] for p in params]
    return math.fsum(torch.cat([s.double().cpu() for s in samples]).tolist())


class _Exchange:
    """The collectives of the wrappers over `group`: an all-gather that turns a dead peer into a
    DistributedError, and a rank-ordered sum that checks the ranks agree."""

    def __init__(self, group):
        self.group = group
        self.stats = CommStats()

    def _all_gather(self, local: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `local` (float64, CPU, the same size on every rank), in rank order; a
        dead peer is a DistributedError."""
        rank, world = _rank_world(self.group)
        gathered = [torch.empty_like(local) for _ in range(world)]
        try:
            dist.all_gather(gathered, local, group=self.group)
        except (RuntimeError, dist.DistBackendError) as error:
            raise DistributedError(f"rank {rank} of {world}: a peer stopped answering "
                                   f"({str(error).splitlines()[0]}); stopping") from None
        self.stats.bytes_sent += local.numel() * local.element_size() * (world - 1)
        self.stats.collectives += 1
        return gathered

    @staticmethod
    def _check_agreement(checksums: torch.Tensor, what: str) -> None:
        """DistributedError unless every rank's row of `checksums` is rank 0's, bit for bit."""
        bits = checksums.view(torch.int64)  # NaN == NaN when the bits are the same
        if not bool((bits == bits[0]).all()):
            raise DistributedError(f"the ranks' {what} differ (checksums {checksums.tolist()}): "
                                   f"their optimizer states diverged")

    def _sum_in_rank_order(self, weighted: torch.Tensor, checksums: torch.Tensor,
                           what: str) -> torch.Tensor:
        """The sum over the ranks of their `weighted` (float64), added in rank order: the same
        float on every rank, an all-reduce being free to add in any order. Every rank's
        `checksums` (of its `what`) travel along and must agree."""
        n = weighted.numel()
        gathered = self._all_gather(torch.cat([weighted, checksums]))
        self._check_agreement(torch.stack([g[n:] for g in gathered]), what)
        total = torch.zeros_like(weighted)
        for g in gathered:
            total += g[:n]
        return total


class _Collective(Population, _Exchange):
    """A Population objective that runs `objective` on this rank and exchanges results."""

    def __init__(self, objective: Population | Callable[[torch.Tensor], object], group):
        Population.__init__(self, self._collective_losses)
        _Exchange.__init__(self, group)
        self.objective = objective if isinstance(objective, Population) else Population(objective)

    def _collective_losses(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PopulationShard(_Collective):
    """A population objective whose rows are split across the ranks: each rank evaluates its
    contiguous block of rows with `objective`, and every rank returns all the losses."""

    def __init__(self, objective: Population | Callable[[torch.Tensor], object], group=None):
        super().__init__(objective, group)

    def _collective_losses(self, X: torch.Tensor) -> torch.Tensor:
        rank, world = _rank_world(self.group)
        m = X.shape[0]
        if world == 1:
            return self.objective(X)
        rows = shard_of(m, rank, world)
        width = -(-m // world)  # the largest block: every rank sends the same size
        local = torch.full((width + 1,), float("nan"), dtype=torch.float64)
        if rows.stop > rows.start:
            local[:rows.stop - rows.start] = self.objective(X[rows])
        local[width] = _checksum(X)
        gathered = self._all_gather(local)
        self._check_agreement(torch.stack([g[width] for g in gathered]), "populations")
        return torch.cat([g[:s.stop - s.start] for g, s in
                          zip(gathered, [shard_of(m, r, world) for r in range(world)])])


class DataShard(_Collective):
    """A population objective over this rank's part of the data, scaled by `weight` (its share
    of the data): the losses are summed across ranks, giving the loss over all the data."""

    def __init__(self, objective: Population | Callable[[torch.Tensor], object], weight: float,
                 group=None):
        super().__init__(objective, group)
        self.weight = float(weight)

    def _collective_losses(self, X: torch.Tensor) -> torch.Tensor:
        _, world = _rank_world(self.group)
        if world == 1:
            return self.objective(X)
        losses = self.objective(X)
        return self._sum_in_rank_order(losses * self.weight,
                                       torch.tensor([_checksum(X)], dtype=torch.float64),
                                       "populations")


class ShardedLoss(_Exchange):
    """A closure over this rank's part of the batch whose every call returns, on every rank,
    the loss over the whole batch: the sum of the ranks' losses times their `weight` (their
    share of the batch), added in rank order (Note [Sharded closures]).

        mine = sz.distributed.shard(len(tokens))
        opt.step(sz.distributed.ShardedLoss(lambda: lm_loss(model, tokens[mine]),
                                            weight=(mine.stop - mine.start) / len(tokens),
                                            params=params))

    Args:
        closure: this rank's loss, called with no argument at the point the optimizer set
            (a scalar tensor, of any dtype and device, or a number).
        weight: this rank's factor (finite, >= 0): for a mean loss, its share of what the
            loss averages over (sequences, or tokens when their lengths differ); 1 for a sum.
        params: the parameters the optimizer moves, to check at every evaluation that every
            rank evaluates the same point (a sample of them: Note [Sharded closures]); None
            checks nothing.
        group: the process group (the default one if None).

    A call returns a float64 CPU scalar tensor. Outside a distributed run (one process) it
    returns the closure's own loss, untouched. Each call is a collective: every rank must make
    it, as every rank's optimizer step does.
    """

    def __init__(self, closure: Callable[[], object], weight: float,
                 params: Iterable[torch.Tensor] | None = None, group=None):
        if isinstance(closure, Population):
            raise TypeError("ShardedLoss wraps a closure that takes no argument; for a Population "
                            "objective use DataShard")
        if not callable(closure):
            raise TypeError(f"ShardedLoss needs a callable closure, got {type(closure).__name__}")
        super().__init__(group)
        self.closure = closure
        self.weight = checks.real(weight, "weight", nonnegative=True)
        self.params = None if params is None else list(params)
        if self.params is not None and not self.params:
            raise ValueError("params is empty: pass the parameters the optimizer moves, or None")
        for p in self.params or []:
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params must be tensors, got {type(p).__name__}")

    def __call__(self) -> torch.Tensor:
        _, world = _rank_world(self.group)
        if world == 1:
            return self.closure()
        weighted = torch.tensor([closure_loss(self.closure) * self.weight], dtype=torch.float64)
        checksums = torch.tensor([] if self.params is None else [_sample_checksum(self.params)],
                                 dtype=torch.float64)
        return self._sum_in_rank_order(weighted, checksums, "parameters")[0]
