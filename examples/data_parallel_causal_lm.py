"""Data-parallel forward-only fine-tuning of a causal language model: every process evaluates its
part of each batch, only losses cross the network, and every process takes the same step.

    torchrun --nproc-per-node 2 examples/data_parallel_causal_lm.py --tiny
    torchrun --nproc-per-node 2 examples/data_parallel_causal_lm.py --tiny --optimizer sparsezo
    python examples/data_parallel_causal_lm.py --tiny      # one process: the plain loop

Every process builds the same model and optimizer (the same seed), draws the same batches and
keeps its contiguous block of sequences. sharpzo_ext.distributed.ShardedLoss turns the loss of
that block into the loss of the whole batch on every process (Note [Sharded closures] in
sharpzo_ext/distributed.py), so the optimizer, which perturbs the weights in place and calls
the closure, steps every copy of the model the same way: the processes end with the same
weights, bit for bit. The model, data and optimizers are examples/finetune_causal_lm.py's.
"""

from __future__ import annotations

import argparse

import torch

import sharpzo_ext as sz
from finetune_causal_lm import (ExampleError, OneLineParser, check_length, check_run_args,
                                learning_rate, lm_loss, make_optimizer, run_arguments, run_main,
                                tiny_batches, tiny_model)


def train(args) -> tuple[torch.nn.Module, list[float]]:
    """Runs the fine-tuning on this process's part of every batch (the process group already
    initialized, or a single process); returns the model and the loss of every step, the loss
    over the whole batch, the same on every process."""
    rank, world = sz.distributed.init()
    if args.batch < world:
        raise ExampleError(f"--batch {args.batch} is less than the {world} processes: each needs "
                           "at least one sequence")
    model = tiny_model(args.seed)
    check_length(model, args.length)
    model = model.eval()  # eval: no dropout, so both points see the same network
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(args.optimizer, params, learning_rate(args), args.eps,
                               args.seed)
    batches = tiny_batches(args.batch, args.length, args.seed)  # the same on every process
    mine = sz.distributed.shard(args.batch)
    weight = (mine.stop - mine.start) / args.batch
    losses = []
    for step in range(args.steps):
        tokens = next(batches)[mine]
        closure = sz.distributed.ShardedLoss(lambda: lm_loss(model, tokens), weight, params)
        losses.append(float(optimizer.step(closure)))  # forward passes only
        if rank == 0 and not args.quiet and (step + 1) % 50 == 0:
            print(f"step {step + 1}: loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    return model, losses


def parser() -> argparse.ArgumentParser:
    return run_arguments(OneLineParser(description=__doc__.split("\n\n")[0]), hub=False)


def train_and_finish(args) -> None:
    """train, then the end of the distributed run (Note [Ending a distributed run])."""
    try:
        train(args)
    except BaseException:
        sz.distributed.finish(wait=False)
        raise
    sz.distributed.finish()


def main(argv=None) -> None:
    run_main(argv, parser(), check_run_args, train_and_finish)


if __name__ == "__main__":
    main()
