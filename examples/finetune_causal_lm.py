"""Fine-tune a Hugging Face causal language model with forward passes only: sharpzo_ext's ZOSGD
or SparseZO as a drop-in torch.optim optimizer (MeZO's recipe), with a learning-rate schedule,
checkpoints and resume, every weight or LoRA adapters, in float32 or bfloat16.

    python examples/finetune_causal_lm.py --model facebook/opt-125m --text corpus.txt
    python examples/finetune_causal_lm.py --tiny              # a tiny random model, no download
    python examples/finetune_causal_lm.py --tiny --lora       # LoRA adapters (pip install peft)
    python examples/finetune_causal_lm.py --tiny --dtype bf16
    python examples/finetune_causal_lm.py --tiny --steps 600 --resume runs/lm.pt

What makes it work in low precision (docs/optimizers.md, "Low precision"):
- the closure returns the loss in float32 (the logits are upcast before the cross-entropy): a
  loss rounded to bfloat16 has 8 significant bits, and the two losses of a two-point estimate
  then often round to the same value, which gives a zero step;
- the optimizer perturbs the weights in place in float32 arithmetic, rounded once, and restores
  them bitwise from a copy (exception_safe, the default).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import sharpzo_ext as sz
from sharpzo_ext import loaded
from sharpzo_ext.ops import checks
from sharpzo_ext.files import atomic_path

TINY = {"vocab_size": 32, "hidden_size": 16, "num_hidden_layers": 1, "ffn_dim": 32,
        "num_attention_heads": 2, "max_position_embeddings": 64, "word_embed_proj_dim": 16,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def tiny_model(seed: int) -> torch.nn.Module:
    """A one-layer OPT with random weights (the test's model: nothing is downloaded)."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    return OPTForCausalLM(OPTConfig(**TINY))


def tiny_batches(batch: int, length: int, seed: int):
    """Token sequences that count up modulo the vocabulary from a random start: learnable from
    the previous token alone."""
    g = torch.Generator().manual_seed(seed)
    vocab = TINY["vocab_size"]
    while True:
        start = torch.randint(3, vocab, (batch, 1), generator=g)
        yield 3 + (start - 3 + torch.arange(length)) % (vocab - 3)


def text_batches(tokenizer, path: Path, batch: int, length: int, seed: int):
    """Random windows of `length` tokens of the text file at `path`."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ExampleError(f"cannot read --text {path}: {error}") from None
    ids = torch.tensor(tokenizer(text)["input_ids"])
    if ids.numel() <= length:
        raise ExampleError(f"{path} holds {ids.numel()} tokens, fewer than --length {length}")
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, ids.numel() - length, (batch,), generator=g)
        yield torch.stack([ids[s:s + length] for s in starts.tolist()])


def hub_model(name: str):
    """(the causal LM, its tokenizer) of a Hugging Face name or directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        return (AutoModelForCausalLM.from_pretrained(name), AutoTokenizer.from_pretrained(name))
    except (OSError, ValueError) as error:
        raise ExampleError(f"cannot load --model {name}: {str(error).splitlines()[0]}") from None


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, computed in float32 whatever the model's dtype."""
    logits = model(input_ids=tokens).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def with_lora(model: torch.nn.Module) -> torch.nn.Module:
    """LoRA adapters of rank 8 on every linear layer of the blocks; only they train."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                            target_modules=["q_proj", "k_proj", "v_proj",
                                                            "out_proj", "fc1", "fc2"]))


def make_optimizer(name: str, params, lr: float, eps: float, seed: int):
    if name == "zosgd":
        return sz.optim.ZOSGD(params, lr=lr, eps=eps, seed=seed)
    return sz.optim.SparseZO(params, lr=lr, eps=eps, density=0.1, seed=seed)


# What a checkpoint records of its run: a resume must agree on every one of them (the run
# goes on as it was; only --steps, --save-every and --quiet may change).
RECORDED = ("model", "text", "tiny", "optimizer", "lora", "dtype", "lr", "eps", "batch",
            "length", "seed")


class ExampleError(Exception):
    """What the example refuses, in one line (main prints it and exits with status 2)."""


def save(path: Path, optimizer, scheduler, model, step: int, args) -> None:
    """A checkpoint, written to a temporary file and renamed: a crash never leaves half of one."""
    with atomic_path(path) as tmp:
        torch.save({"step": step, "weights": trained_weights(model),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "args": {k: getattr(args, k) for k in RECORDED}}, tmp)


def trained_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights the run trains (all of them, or the LoRA adapters), by name."""
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in trained}


