"""Two CPU processes with gloo: the distributed wrappers against a single process, the bytes they
send, and what happens when a peer dies or the ranks diverge."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

import distributed_workers as workers

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, world, *args, timeout=120):
    """Runs fn(rank, world, port, *args) in `world` fresh processes; returns their exit codes
    (each process is waited for on its own: one failing does not kill the others)."""
    port = free_port()
    context = mp.get_context("spawn")
    processes = [context.Process(target=fn, args=(rank, world, port, *args))
                 for rank in range(world)]
    for process in processes:
        process.start()
    deadline = time.time() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.time()))
    codes = [process.exitcode for process in processes]
    for process in processes:
        if process.is_alive():
            process.kill()
    return codes


@pytest.mark.slow
def test_population_sharding_equals_one_process_bit_for_bit(tmp_path):
    for world in (1, 2):
        (tmp_path / str(world)).mkdir()
        assert spawn(workers.cmaes_population, world, str(tmp_path / str(world)), 20) == [0] * world
    one = torch.load(tmp_path / "1" / "rank0.pt")
    two = [torch.load(tmp_path / "2" / f"rank{r}.pt") for r in (0, 1)]
    assert torch.equal(two[0]["mean"], two[1]["mean"])  # every rank: the same state
    assert torch.equal(two[0]["mean"], one["mean"])     # and the single process's
    assert one["bytes"] == 0


@pytest.mark.slow
def test_bytes_per_step_are_of_order_popsize_not_d(tmp_path):
    sent = {}
    for d in (8, 4000):
        (tmp_path / str(d)).mkdir()
        assert spawn(workers.cmaes_population, 2, str(tmp_path / str(d)), d) == [0, 0]
        result = torch.load(tmp_path / str(d) / "rank0.pt")
        sent[d] = result["bytes"] / result["collectives"]
    # popsize 10 over 2 ranks: 5 losses + 1 checksum, float64, to 1 peer
    assert sent[8] == sent[4000] == (5 + 1) * 8


@pytest.mark.slow
def test_data_sharding_matches_one_process_within_rounding(tmp_path):
    for world in (1, 2):
        (tmp_path / str(world)).mkdir()
        assert spawn(workers.zosgd_data, world, str(tmp_path / str(world))) == [0] * world
    one = torch.load(tmp_path / "1" / "rank0.pt")["w"]
    two = [torch.load(tmp_path / "2" / f"rank{r}.pt")["w"] for r in (0, 1)]
    assert torch.equal(two[0], two[1])
    # the loss is a mean of two half means instead of one mean: equal up to float64 rounding
    assert torch.allclose(two[0], one, rtol=1e-9, atol=1e-12)


def test_a_dead_rank_stops_the_others_with_a_clear_error(tmp_path):
    start = time.time()
    assert spawn(workers.dies, 2, str(tmp_path), timeout=60) == [3, 1]  # 3: caught the error
    assert time.time() - start < 60
    seconds, message = (tmp_path / "rank0.txt").read_text().split("\n", 1)
    assert "rank 0 of 2: a peer stopped answering" in message
    assert float(seconds) < 30  # the 10 s timeout at most, not a hang


def test_diverged_ranks_are_detected(tmp_path):
    assert spawn(workers.diverged, 2, str(tmp_path)) == [0, 0]
    for r in (0, 1):
        assert "optimizer states diverged" in (tmp_path / f"rank{r}.txt").read_text()


@pytest.mark.slow
def test_torchrun_train_equals_a_single_process_run(tmp_path):
    cache = str(tmp_path / "cache")
    common = ["train", "--method", "cmaes", "--budget", "400", "--eval-every", "100",
              "--cache-dir", cache, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "sharpzo_ext", *common, "--out",
                             str(tmp_path / "one")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={free_port()}", "-m", "sharpzo_ext", *common, "--out",
         str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr  # all of it: a rank's own error comes first
    a = json.loads((tmp_path / "one" / "summary.json").read_text())
    b = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert b["processes"] == 2 and a["processes"] == 1
    for key in ("forward_passes", "selected_at_forward_passes"):
        assert a[key] == b[key]
    assert abs(a["test_acc"] - b["test_acc"]) <= 0.01
