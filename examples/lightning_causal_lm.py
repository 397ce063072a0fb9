"""Fine-tune a causal language model with forward passes only inside PyTorch Lightning: a
LightningModule with manual optimization steps sharpzo_ext's ZOSGD or SparseZO with a loss
closure (MeZO's recipe), with Lightning's logging and checkpoints.

    python examples/lightning_causal_lm.py --tiny                      # a tiny random OPT
    python examples/lightning_causal_lm.py --tiny --optimizer sparsezo
    python examples/lightning_causal_lm.py --tiny --steps 600 --resume runs/lm.ckpt

The model, the data and the optimizers are examples/finetune_causal_lm.py's (imported, not
copied); the same arguments give the same losses and weights as its plain loop, bit for bit
(python_tests/examples/test_lightning_causal_lm.py). Needs `pip install pytorch-lightning`
(or `lightning`, which brings it).

Note [Forward-only steps in Lightning]
Lightning's automatic optimization calls backward on what training_step returns, so the module
sets automatic_optimization = False and steps the optimizer itself: `opt.step(closure)` with a
closure that returns the float32 loss of the batch, under no_grad, and no backward anywhere.
Lightning passes the closure on to the optimizer's step (wrapped so that its
on_before_optimizer_step hooks run after each call); ZOSGD calls it 2q times a step, at the
perturbed weights, so those hooks run 2q times a step too, and gradient clipping and
accumulation have nothing to act on. The LR scheduler is stepped by hand once per step, as
manual optimization asks. Lightning's checkpoints hold the optimizer's state_dict() (its seed
and step counter: the directions of the steps still to come) and the scheduler's, so a resumed
run goes on bit for bit.

Note [Batches by step]
The batches are a stream drawn in order (finetune_causal_lm.tiny_batches). A resumed run starts
the stream at the step it restored, skipping the draws the saved run had made, as the plain loop
does: a plain iterable that Lightning resumes mid-epoch would start again from its first batch,
and a stateful one would have to know how many batches Lightning had prefetched when it saved.
"""

from __future__ import annotations

import argparse
import itertools
import math
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from finetune_causal_lm import (ExampleError, OneLineParser, check_length, check_run_args,
                                learning_rate, lm_loss, make_optimizer, run_arguments, run_main,
                                tiny_batches, tiny_model, with_lora)

# What a resume may change: the other hyperparameters must be the saved run's.
MAY_CHANGE = ("steps",)


class ForwardOnlyLM(pl.LightningModule):
    """The tiny OPT of finetune_causal_lm.py trained by a forward-only optimizer under manual
    optimization (Note [Forward-only steps in Lightning]). ``losses`` holds the loss estimate of
    every step this module ran."""

    def __init__(self, optimizer: str = "zosgd", lr: float = 1e-2, eps: float = 1e-3,
                 steps: int = 500, batch: int = 8, length: int = 32, seed: int = 0,
                 lora: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        model = tiny_model(seed)
        check_length(model, length)
        model = model.eval()  # eval: no dropout, so both points see the same network
        self.model = with_lora(model) if lora else model
        self.losses: list[float] = []

    def configure_optimizers(self) -> dict:
        h = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = make_optimizer(h.optimizer, params, h.lr, h.eps, h.seed)
        scheduler = torch.optim.lr_scheduler.LambdaLR(  # cosine decay to a tenth
            optimizer, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * min(s / h.steps, 1))))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def train_dataloader(self):
        """The batches from the step the run is at (Note [Batches by step])."""
        h = self.hparams
        return itertools.islice(tiny_batches(h.batch, h.length, h.seed),
                                self.trainer.global_step, None)

    def training_step(self, tokens: torch.Tensor, batch_idx: int) -> torch.Tensor:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        with torch.no_grad():  # forward passes only (the optimizer's step is no_grad as well)
            loss = optimizer.step(lambda: lm_loss(self.model, tokens))
        scheduler.step()
        self.log("loss", loss, prog_bar=True)
        self.losses.append(float(loss))
        return loss

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuses a checkpoint of a run with other hyperparameters (only --steps may change),
        before anything is loaded."""
        saved = checkpoint.get("hyper_parameters")
        for name, value in self.hparams.items():
            if name not in MAY_CHANGE and (not isinstance(saved, dict) or saved.get(name) != value):
                was = saved.get(name) if isinstance(saved, dict) else None
                raise ExampleError(f"the checkpoint was run with --{name} {was!r}, not {value!r};"
                                   " a resume goes on as the run was (only --steps and "
                                   "--save-every may change)")


def train(args, **trainer_options) -> ForwardOnlyLM:
    """Runs the fine-tuning the arguments describe under a Lightning Trainer (its options
    overridden by `trainer_options`); returns the module, with the loss of every step it ran."""
    module = ForwardOnlyLM(args.optimizer, learning_rate(args), args.eps, args.steps, args.batch,
                           args.length, args.seed, args.lora)
    checkpoint = Path(args.resume) if args.resume else None
    callbacks = [] if checkpoint is None else [ModelCheckpoint(
        dirpath=checkpoint.parent, filename=checkpoint.stem, every_n_train_steps=args.save_every,
        save_top_k=1, enable_version_counter=False)]  # one file, overwritten
    options = {"max_steps": args.steps, "callbacks": callbacks,
               "enable_checkpointing": checkpoint is not None,
               "enable_progress_bar": not args.quiet, "enable_model_summary": not args.quiet,
               **trainer_options}
    trainer = pl.Trainer(**options)
    with warnings.catch_warnings():
        # the model is in eval mode on purpose (no dropout); a checkpoint holds the state after
        # its step, as it should (the optimizer's counters and global_step are after it too);
        # and the checkpoint's folder may hold other files
        warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode")
        warnings.filterwarnings("ignore", "Using ModelCheckpoint with manual optimization")
        warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
        trainer.fit(module, ckpt_path=checkpoint if checkpoint and checkpoint.exists() else None,
                    weights_only=True)
    return module


def parser() -> argparse.ArgumentParser:
    p = run_arguments(OneLineParser(description=__doc__.split("\n\n")[0]), hub=False)
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only (peft)")
    p.add_argument("--resume", metavar="FILE.ckpt",
                   help="Lightning checkpoint to continue from and save to")
    p.add_argument("--save-every", type=int, default=100)
    return p


def check(args) -> None:
    """Raises ExampleError naming the first argument out of its range."""
    check_run_args(args, "save_every")
    if args.resume and Path(args.resume).suffix != ".ckpt":
        raise ExampleError(f"--resume {args.resume} must end in .ckpt (Lightning names its "
                           "checkpoints so)")


def main(argv=None) -> None:
    run_main(argv, parser(), check, train)


if __name__ == "__main__":
    main()