def read_checkpoint(path: Path, model: torch.nn.Module, args) -> dict:
    """The checkpoint at `path`, checked whole before anything is loaded (sharpzo_ext's rule for
    loaded files): the run's arguments, and every trained weight of its name, shape and dtype
    with finite values. Raises ExampleError saying what does not fit."""
    try:
        state = torch.load(path, weights_only=True)
    except Exception as error:  # noqa: BLE001 (truncated, not a checkpoint: one error)
        raise ExampleError(f"cannot read the checkpoint {path} (damaged?): "
                           f"{(str(error).splitlines() or [type(error).__name__])[0]}") from None
    if not isinstance(state, dict) or not {"step", "weights", "optimizer", "scheduler",
                                           "args"} <= set(state):
        raise ExampleError(f"{path} is not a checkpoint of this example")
    saved = state["args"]
    for name in RECORDED:
        if not isinstance(saved, dict) or saved.get(name) != getattr(args, name):
            was = saved.get(name) if isinstance(saved, dict) else None
            raise ExampleError(f"{path} was run with --{name.replace('_', '-')} {was!r}, not "
                               f"{getattr(args, name)!r}; a resume goes on as the run was (only "
                               "--steps and --save-every may change)")
    expected, weights = trained_weights(model), state["weights"]
    if not isinstance(weights, dict) or set(weights) != set(expected):
        found = len(weights) if isinstance(weights, dict) else 0
        raise ExampleError(f"{path} holds {found} trained weights, this run trains "
                           f"{len(expected)} (another model, or a damaged checkpoint)")
    try:
        for name, value in expected.items():
            loaded.tensor(weights[name], name, tuple(value.shape), value.dtype)
        checks.integer(state["step"], "step", 0)
    except (TypeError, ValueError) as error:  # loaded.BadValue is a ValueError
        raise ExampleError(f"{path} is damaged: {error}") from None
    return state


