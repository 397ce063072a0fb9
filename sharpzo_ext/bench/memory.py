"""bench --suite memory: the peak memory of one step of each method at real size, above the
loaded model, each row in a fresh process (so no row inherits another's allocator state).

On the CPU a row reports the rise of the process's resident high-water mark (VmHWM) over its
resident memory once the model is loaded; on a GPU, torch.cuda.max_memory_allocated over the
memory allocated then. Two models, with random weights (nothing is downloaded):

- ViT-B-16's CLIP, prompt tuning for 100 classes with an intrinsic dimension of 512: the losses
  of one population of 20 (inference), one SharpZO generation, one SparseZO step with its mask
  refresh (the first) and one between refreshes, one ZOSGD step (with exception_safe on and
  off), and one CoOp step (Adam, a backward pass through the text tower);
- a causal language model of OPT-125m's shape, every weight tuned, on 4 sequences of 256
  tokens, in float32 and bfloat16: inference (the loss), one ZOSGD step (exception_safe on and
  off), the SparseZO step with its mask refresh (exception_safe on and off) and one between
  refreshes, one ZOSGD step through ZOTrainer (Hugging Face's Trainer, forward passes only), and
  one backpropagation step with SGD and with Adam. The loss is the model's own (logits upcast to
  float32, no KV cache), as Trainer computes it.

Note [Memory targets]
Forward-only training's promise is the memory of inference. A forward-only step may add only
what its optimizer documents: ZOSGD's exception-safe copy of the tuned parameters; SparseZO's
flat mask (1 byte per parameter), the float32 estimate of one parameter at a time and the copy
of the masked values, and at a mask refresh the block buffer of Note [A mask refresh in blocks]
(blockwise.BUFFER_BYTES, the same for every model) and, with exception_safe, the copy of every
parameter that its dense estimate perturbs (as ZOSGD's); SharpZO's CMA-ES state (a d x d
covariance and its factor in float64, d = 512 here). The target of each forward-only row is its
peak at most 1.1 x inference's plus those buffers.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import torch

from sharpzo_ext import resident_memory
from sharpzo_ext.bench.common import BenchConfig, Suite, Target, markdown_table, row_progress
from sharpzo_ext.optim import blockwise

__all__ = ["run", "CLIP_ROWS", "LM_ROWS"]

CLIP_ROWS = ("inference", "SharpZO generation", "SparseZO step, with its mask refresh",
             "SparseZO step, between refreshes", "ZOSGD step", "ZOSGD step, exception_safe off",
             "CoOp step (backprop, Adam)")
TRAINER_ROW = "ZOSGD step through ZOTrainer"  # Hugging Face's Trainer, forward passes only
LM_ROWS = ("inference", "ZOSGD step", "ZOSGD step, exception_safe off",
           "SparseZO step, with its mask refresh",
           "SparseZO step, with its mask refresh, exception_safe off",
           "SparseZO step, between refreshes", TRAINER_ROW, "SGD step (backprop)",
           "Adam step (backprop)")
# Note [Measuring the resident high-water mark]: glibc keeps freed blocks below its mmap
# threshold in its heap, and raises that threshold (up to 32 MB) each time a larger mapped
# block is freed; a second forward pass then finds the first one's activations still resident,
# and two forwards measured 786 MB against one's 644 (OPT-125m shape, fp32). Rows run with the
# threshold fixed at 128 KiB, so that freed tensors leave the resident set and the high-water
# mark is that of live memory (two forwards: 633 MB, one: 633).
_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}
CLIP_SIZE = {"model": "ViT-B-16", "classes": 100, "population": 20, "images": 64}
LM_SIZE = {"batch": 4, "length": 256}
QUICK_LM = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "ffn_dim": 128,
            "num_attention_heads": 2, "max_position_embeddings": 64, "word_embed_proj_dim": 64}
DIM = 512
DENSITY = 0.1


def _peak_mb(device: str, work) -> float:
    """The memory `work()` takes at its peak above what is in use before it, in MB."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        work()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    gc.collect()  # garbage freed during `work` would lower the resident set under its peak
    if not resident_memory.reset_peak():
        raise RuntimeError("this system cannot reset the resident high-water mark "
                           "(/proc/self/clear_refs): bench --suite memory needs Linux")
    before = resident_memory.status_mb("VmRSS")
    work()
    return resident_memory.status_mb("VmHWM") - before


