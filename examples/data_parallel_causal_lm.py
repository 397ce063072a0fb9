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
import sys

import torch

import sharpzo_ext as sz
from finetune_causal_lm import (ExampleError, check_length, lm_loss, make_optimizer, tiny_batches,
                                tiny_model)
from sharpzo_ext.ops import checks


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
    optimizer = make_optimizer(args.optimizer, params, args.lr, args.eps, args.seed)
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


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as sharpzo-ext's command line says it
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", required=True,
                   help="the tiny random OPT on counting sequences (to fine-tune a Hugging Face "
                        "model, load it as finetune_causal_lm.py does)")
    p.add_argument("--optimizer", choices=("zosgd", "sparsezo"), default="zosgd")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--eps", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=8, help="sequences per step, over all processes")
    p.add_argument("--length", type=int, default=32, help="tokens per sequence (2 or more, "
                   "within the model's positions)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


def check(args) -> None:
    """Raises ExampleError naming the first argument out of its range."""
    try:
        for name, least in (("steps", 1), ("batch", 1), ("length", 2)):
            checks.integer(getattr(args, name), name, least)
        checks.stream_integer(args.seed, "seed")
        checks.real(args.lr, "lr", nonnegative=True)
        checks.real(args.eps, "eps", positive=True)
    except (TypeError, ValueError) as error:
        raise ExampleError(f"--{error}") from None


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    try:
        check(args)
        train(args)
    except BaseException as error:
        sz.distributed.finish(wait=False)  # Note [Ending a distributed run]
        if isinstance(error, ExampleError):
            print(f"{parser().prog}: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    sz.distributed.finish()


if __name__ == "__main__":
    main()