def finetune(args) -> list[float]:
    """Runs the fine-tuning the arguments describe; returns the loss of every step."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.tiny:
        model = tiny_model(args.seed)
        batches = tiny_batches(args.batch, args.length, args.seed)
    else:
        model, tokenizer = hub_model(args.model)
        batches = text_batches(tokenizer, Path(args.text), args.batch, args.length, args.seed)
    check_length(model, args.length)
    model = model.to(dtype).eval()  # eval: no dropout, so both points see the same network
    if args.lora:
        model = with_lora(model)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = learning_rate(args)
    optimizer = make_optimizer(args.optimizer, params, lr, args.eps, args.seed)
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # cosine decay to a tenth
        optimizer, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * min(s / args.steps, 1))))
    start = 0
    checkpoint = Path(args.resume) if args.resume else None
    if checkpoint is not None and checkpoint.exists():
        state = read_checkpoint(checkpoint, model, args)
        try:  # the optimizer checks its own state whole, and changes nothing if it refuses it
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (KeyError, TypeError, ValueError) as error:
            raise ExampleError(f"{checkpoint} holds a damaged optimizer state: {error}") from None
        model.load_state_dict(state["weights"], strict=False)  # every trained weight: checked
        start = state["step"]
        for _ in range(start):  # the batches the run had drawn
            next(batches)
    losses = []
    for step in range(start, args.steps):
        tokens = next(batches)
        loss = optimizer.step(lambda: lm_loss(model, tokens))  # forward passes only
        scheduler.step()
        losses.append(float(loss))
        if checkpoint is not None and (step + 1) % args.save_every == 0:
            save(checkpoint, optimizer, scheduler, model, step + 1, args)
        if not args.quiet and (step + 1) % 50 == 0:
            print(f"step {step + 1}: loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    return losses


class OneLineParser(argparse.ArgumentParser):
    """argparse that says a bad argument in one line, as sharpzo-ext's command line does."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_arguments(p: argparse.ArgumentParser, hub: bool = True) -> argparse.ArgumentParser:
    """Adds the options of every causal-LM example: the model (--tiny; with `hub`, else
    --tiny is required, --model and --text), the optimizer, its rates, the batches and the seed.
    Returns `p`."""
    if hub:
        p.add_argument("--model", default="facebook/opt-125m",
                       help="a causal LM name or directory")
        p.add_argument("--text", help="a text file to fine-tune on (not with --tiny)")
        p.add_argument("--tiny", action="store_true",
                       help="a tiny random OPT on counting sequences")
    else:
        p.add_argument("--tiny", action="store_true", required=True,
                       help="the tiny random OPT on counting sequences (to fine-tune a Hugging "
                            "Face model, load it as finetune_causal_lm.py does)")
    p.add_argument("--optimizer", choices=("zosgd", "sparsezo"), default="zosgd")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-6, or 1e-2 with --tiny")
    p.add_argument("--eps", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=32, help="tokens per sequence (2 or more, "
                   "within the model's positions)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


def parser() -> argparse.ArgumentParser:
    p = run_arguments(OneLineParser(description=__doc__.split("\n\n")[0]))
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only (peft)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--resume", metavar="FILE", help="checkpoint to continue from and save to")
    p.add_argument("--save-every", type=int, default=100)
    return p


def learning_rate(args) -> float:
    """--lr, or MeZO's 1e-6 for a real model and 1e-2 for the tiny one."""
    return args.lr if args.lr is not None else (1e-2 if args.tiny else 1e-6)


def check_run_args(args, *counts: str) -> None:
    """Raises ExampleError naming the first of run_arguments' options out of its range, or of
    `counts` (options of the example that must be 1 or more)."""
    try:
        for name, least in (("steps", 1), ("batch", 1), ("length", 2),
                            *((name, 1) for name in counts)):
            checks.integer(getattr(args, name), name, least)
        checks.stream_integer(args.seed, "seed")
        if args.lr is not None:
            checks.real(args.lr, "lr", nonnegative=True)
        checks.real(args.eps, "eps", positive=True)
    except (TypeError, ValueError) as error:
        raise ExampleError(f"--{str(error).replace('_', '-')}") from None
    if not args.tiny and not getattr(args, "text", None):
        raise ExampleError("--text FILE is needed unless --tiny")


def check_args(args) -> None:
    """Raises ExampleError naming the first argument out of its range."""
    check_run_args(args, "save_every")
    if args.resume and Path(args.resume).is_dir():
        raise ExampleError(f"--resume {args.resume} is a directory; it names a checkpoint file")


def run_main(argv, p: argparse.ArgumentParser, check, run, refused=(ExampleError,)) -> None:
    """An example's main: `argv` parsed by `p`, checked by `check`, then `run`; what `check` or
    `run` refuses (an exception of `refused`) is one line on stderr and exit status 2."""
    args = p.parse_args(argv)
    try:
        check(args)
        run(args)
    except refused as error:
        print(f"{p.prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def check_length(model: torch.nn.Module, length: int) -> None:
    """Refuses sequences longer than the model's position embeddings."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and length > positions:
        raise ExampleError(f"--length {length} is beyond the model's {positions} positions")


def main(argv=None) -> None:
    run_main(argv, parser(), check_args, finetune)


if __name__ == "__main__":
    main()
