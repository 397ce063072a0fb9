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
import os
from pathlib import Path

import torch
import torch.nn.functional as F

import sharpzo_ext as sz

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
    ids = torch.tensor(tokenizer(path.read_text())["input_ids"])
    if ids.numel() <= length:
        raise SystemExit(f"{path} holds {ids.numel()} tokens, fewer than --length {length}")
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, ids.numel() - length, (batch,), generator=g)
        yield torch.stack([ids[s:s + length] for s in starts.tolist()])


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


def save(path: Path, optimizer, scheduler, model, step: int) -> None:
    """A checkpoint, written to a temporary file and renamed: a crash never leaves half of one."""
    trained = {k: v for k, v in model.state_dict().items()
               if k in {n for n, p in model.named_parameters() if p.requires_grad}}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"step": step, "weights": trained, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}, tmp)
    os.replace(tmp, path)


def finetune(args) -> list[float]:
    """Runs the fine-tuning the arguments describe; returns the loss of every step."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.tiny:
        model = tiny_model(args.seed)
        batches = tiny_batches(args.batch, args.length, args.seed)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(args.model)
        batches = text_batches(AutoTokenizer.from_pretrained(args.model), Path(args.text),
                               args.batch, args.length, args.seed)
    model = model.to(dtype).eval()  # eval: no dropout, so both points see the same network
    if args.lora:
        model = with_lora(model)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = args.lr if args.lr is not None else (1e-2 if args.tiny else 1e-6)
    optimizer = make_optimizer(args.optimizer, params, lr, args.eps, args.seed)
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # cosine decay to a tenth
        optimizer, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * min(s / args.steps, 1))))
    start = 0
    checkpoint = Path(args.resume) if args.resume else None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["weights"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
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
            save(checkpoint, optimizer, scheduler, model, step + 1)
        if not args.quiet and (step + 1) % 50 == 0:
            print(f"step {step + 1}: loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    return losses


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="facebook/opt-125m", help="a causal LM name or directory")
    p.add_argument("--text", help="a text file to fine-tune on (not with --tiny)")
    p.add_argument("--tiny", action="store_true", help="a tiny random OPT on counting sequences")
    p.add_argument("--optimizer", choices=("zosgd", "sparsezo"), default="zosgd")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only (peft)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=None, help="default: 1e-6, or 1e-2 with --tiny")
    p.add_argument("--eps", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=32, help="tokens per sequence")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", metavar="FILE", help="checkpoint to continue from and save to")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if not args.tiny and not args.text:
        raise SystemExit("--text FILE is needed unless --tiny")
    finetune(args)


if __name__ == "__main__":
    main()