def _forward_only(row: str, params: list, lr: float, objective) -> float:
    """A forward-only row: the optimizer is built and stepped once within the measure, or for
    "between refreshes" built and stepped once (SparseZO's first step refreshes its mask)
    before the measure, which then takes its second step."""
    from sharpzo_ext import optim  # noqa: PLC0415

    make = {
        "SharpZO generation": lambda: optim.SharpZO(params, lr=lr, popsize=CLIP_SIZE[
            "population"]),
        "SparseZO step, with its mask refresh": lambda: optim.SparseZO(params, lr=lr,
                                                                       density=DENSITY),
        "SparseZO step, with its mask refresh, exception_safe off": lambda: optim.SparseZO(
            params, lr=lr, density=DENSITY, exception_safe=False),
        "SparseZO step, between refreshes": lambda: optim.SparseZO(params, lr=lr,
                                                                   density=DENSITY),
        "ZOSGD step": lambda: optim.ZOSGD(params, lr=lr),
        "ZOSGD step, exception_safe off": lambda: optim.ZOSGD(params, lr=lr,
                                                              exception_safe=False),
    }[row]
    device = str(params[0].device)
    if row.endswith("between refreshes"):
        optimizer = make()
        optimizer.step(objective)
        return _peak_mb(device, lambda: optimizer.step(objective))
    return _peak_mb(device, lambda: make().step(objective))


def _clip_row(row: str, quick: bool, device: str) -> dict:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # noqa: PLC0415

    from sharpzo_ext.clip.families import load_model  # noqa: PLC0415
    from sharpzo_ext.clip.task.prompt_task import PromptTask  # noqa: PLC0415

    classes, population = (10, 4) if quick else (CLIP_SIZE["classes"], CLIP_SIZE["population"])
    torch.manual_seed(0)
    loaded = load_model(CLIP_SIZE["model"], device=device)  # random weights
    coop = row.startswith("CoOp")
    task = PromptTask.of(loaded, IMAGENET_CLASSNAMES[:classes],
                         intrinsic_dim=None if coop else DIM, device=device)
    g = torch.Generator().manual_seed(1)
    features = torch.nn.functional.normalize(
        torch.randn(CLIP_SIZE["images"], loaded.model.text_projection.shape[1], generator=g),
        dim=-1)
    labels = torch.arange(CLIP_SIZE["images"]) % classes
    features, labels = features.to(device), labels.to(device)
    w = torch.nn.Parameter(task.zero_vector())
    W = torch.randn(population, task.dim, generator=g).to(device)

    def inference():
        with torch.no_grad():
            task.losses(W, features, labels)

    def coop_step():
        optimizer = torch.optim.Adam([w], lr=2e-3)
        task.loss(w, features, labels).backward()
        optimizer.step()

    if row == "inference" or coop:
        mb = _peak_mb(device, inference if row == "inference" else coop_step)
    else:
        mb = _forward_only(row, [w], 0.05, task.objective(features, labels))
    return {"mb": mb, "params": w.numel(), "param_bytes": w.numel() * 4,
            "largest_param": w.numel()}


def _lm_row(row: str, dtype: str, quick: bool, device: str) -> dict:
    from transformers import AutoModelForCausalLM, OPTConfig  # noqa: PLC0415

    torch.manual_seed(0)
    config = OPTConfig(**QUICK_LM) if quick else OPTConfig()  # OPTConfig(): OPT-125m's shape
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).to(device)
    model.eval()
    batch, length = (2, 16) if quick else (LM_SIZE["batch"], LM_SIZE["length"])
    tokens = torch.randint(3, config.vocab_size, (batch, length),
                           generator=torch.Generator().manual_seed(1)).to(device)
    params = list(model.parameters())

    def loss():  # the model's own loss (float32 logits), without a KV cache: what Trainer runs
        return model(input_ids=tokens, labels=tokens, use_cache=False).loss

    def inference():
        with torch.no_grad():
            loss()

    def backprop():
        optimizer = (torch.optim.SGD(params, lr=1e-4) if row.startswith("SGD")
                     else torch.optim.Adam(params, lr=1e-4))
        loss().backward()
        optimizer.step()

    if row == "inference" or "backprop" in row:
        mb = _peak_mb(device, inference if row == "inference" else backprop)
    elif row == TRAINER_ROW:
        mb = _trainer_step_mb(model, tokens.cpu(), device)
    else:
        mb = _forward_only(row, params, 1e-6, loss)
    return {"mb": mb, "params": sum(p.numel() for p in params),
            "param_bytes": sum(p.numel() * p.element_size() for p in params),
            "largest_param": max(p.numel() for p in params)}


