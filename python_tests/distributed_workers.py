"""Bodies of the processes the distributed tests spawn (importable by the children)."""

import datetime
import os
import time

import torch
import torch.distributed as dist

import sharpzo_ext as sz


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
