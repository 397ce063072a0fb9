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
import sys
from pathlib import Path

import torch

from finetune_causal_lm import ExampleError, check_length, make_optimizer, tiny_batches, \
    tiny_model, with_lora
from sharpzo_ext.ops import checks


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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(args.model)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        raise ExampleError(f"cannot load --model {args.model}: "
                           f"{str(error).splitlines()[0]}") from None
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
    lr = args.lr if args.lr is not None else (1e-2 if args.tiny else 1e-6)
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


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as sharpzo-ext's command line says it
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="facebook/opt-125m", help="a causal LM name or directory")
    p.add_argument("--text", help="a text file to fine-tune on (not with --tiny)")
    p.add_argument("--tiny", action="store_true", help="a tiny random OPT on counting sequences")
    p.add_argument("--output", required=True, help="Trainer's output directory (checkpoints)")
    p.add_argument("--resume", action="store_true", help="go on from the last checkpoint in "
                   "--output, if there is one")
    p.add_argument("--optimizer", choices=("zosgd", "sparsezo"), default="zosgd")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only (peft)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="of the weights")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-6, or 1e-2 with --tiny")
    p.add_argument("--eps", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=8, help="sequences per micro-batch")
    p.add_argument("--accumulation", type=int, default=1, help="micro-batches per step, "
                   "evaluated at the same perturbed points")
    p.add_argument("--length", type=int, default=32, help="tokens per sequence")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-steps", type=int, default=100)
    p.add_argument("--log-steps", type=int, default=50)
    p.add_argument("--quiet", action="store_true")
    return p


def check_args(args) -> None:
    """Raises ExampleError naming the first argument out of its range."""
    try:
        for name, least in (("steps", 1), ("batch", 1), ("accumulation", 1), ("length", 2),
                            ("save_steps", 1), ("log_steps", 1)):
            checks.integer(getattr(args, name), name, least)
        checks.stream_integer(args.seed, "seed")
        if args.lr is not None:
            checks.real(args.lr, "lr", nonnegative=True)
        checks.real(args.eps, "eps", positive=True)
    except (TypeError, ValueError) as error:
        raise ExampleError(f"--{str(error).replace('_', '-')}") from None
    if not args.tiny and not args.text:
        raise ExampleError("--text FILE is needed unless --tiny")


def main(argv=None) -> None:
    from sharpzo_ext.errors import UserError

    args = parser().parse_args(argv)
    try:
        check_args(args)
        finetune(args)
    except (ExampleError, UserError) as error:  # UserError: what ZOTrainer refuses
        print(f"{parser().prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
