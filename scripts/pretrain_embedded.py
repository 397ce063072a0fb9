"""Pretrains the embedded default CLIP on procedural shapes and writes it into the package.

    python scripts/pretrain_embedded.py [--steps 2500] [--seed 0] [--out PATH] [--arch vit]

--arch vit builds the second architecture of Note [A second architecture] instead (write it
with --out somewhere outside the package and load it with --model embedded --pretrained PATH).

About 16 minutes on 2 CPU cores (937 s for the shipped checkpoint, recorded in its metadata as
train_seconds). Recipe, found by a throwaway feasibility run: symmetric CLIP loss, batch 256,
AdamW (lr 2e-3, betas 0.9/0.98, weight decay 0.1 except embeddings, norms, biases and the logit
scale), 5% linear warm-up then cosine. Images and captions come from
sharpzo_ext.clip.data.synthetic,
a new batch every step from a seeded generator, so a re-run trains on the same data stream. At
the end it measures zero-shot accuracy (clean shapes, and the downstream task with "a photo of a
{shape}.") and stores those numbers in the checkpoint's metadata.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from sharpzo_ext.clip.families import embedded
from sharpzo_ext.clip.data import synthetic

MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)


def tokenize(texts):
    from open_clip import tokenizer  # noqa: PLC0415

    return tokenizer.tokenize(texts)


@torch.no_grad()
def zero_shot(model, images, labels, template):
    text = tokenize([template.format(s) for s in synthetic.SHAPES])
    t = F.normalize(model.encode_text(text), dim=-1)
    i = F.normalize(model.encode_image((images - MEAN) / STD), dim=-1)
    return float(((i @ t.T).argmax(-1) == labels).float().mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(embedded.asset_path()))
    parser.add_argument("--arch", choices=tuple(embedded.ARCHITECTURES), default="resnet")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    config = embedded.ARCHITECTURES[args.arch]
    model = embedded.build(config)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        plain = p.ndim < 2 or "embedding" in name or "logit_scale" in name or "ln" in name
        (no_decay if plain else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=2e-3,
                            betas=(0.9, 0.98))
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - warmup) / max(1, args.steps - warmup)))))
    g = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for step in range(args.steps):
        scenes = synthetic.sample_scenes(args.batch, g)
        images = (synthetic.render(scenes) - MEAN) / STD
        text = tokenize(synthetic.captions(scenes))
        i = F.normalize(model.encode_image(images), dim=-1)
        t = F.normalize(model.encode_text(text), dim=-1)
        logits = model.logit_scale.exp() * i @ t.T
        target = torch.arange(args.batch)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - start:6.0f} s",
                  flush=True)
    model.eval()
    clean_g = torch.Generator().manual_seed(10**6 + args.seed)
    clean = synthetic.sample_scenes(1000, clean_g, styles=[0])
    metrics = {
        "clean_zero_shot": zero_shot(model, synthetic.render(clean), clean.shape,
                                     "a drawing of a {}"),
        "task_zero_shot_test": zero_shot(model, *synthetic.task_split("test", 100),
                                         synthetic.TASK_PROMPT),
        "task_zero_shot_shifted": zero_shot(model, *synthetic.task_split("shifted", 100),
                                            synthetic.TASK_PROMPT),
    }
    print(metrics)
    token_ids = tokenize(embedded.words()).flatten()
    embedded.save(model, args.out, token_ids, {
        "steps": str(args.steps), "seed": str(args.seed), "batch": str(args.batch),
        "train_seconds": f"{time.time() - start:.0f}",
        **{k: f"{v:.4f}" for k, v in metrics.items()}}, config)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