def _trainer_step_mb(model, tokens: torch.Tensor, device: str) -> float:
    """One ZOSGD step through ZOTrainer (sharpzo_ext.integrations.transformers): the Trainer,
    its optimizer and its first batch are made first, then one training step is measured."""
    import tempfile  # noqa: PLC0415

    from transformers import TrainingArguments  # noqa: PLC0415

    from sharpzo_ext.integrations.transformers import ZOTrainer  # noqa: PLC0415

    class Sequences(torch.utils.data.Dataset):
        def __len__(self):
            return len(tokens)

        def __getitem__(self, i):
            return {"input_ids": tokens[i], "labels": tokens[i]}

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, max_steps=1, per_device_train_batch_size=len(tokens),
                                 learning_rate=1e-6, max_grad_norm=0, report_to="none",
                                 disable_tqdm=True, save_strategy="no",
                                 dataloader_pin_memory=False,
                                 use_cpu=not device.startswith("cuda"))
        trainer = ZOTrainer(model=model, args=args, train_dataset=Sequences())
        trainer.create_optimizer_and_scheduler(num_training_steps=1)
        batch = next(iter(trainer.get_train_dataloader()))
        return _peak_mb(device, lambda: trainer.training_step(trainer.model, batch))


def _in_process(spec: dict) -> dict:
    """One row, measured in a fresh Python process."""
    done = subprocess.run([sys.executable, "-m", "sharpzo_ext.bench.memory", json.dumps(spec)],
                          capture_output=True, text=True, env={**os.environ, **_MALLOC})
    if done.returncode != 0:
        raise RuntimeError(f"memory row {spec} failed: "
                           f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _buffers_mb(row: str, measured: dict) -> float:
    """What the row's optimizer documents beyond inference (Note [Memory targets]), in MB."""
    d, param_bytes = measured["params"], measured["param_bytes"]
    safe = "exception_safe off" not in row
    masked_copy = DENSITY * param_bytes if safe else 0  # exception_safe's copy of masked values
    between = d + 4 * measured["largest_param"] + masked_copy  # mask, one parameter's estimate
    if row.startswith("ZOSGD") and safe:  # the exception-safe copy (through ZOTrainer too)
        return param_bytes / 2**20
    if row == "SparseZO step, between refreshes":
        return between / 2**20
    if row.startswith("SparseZO step, with its mask refresh"):  # the block buffer; the copy
        return (between + blockwise.BUFFER_BYTES + (param_bytes if safe else 0)) / 2**20
    if row.startswith("SharpZO"):  # CMA-ES's covariance and its factor, float64; stage 2 later
        return 2 * 8 * d * d / 2**20
    return 0.0


def run(config: BenchConfig) -> Suite:
    jobs = ([("CLIP", row, "fp32") for row in CLIP_ROWS]
            + [("LM", row, dtype) for dtype in ("float32", "bfloat16") for row in LM_ROWS])
    rows, records, targets, inference, plain = [], [], [], {}, {}
    with row_progress("memory", len(jobs)) as bar:
        for model, row, dtype in jobs:
            spec = {"model": model, "row": row, "dtype": dtype, "quick": config.quick,
                    "device": config.device}
            measured = _in_process(spec)
            mb = measured["mb"]
            if row == "inference":
                inference[model, dtype] = mb
            base = inference[model, dtype]
            label = (f"{CLIP_SIZE['model']} CLIP, {10 if config.quick else CLIP_SIZE['classes']}"
                     " classes" if model == "CLIP" else
                     f"{'tiny OPT' if config.quick else 'OPT-125m shape'}, {dtype}")
            buffers = _buffers_mb(row, measured)
            rows.append([label, row, f"{measured['params']:,}", f"{mb:.0f}",
                         f"{mb / base:.2f}x" if base > 0 else "", f"{buffers:.0f}"])
            records.append({**spec, **measured, "ratio_to_inference": mb / base if base else None,
                            "documented_buffers_mb": buffers})
            forward_only = row != "inference" and "backprop" not in row and "CoOp" not in row
            if row == "ZOSGD step":
                plain[model, dtype] = mb
            if forward_only and not config.quick:
                targets.append(Target(f"{label}, {row}: peak / (1.1 x inference + buffers)",
                                      mb / (1.1 * base + buffers), "<= 1"))
            if row == TRAINER_ROW and not config.quick:
                targets.append(Target(f"{label}, {row}: peak / the plain loop's ZOSGD step",
                                      mb / plain[model, dtype], "<= 1.1"))
            bar.update()
    where = "torch.cuda.max_memory_allocated" if config.device.startswith("cuda") else "VmHWM"
    header = (f"Peak memory above the loaded model ({where}), MB; each row in a fresh process. "
              f"CLIP: population {CLIP_SIZE['population']}, intrinsic dimension {DIM}; language "
              f"model: {LM_SIZE['batch']} sequences of {LM_SIZE['length']} tokens"
              f"{' (quick: tiny sizes)' if config.quick else ''}.\n\n")
    table = markdown_table(["model", "step", "tuned parameters", "peak MB", "vs inference",
                            "documented buffers MB"], rows)
    return Suite("memory", header + table, records, targets)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    if spec["model"] == "CLIP":
        out = _clip_row(spec["row"], spec["quick"], spec["device"])
    else:
        out = _lm_row(spec["row"], spec["dtype"], spec["quick"], spec["device"])
    print(json.dumps(out))
