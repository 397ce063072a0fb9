"""Fine-tune a Hugging Face causal language model with transformers.Trainer and forward passes
only: sharpzo_ext's ZOTrainer with ZOSGD or SparseZO, a cosine schedule, gradient accumulation,
checkpoints and resume, every weight or LoRA adapters, in float32 or bfloat16.

    python examples/trainer_causal_lm.py --model facebook/opt-125m --text corpus.txt --output opt
    python examples/trainer_causal_lm.py --tiny --output tiny    # a tiny random OPT, no download
    python examples/trainer_causal_lm.py --tiny --lora --dtype bf16 --output tiny
    python examples/trainer_causal_lm.py --tiny --output tiny --resume    # from its last checkpoint

examples/finetune_causal_lm.py is the same fine-tuning as a plain loop (its tiny model and LoRA
adapters are used here). What the Trainer path adds and refuses: docs of
sharpzo_ext.integrations.transformers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from finetune_causal_lm import (ExampleError, OneLineParser, check_length, check_run_args,
                                hub_model, learning_rate, make_optimizer, run_arguments, run_main,
                                tiny_batches, tiny_model, with_lora)


class Sequences(torch.utils.data.Dataset):
    """Token sequences (rows of a tensor), each its own labels: the causal-LM loss shifts them."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


def text_sequences(tokenizer, path: Path, length: int) -> torch.Tensor:
    """The text file at `path`, tokenized and cut into sequences of `length` tokens."""
    try:
        ids = torch.tensor(tokenizer(path.read_text())["input_ids"])
    except (OSError, UnicodeDecodeError) as error:
        raise ExampleError(f"cannot read --text {path}: {error}") from None
    if ids.numel() < length:
        raise ExampleError(f"{path} holds {ids.numel()} tokens, fewer than --length {length}")
    return ids[:ids.numel() // length * length].view(-1, length)


def model_and_data(args) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model (random with --tiny, else --model) and the training sequences."""
    if args.tiny:  # as many counting sequences as the run draws: one epoch
        model = tiny_model(args.seed)
        count = args.steps * args.accumulation
        batches = tiny_batches(args.batch, args.length, args.seed)
        return model, torch.cat([next(batches) for _ in range(count)])
    model, tokenizer = hub_model(args.model)
    return model, text_sequences(tokenizer, Path(args.text), args.length)


def finetune(args) -> list[float]:
    """Runs the fine-tuning the arguments describe; returns the loss Trainer logged at every
    --log-steps step."""
    from transformers import PrinterCallback, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from sharpzo_ext.integrations.transformers import ZOTrainer

    model, rows = model_and_data(args)
    check_length(model, args.length)
    model = model.to({"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype])
    if args.lora:
        model = with_lora(model)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = learning_rate(args)
    training = TrainingArguments(
        args.output, max_steps=args.steps, per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=args.accumulation, learning_rate=lr,
        lr_scheduler_type="cosine", max_grad_norm=0,  # no gradient to clip
        save_steps=args.save_steps, logging_steps=args.log_steps, seed=args.seed,
        report_to="none", disable_tqdm=args.quiet,
        dataloader_pin_memory=torch.cuda.is_available())  # pinning needs a GPU
    trainer = ZOTrainer(model=model, args=training, train_dataset=Sequences(rows),
                        optimizers=(make_optimizer(args.optimizer, params, lr, args.eps,
                                                   args.seed), None))
    if args.quiet:
        trainer.remove_callback(PrinterCallback)
    checkpoint = get_last_checkpoint(args.output) if args.resume else None  # Trainer made --output
    trainer.train(resume_from_checkpoint=checkpoint)
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def parser() -> argparse.ArgumentParser:
    p = run_arguments(OneLineParser(description=__doc__.split("\n\n")[0]))
    p.add_argument("--output", required=True, help="Trainer's output directory (checkpoints)")
    p.add_argument("--resume", action="store_true", help="go on from the last checkpoint in "
                   "--output, if there is one")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only (peft)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="of the weights")
    p.add_argument("--accumulation", type=int, default=1, help="micro-batches per step, "
                   "evaluated at the same perturbed points (--batch sequences each)")
    p.add_argument("--save-steps", type=int, default=100)
    p.add_argument("--log-steps", type=int, default=50)
    return p


def check_args(args) -> None:
    """Raises ExampleError naming the first argument out of its range."""
    check_run_args(args, "accumulation", "save_steps", "log_steps")


def main(argv=None) -> None:
    from sharpzo_ext.errors import UserError  # what ZOTrainer refuses

    run_main(argv, parser(), check_args, finetune, (ExampleError, UserError))


if __name__ == "__main__":
    main()
