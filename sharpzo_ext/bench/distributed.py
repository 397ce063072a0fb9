"""SharpZO stage-1 generations on the embedded task in 1 and 2 processes (gloo, population
sharding): time per generation and bytes sent per generation.

With 2 processes each runs 1 thread (as torchrun sets it), against 1 process with 2 threads:
on one 2-core machine this compares splitting the population across processes with splitting
each forward across threads. Across machines, population sharding adds machines' cores while
sending O(popsize) numbers per generation.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
import time

import torch

from sharpzo_ext.bench.common import BenchConfig, Suite, markdown_table

POPSIZES = (20, 40)


def _worker(rank: int, world: int, port: int, out: str, popsize: int, generations: int,
            cache_dir: str) -> None:
    import torch.distributed as dist  # noqa: PLC0415
    from torch.utils.benchmark import Timer  # noqa: PLC0415

    import sharpzo_ext as sz  # noqa: PLC0415
    from sharpzo_ext.clip.runs.config import TrainConfig  # noqa: PLC0415
    from sharpzo_ext.clip.runs.prepare import prepare  # noqa: PLC0415

    torch.set_num_threads(2 // world)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=120))
    p = prepare(TrainConfig(cache_dir=cache_dir), progress=False)
    w = torch.nn.Parameter(p.task.zero_vector())
    opt = sz.optim.SharpZO([w], popsize=popsize, switch_step=10**6, seed=0)
    closure = sz.distributed.PopulationShard(p.task.objective(p.features["train"],
                                                              p.labels["train"]))
    opt.step(closure)  # warm-up
    timer = Timer(stmt="opt.step(closure)", globals={"opt": opt, "closure": closure},
                  num_threads=torch.get_num_threads())
    measurement = timer.timeit(generations)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"ms_per_generation": measurement.median * 1e3,
                       "bytes_per_generation": closure.stats.bytes_sent
                       / max(1, closure.stats.collectives) * 2}, f)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(config: BenchConfig) -> Suite:
    import torch.multiprocessing as mp  # noqa: PLC0415

    generations = 20 if config.quick else 100
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        for popsize in POPSIZES:
            times = {}
            for world in (1, 2):
                out = os.path.join(tmp, f"{popsize}-{world}.json")
                context = mp.get_context("spawn")
                port = _free_port()
                processes = [context.Process(target=_worker, args=(
                    rank, world, port, out, popsize, generations, cache)) for rank in range(world)]
                start = time.time()
                for process in processes:
                    process.start()
                for process in processes:
                    process.join(600)
                if any(process.exitcode != 0 for process in processes):
                    raise RuntimeError(f"a benchmark process failed (exit codes "
                                       f"{[process.exitcode for process in processes]})")
                with open(out) as f:
                    result = json.load(f)
                times[world] = result["ms_per_generation"]
                records.append({"popsize": popsize, "processes": world, **result,
                                "wall_s": time.time() - start})
                if world == 2:
                    sent = result["bytes_per_generation"]
            rows.append([popsize, f"{times[1]:.2f}", f"{times[2]:.2f}",
                         f"{times[1] / times[2]:.2f}x", f"{sent:.0f}"])
    header = ["popsize", "1 process x 2 threads ms", "2 processes x 1 thread ms",
              "speed-up", "bytes sent per generation per process"]
    table = markdown_table(header, rows)
    return Suite("distributed", "SharpZO stage-1 generation (popsize + 4 forward passes), "
                 "embedded task, gloo on one machine:\n\n" + table, records, [])
