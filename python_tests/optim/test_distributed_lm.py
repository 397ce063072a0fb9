"""Data-parallel forward-only training of a language model with ShardedLoss: two CPU processes
with gloo, each on its part of every batch of the tiny OPT (examples/data_parallel_causal_lm.py),
against one process; what ShardedLoss sends, and what it does when a rank's loss is not finite or
the ranks diverged."""

import importlib.util
import math
import sys

import pytest
import torch

import sharpzo_ext as sz
import distributed_workers as workers
from test_distributed import spawn

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")

# 5 sequences: rank 0 evaluates 3 of them, rank 1 the other 2 (weights 3/5 and 2/5)
ARGV = ["--steps", "16", "--batch", "5", "--length", "16"]
# Two processes against one process over the whole batch: the loss is a weighted sum of two
# shard means instead of one mean, and a forward on 3 sequences rounds differently from one on
# 5, so the float32 losses differ by an ulp or so. ZOSGD divides loss differences by 2 eps, so
# that rounding moves its steps, and the runs drift apart: measured on an x86-64 CPU after
# ARGV's 16 steps, weights (of magnitude up to 1.1) within 5.2e-5 and losses within 6.5e-6
# relative (8e-3 and 5e-4 after 100 steps); SparseZO's normalized steps within 1.2e-7 and
# 8.2e-8. Shards weighted 1/2 each instead of 3/5 and 2/5 (a bug) move the weights by 3.5e-2
# (ZOSGD) and 0.12 (SparseZO), far beyond the tolerances.
WEIGHTS_ATOL, LOSS_RTOL = 1e-3, 1e-4


def _example():
    """examples/data_parallel_causal_lm.py as a module (examples/ on the path while it loads: it
    imports finetune_causal_lm's helpers)."""
    spec = importlib.util.spec_from_file_location(
        "data_parallel_causal_lm", workers.EXAMPLES / "data_parallel_causal_lm.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(workers.EXAMPLES))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(workers.EXAMPLES))
    return module


@pytest.fixture(scope="module")
def example():
    pytest.importorskip("transformers")
    return _example()


def one_process(example, optimizer: str, sum_of_shards: bool) -> dict:
    """The example's run in this process: the closure is either the loss of the whole batch, or
    the two shards' losses weighted and added in rank order, as ShardedLoss adds them."""
    args = example.parser().parse_args(["--tiny", "--optimizer", optimizer, *ARGV])
    model = example.tiny_model(args.seed).eval()
    opt = example.make_optimizer(optimizer, list(model.parameters()), example.learning_rate(args),
                                 args.eps, args.seed)
    batches = example.tiny_batches(args.batch, args.length, args.seed)
    blocks = [sz.distributed.shard_of(args.batch, rank, 2) for rank in (0, 1)]

    def shards() -> float:
        total = 0.0
        for block in blocks:
            total += (float(example.lm_loss(model, tokens[block]))
                      * ((block.stop - block.start) / args.batch))
        return total

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers
    losses = []
    try:
        for _ in range(args.steps):
            tokens = next(batches)
            closure = shards if sum_of_shards else (lambda: example.lm_loss(model, tokens))
            losses.append(float(opt.step(closure)))
    finally:
        torch.set_num_threads(threads)
    return {"losses": losses, "weights": {n: p.detach().clone() for n, p in
                                          model.named_parameters()}}


@pytest.fixture(scope="module")
def two_processes(example, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    assert spawn(workers.lm_data_parallel, 2, str(out), ARGV, timeout=300) == [0, 0]
    return [torch.load(out / f"rank{rank}.pt") for rank in (0, 1)]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["zosgd", "sparsezo"])
def test_two_processes_step_as_one_that_sums_their_shards_bit_for_bit(example, two_processes,
                                                                      optimizer):
    rank0, rank1 = (run[optimizer] for run in two_processes)
    assert rank0["losses"] == rank1["losses"]
    assert _equal(rank0["weights"], rank1["weights"])  # every rank: the same model
    reference = one_process(example, optimizer, sum_of_shards=True)
    assert rank0["losses"] == reference["losses"]
    assert _equal(rank0["weights"], reference["weights"])


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["zosgd", "sparsezo"])
def test_two_processes_match_one_over_the_whole_batch_within_rounding(example, two_processes,
                                                                      optimizer):
    two = two_processes[0][optimizer]
    whole = one_process(example, optimizer, sum_of_shards=False)
    worst = max(float((two["weights"][k] - v).abs().max()) for k, v in whole["weights"].items())
    assert worst <= WEIGHTS_ATOL
    assert all(math.isclose(a, b, rel_tol=LOSS_RTOL) for a, b in zip(two["losses"],
                                                                     whole["losses"]))
    assert two["losses"] != whole["losses"]  # not bit for bit: hence the tolerance


@pytest.mark.slow
def test_sharded_loss_sends_a_loss_and_a_checksum_and_stops_every_rank_together(tmp_path):
    assert spawn(workers.sharded_closure, 2, str(tmp_path)) == [0, 0]
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1))
    for run in ((8, True), (4000, True), (8, False)):
        assert torch.equal(rank0[run]["p"], rank1[run]["p"])
        assert rank0[run]["collectives"] == 3 * 2  # one per evaluation
    # a float64 loss and a float64 checksum to the one peer per evaluation, whatever d;
    # without params, the loss alone
    assert rank0[8, True]["bytes"] == rank0[4000, True]["bytes"] == 6 * (1 + 1) * 8
    assert rank0[8, False]["bytes"] == 6 * 8
    for result in (rank0, rank1):
        assert "non-finite loss" in result["nan"]["error"] and result["nan"]["unchanged"]
        assert "the ranks' parameters differ" in result["diverged"]
        assert "optimizer states diverged" in result["diverged"]


def test_in_one_process_the_closure_is_called_as_it_is():
    torch.manual_seed(0)
    target = torch.randn(6, dtype=torch.float64)
    runs = []
    for wrap in (False, True):
        p = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
        opt = sz.optim.ZOSGD([p], lr=0.1, seed=0)

        def loss():
            return ((p - target) ** 2).sum()

        for _ in range(5):
            opt.step(sz.distributed.ShardedLoss(loss, 0.5, [p]) if wrap else loss)
        runs.append(p.detach().clone())
    assert torch.equal(*runs)
    sentinel = torch.tensor(2.5)
    assert sz.distributed.ShardedLoss(lambda: sentinel, 0.5)() is sentinel  # weight unused


@pytest.mark.parametrize("make, error, message", [
    (lambda: sz.distributed.ShardedLoss(sz.optim.Population(lambda X: X.sum(1)), 1.0), TypeError,
     "for a Population objective use DataShard"),
    (lambda: sz.distributed.ShardedLoss(3.0, 1.0), TypeError, "needs a callable closure, got float"),
    (lambda: sz.distributed.ShardedLoss(lambda: 0.0, -1), ValueError, "weight must be finite >= 0"),
    (lambda: sz.distributed.ShardedLoss(lambda: 0.0, float("nan")), ValueError,
     "weight must be finite"),
    (lambda: sz.distributed.ShardedLoss(lambda: 0.0, "1"), TypeError, "weight must be a number"),
    (lambda: sz.distributed.ShardedLoss(lambda: 0.0, 1.0, params=[]), ValueError,
     "params is empty"),
    (lambda: sz.distributed.ShardedLoss(lambda: 0.0, 1.0, params=[{"params": []}]), TypeError,
     "params must be tensors, got dict"),
])
def test_bad_arguments_are_refused_by_name(make, error, message):
    with pytest.raises(error, match=message):
        make()
