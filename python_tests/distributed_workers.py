"""Bodies of the processes the distributed tests spawn (importable by the children)."""

import datetime
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import sharpzo_ext as sz

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def setup(rank, world, port, timeout_s=60):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))


def rosenbrock(X):
    return (100 * (X[..., 1:] - X[..., :-1] ** 2) ** 2 + (1 - X[..., :-1]) ** 2).sum(-1)


def cmaes_population(rank, world, port, out, d):
    setup(rank, world, port)
    p = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt = sz.optim.CMAES([p], sigma=0.5, popsize=10, seed=3)
    closure = sz.distributed.PopulationShard(rosenbrock)
    for _ in range(15):
        opt.step(closure)
    torch.save({"mean": opt.mean, "bytes": closure.stats.bytes_sent,
                "collectives": closure.stats.collectives}, f"{out}/rank{rank}.pt")
    sz.distributed.finish()  # Note [Ending a distributed run]


def zosgd_data(rank, world, port, out):
    setup(rank, world, port)
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(200, 10, generator=gen, dtype=torch.float64)
    y = (A @ torch.randn(10, generator=gen, dtype=torch.float64) > 0).double()
    mine = sz.distributed.shard(200)

    def local(W):  # rows of W: candidate weight vectors; loss over this rank's data
        logits = W @ A[mine].T
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y[mine].expand_as(logits), reduction="none").mean(-1)

    p = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))
    opt = sz.optim.ZOSGD([p], lr=0.05, q=4, seed=0)
    closure = sz.distributed.DataShard(local, weight=(mine.stop - mine.start) / 200)
    for _ in range(50):
        opt.step(closure)
    torch.save({"w": p.detach().clone()}, f"{out}/rank{rank}.pt")
    sz.distributed.finish()  # Note [Ending a distributed run]


def dies(rank, world, port, out):
    setup(rank, world, port, timeout_s=10)
    p = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = sz.optim.CMAES([p], sigma=0.5, popsize=8, seed=0)
    closure = sz.distributed.PopulationShard(rosenbrock)
    start = time.time()
    try:
        for step in range(100):
            if rank == 1 and step == 3:
                os._exit(1)  # a crash: no goodbye to the peers
            opt.step(closure)
    except sz.distributed.DistributedError as error:
        with open(f"{out}/rank{rank}.txt", "w") as f:
            f.write(f"{time.time() - start:.1f}\n{error}")
        os._exit(3)


def diverged(rank, world, port, out):
    setup(rank, world, port)
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = sz.optim.CMAES([p], sigma=0.5, popsize=6, seed=rank)  # different seeds: other states
    try:
        opt.step(sz.distributed.PopulationShard(rosenbrock))
    except sz.distributed.DistributedError as error:
        with open(f"{out}/rank{rank}.txt", "w") as f:
            f.write(str(error))
    # Leave without tearing gloo down: under load, its destructors (or destroy_process_group)
    # can abort a process whose peer has already gone (std::terminate, exit -6), which is not
    # what this test checks; the result is in the file.
    os._exit(0)


def lm_data_parallel(rank, world, port, out, argv):
    """examples/data_parallel_causal_lm.py's train() with ZOSGD and with SparseZO, each rank on
    its part of every batch."""
    setup(rank, world, port)
    sys.path.insert(0, str(EXAMPLES))  # the example imports finetune_causal_lm's helpers
    import data_parallel_causal_lm as example

    results = {}
    for optimizer in ("zosgd", "sparsezo"):
        model, losses = example.train(example.parser().parse_args(
            ["--tiny", "--quiet", "--optimizer", optimizer, *argv]))
        results[optimizer] = {"losses": losses, "weights": {
            name: p.detach().clone() for name, p in model.named_parameters()}}
    torch.save(results, f"{out}/rank{rank}.pt")
    sz.distributed.finish()  # Note [Ending a distributed run]


def sharded_closure(rank, world, port, out):
    """ShardedLoss on a least-squares loss over rows split across the ranks: the bytes it sends,
    a non-finite loss on one rank, and ranks whose seeds differ."""
    setup(rank, world, port)
    results = {}
    for d, checked in ((8, True), (4000, True), (8, False)):
        A = torch.randn(64, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        mine = sz.distributed.shard(64)
        p = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
        opt = sz.optim.ZOSGD([p], lr=0.01, seed=0)
        closure = sz.distributed.ShardedLoss(lambda: ((A[mine] @ p - 1) ** 2).mean(),
                                             weight=(mine.stop - mine.start) / 64,
                                             params=[p] if checked else None)
        for _ in range(3):
            opt.step(closure)
        results[d, checked] = {"bytes": closure.stats.bytes_sent,
                               "collectives": closure.stats.collectives, "p": p.detach().clone()}
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    try:  # rank 1's loss is NaN: every rank's sum is
        sz.optim.ZOSGD([p], lr=0.1, seed=0).step(sz.distributed.ShardedLoss(
            lambda: torch.tensor(float("nan") if rank == 1 else 1.0), 0.5, [p]))
    except ValueError as error:
        results["nan"] = {"error": str(error), "unchanged": bool((p == 1).all())}
    try:
        sz.optim.ZOSGD([p], lr=0.1, seed=rank).step(sz.distributed.ShardedLoss(
            lambda: (p ** 2).sum(), 0.5, [p]))
    except sz.distributed.DistributedError as error:
        results["diverged"] = str(error)
    torch.save(results, f"{out}/rank{rank}.pt")
    sz.distributed.finish()  # Note [Ending a distributed run]
