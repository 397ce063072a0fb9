"""The main job: tune a CLIP prompt with a forward-only optimizer, select on validation, report
on test (and a shifted split), and keep everything in a run directory.

Run directory (every file written atomically, so an interrupted run leaves no partial file):
  config.json     the resolved configuration (what --resume rebuilds the run from)
  log.jsonl       one line per evaluation: forward passes, train loss, val/test accuracy, time
  state.pt        optimizer and progress at the last evaluation (what --resume continues from)
  prompt.safetensors  the selected prompt: w, its context vectors, and what they belong to
  accuracy.png    validation and test accuracy against forward passes
  summary.json    zero-shot and tuned accuracies, forward passes, wall time, peak memory
"""

from __future__ import annotations

import copy
import dataclasses
import json
import resource
import time
from pathlib import Path
from typing import Callable

import torch

import sharpzo_ext as sz
from sharpzo_ext import distributed
from sharpzo_ext.clip import data as data_lib
from sharpzo_ext.clip.feature_cache import default_cache_dir, split_features
from sharpzo_ext.clip.models import LoadedModel, load_model
from sharpzo_ext.clip.prompt_task import PromptTask, check_vocabulary
from sharpzo_ext.files import atomic_path, write_json, write_text

__all__ = ["TrainConfig", "RunError", "train", "evaluate_prompt", "METHODS"]

METHODS = ("sharpzo", "zosgd", "sparsezo", "cmaes")


class RunError(Exception):
    """A run that cannot start or continue (bad configuration, run directory in the way)."""


@dataclasses.dataclass
class TrainConfig:
    model: str = "embedded"
    pretrained: str | None = None
    data: str = "embedded"          # "embedded[-cluttered]", an ImageFolder tree, or CoOp's root
    dataset: str | None = None      # a CoOp data set name (with data = CoOp's root)
    shots: int = 16
    method: str = "sharpzo"
    budget: int = 20000             # training forward passes (loss evaluations)
    seed: int = 0
    device: str = "cpu"
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    intrinsic_dim: int | None = None  # None: min(512, context size / 2)
    eval_every: int = 500
    cache_dir: str | None = None      # None: $SHARPZO_EXT_CACHE or ~/.cache/sharpzo_ext
    shard: str = "population"         # under torchrun: split the "population" or the "data"
    # optimizer hyperparameters (each method uses the ones it has)
    lr: float = 0.05
    eps: float = 0.01
    sigma: float = 0.6
    popsize: int = 20
    rho: float = 0.05
    switch_step: int = 150
    sharpness: str = "rge"
    sharpness_queries: int = 2
    q: int = 4
    density: float = 0.5

    def check(self) -> None:
        if self.method not in METHODS:
            raise RunError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("shots", "budget", "eval_every", "popsize", "q"):
            if getattr(self, name) < 1:
                raise RunError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.device != "cpu" and not (self.device.startswith("cuda") and torch.cuda.is_available()):
            raise RunError(f"device {self.device!r} is not available")
        if self.shard not in ("population", "data"):
            raise RunError(f"shard must be 'population' or 'data', got {self.shard!r}")


# ---- building blocks ---------------------------------------------------------------------------

def load_data(config: TrainConfig) -> data_lib.Dataset:
    if config.dataset is not None:
        full = data_lib.coop_dataset(config.dataset, config.data)
    elif config.data in data_lib.EMBEDDED_TASKS:
        return data_lib.embedded_task(config.shots, config.seed,
                                      variant=data_lib.EMBEDDED_TASKS[config.data])
    else:
        full = data_lib.image_folder(config.data, seed=config.seed)
    return data_lib.few_shot(full, config.shots, config.seed)


def make_task(config: TrainConfig, loaded: LoadedModel, classnames: list[str]) -> PromptTask:
    width = getattr(loaded.model, "text", loaded.model).token_embedding.weight.shape[1]
    n_ctx = (int((loaded.tokenizer([config.ctx_init])[0] != 0).sum()) - 2 if config.ctx_init
             else config.n_ctx)
    # the paper's d = 512 for CLIP ViT-B/16 (context 4 x 512); half the context size for
    # smaller text towers, where 512 would exceed the context itself
    intrinsic = config.intrinsic_dim or min(512, n_ctx * width // 2)
    if loaded.known_tokens is not None:
        prefix = config.ctx_init or ""
        check_vocabulary(loaded.tokenizer, [f"{prefix} {name}." for name in classnames],
                         loaded.known_tokens)
    return PromptTask(loaded.model, loaded.tokenizer, classnames, n_ctx=config.n_ctx,
                      ctx_init=config.ctx_init, intrinsic_dim=intrinsic, seed=config.seed,
                      device=config.device)


def make_optimizer(config: TrainConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    c = config
    if c.method == "cmaes":
        return sz.optim.CMAES(params, sigma=c.sigma, popsize=c.popsize, seed=c.seed)
    if c.method == "zosgd":
        return sz.optim.ZOSGD(params, lr=c.lr, eps=c.eps, q=c.q, seed=c.seed)
    if c.method == "sparsezo":
        return sz.optim.SparseZO(params, lr=c.lr, eps=c.eps, q=c.q, density=c.density, seed=c.seed)
    return sz.optim.SharpZO(params, lr=c.lr, eps=c.eps, sigma=c.sigma, popsize=c.popsize,
                            rho=c.rho, switch_step=c.switch_step, sharpness=c.sharpness,
                            sharpness_queries=c.sharpness_queries, density=c.density,
                            seed=c.seed, sparse_options={"q": c.q})


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---- the run -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Prepared:
    config: TrainConfig
    loaded: LoadedModel
    data: data_lib.Dataset
    task: PromptTask
    features: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    cache_hits: dict[str, bool]


def prepare(config: TrainConfig, progress: bool = True) -> Prepared:
    config.check()
    loaded = load_model(config.model, config.pretrained, config.device)
    data = load_data(config)
    task = make_task(config, loaded, data.classnames)
    cache = config.cache_dir if config.cache_dir is not None else default_cache_dir()
    features, labels, hits = {}, {}, {}
    for split in data.splits:
        features[split], hits[split] = split_features(task, loaded, data, split, cache, progress)
        labels[split] = data.labels(split).to(task.device)
    return Prepared(config, loaded, data, task, features, labels, hits)


def _accuracies(p: Prepared, w: torch.Tensor, splits) -> dict[str, float]:
    return {split: p.task.accuracy(w, p.features[split], p.labels[split]) for split in splits
            if split in p.features}


def _plot(path: Path, log: list[dict], zero_shot: dict[str, float], title: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [row["forward_passes"] for row in log]
    for split, style in (("val", "-"), ("test", "-"), ("shifted", "--")):
        if log and f"{split}_acc" in log[0]:
            ax.plot(x, [row[f"{split}_acc"] for row in log], style, label=split)
    if "test" in zero_shot:
        ax.axhline(zero_shot["test"], color="gray", linestyle=":", label="zero-shot test")
    ax.set_xlabel("forward passes")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _save_prompt(path: Path, p: Prepared, w: torch.Tensor, extra: dict) -> None:
    from safetensors.torch import save_file  # noqa: PLC0415

    metadata = {"model": json.dumps(p.loaded.identity, sort_keys=True),
                "classnames": json.dumps(p.data.classnames), "n_ctx": str(p.task.n_ctx),
                "ctx_init": p.task.ctx_init or "", "intrinsic_dim": str(p.task.dim),
                "seed": str(p.task.seed), **{k: str(v) for k, v in extra.items()}}
    tensors = {"w": w.detach().float().cpu().contiguous(),
               "ctx": p.task.context(w.reshape(1, -1))[0].detach().cpu().contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def initial_progress(p: Prepared) -> tuple[dict, list[dict]]:
    """(best, log) before any step: w = 0, zero-shot CLIP."""
    zero_w = p.task.zero_vector()
    splits = [s for s in ("val", "test", "shifted") if s in p.features]
    accs = _accuracies(p, zero_w, splits)
    loss = float(p.task.loss(zero_w, p.features["train"], p.labels["train"]))
    best = {"val_acc": accs.get("val", 0.0), "w": zero_w.clone(), "forward_passes": 0,
            "train_loss": loss}
    return best, [{"forward_passes": 0, "train_loss": loss,
                   **{f"{k}_acc": v for k, v in accs.items()}, "wall_time_s": 0.0}]


def optimize(p: Prepared, optimizer, w: torch.Tensor, closure: Callable, budget: int,
             eval_every: int, best: dict, log: list[dict], elapsed: float = 0.0,
             progress: bool = True, label: str = "", on_eval: Callable | None = None,
             evaluate: bool = True) -> dict:
    """Steps `optimizer` until `budget` forward passes, evaluating every `eval_every`: appends to
    `log`, keeps in `best` the iterate with the best validation accuracy (ties: lower train
    loss), calls on_eval(best, log) after each evaluation. Returns best. With evaluate=False
    (the other ranks of a distributed run) it only steps."""
    splits = [s for s in ("val", "test", "shifted") if s in p.features]
    session_start = time.time()
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=budget, initial=optimizer.forward_passes, desc=label, unit="fwd",
                   leave=False)
    next_eval = (optimizer.forward_passes // eval_every + 1) * eval_every
    while optimizer.forward_passes < budget:
        before = optimizer.forward_passes
        optimizer.step(closure)
        if bar is not None:
            bar.update(optimizer.forward_passes - before)
        if not evaluate or (optimizer.forward_passes < next_eval
                            and optimizer.forward_passes < budget):
            continue
        next_eval = (optimizer.forward_passes // eval_every + 1) * eval_every
        current = w.detach().clone()
        train_loss = float(p.task.loss(current, p.features["train"], p.labels["train"]))
        accs = _accuracies(p, current, splits)
        log.append({"forward_passes": optimizer.forward_passes, "train_loss": train_loss,
                    **{f"{k}_acc": v for k, v in accs.items()},
                    "wall_time_s": elapsed + time.time() - session_start})
        val = accs.get("val", 0.0)
        if val > best["val_acc"] or (val == best["val_acc"] and train_loss < best["train_loss"]):
            best = {"val_acc": val, "w": current, "forward_passes": optimizer.forward_passes,
                    "train_loss": train_loss}
        if on_eval is not None:
            on_eval(best, log)
    if bar is not None:
        bar.close()
    return best


def train(config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
          report: Callable[[str], None] = print) -> dict:
    """Runs (or with `resume`, continues) the job in run directory `out`; returns the summary."""
    out = Path(out)
    if resume:
        if not (out / "config.json").is_file() or not (out / "state.pt").is_file():
            raise RunError(f"{out} is not a run directory to resume (no config.json / state.pt)")
        saved = json.loads((out / "config.json").read_text())
        budget = config.budget  # the one thing a resume may change: how far to go
        config = TrainConfig(**{**saved, "budget": max(budget, saved["budget"])})
    elif (out / "summary.json").exists() or (out / "state.pt").exists():
        raise RunError(f"{out} already holds a run; use --resume to continue it, or another --out")
    start = time.time()
    rank, world = distributed.init(timeout_s=120)
    writer = rank == 0  # the other ranks of a distributed run step, and write nothing
    progress = progress and writer
    p = prepare(config, progress)
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", dataclasses.asdict(config))
    w = torch.nn.Parameter(p.task.zero_vector())
    optimizer = make_optimizer(config, [w])
    if resume:
        state = torch.load(out / "state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad():
            w.copy_(state["w"])
        best, log = state["best"], state["log"]
    else:
        best, log = initial_progress(p)

    def save(best, log):
        write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        with atomic_path(out / "state.pt") as tmp:
            torch.save({"optimizer": copy.deepcopy(optimizer.state_dict()),
                        "w": w.detach().clone(), "best": best, "log": log}, tmp)

    best = optimize(p, optimizer, w, distributed_closure(p, config.shard, world),
                    config.budget, config.eval_every, best, log, elapsed=log[-1]["wall_time_s"],
                    progress=progress, label=config.method, on_eval=save, evaluate=writer)
    if not writer:
        return {}
    summary = summarize(p, config, best, log, optimizer.forward_passes, start)
    summary["processes"] = world
    _save_prompt(out / "prompt.safetensors", p, best["w"],
                 {"val_acc": best["val_acc"], "forward_passes": best["forward_passes"]})
    _plot(out / "accuracy.png", log, _zero_shot(log),
          f"{config.method}: {config.dataset or config.data} data, {config.model} model")
    write_json(out / "summary.json", summary)
    report(format_summary(summary))
    return summary


def loss_closure(p: Prepared) -> Callable:
    """The population closure of the training loss."""
    features, labels = p.features["train"], p.labels["train"]
    return lambda W: p.task.losses(W, features, labels)


def distributed_closure(p: Prepared, shard: str, world: int) -> Callable:
    """The training loss closure of this rank: the plain one in a single process, else split
    across the ranks by candidates ("population") or by training images ("data")."""
    if world == 1:
        return loss_closure(p)
    if shard == "population":
        return distributed.PopulationShard(loss_closure(p))
    n = p.labels["train"].numel()
    mine = distributed.shard(n)
    features, labels = p.features["train"][mine], p.labels["train"][mine]
    return distributed.DataShard(lambda W: p.task.losses(W, features, labels),
                                 weight=(mine.stop - mine.start) / n)


def _zero_shot(log: list[dict]) -> dict[str, float]:
    return {k[:-4]: v for k, v in log[0].items() if k.endswith("_acc")}


def summarize(p: Prepared, config: TrainConfig, best: dict, log: list[dict], forward_passes: int,
              start: float) -> dict:
    splits = [s for s in ("val", "test", "shifted") if s in p.features]
    tuned, zero_shot = _accuracies(p, best["w"], splits), _zero_shot(log)
    return {
        "model": config.model, "method": config.method, "seed": config.seed,
        "zero_shot_val_acc": zero_shot.get("val"), "zero_shot_test_acc": zero_shot.get("test"),
        "zero_shot_shifted_acc": zero_shot.get("shifted"),
        "val_acc": tuned.get("val"), "test_acc": tuned.get("test"),
        "shifted_acc": tuned.get("shifted"), "selected_at_forward_passes": best["forward_passes"],
        "forward_passes": forward_passes, "wall_time_s": log[-1]["wall_time_s"],
        "total_time_s": time.time() - start, "peak_memory_mb": peak_memory_mb(config.device),
        "feature_cache_hits": p.cache_hits,
    }


def format_summary(s: dict) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    lines = [f"{s['method']} on {s['model']}: {s['forward_passes']} forward passes, "
             f"{s['wall_time_s']:.1f} s training ({s['total_time_s']:.1f} s in all), "
             f"peak memory {s['peak_memory_mb']:.0f} MB",
             f"  zero-shot  val {pct(s['zero_shot_val_acc'])}  test {pct(s['zero_shot_test_acc'])}"
             f"  shifted {pct(s['zero_shot_shifted_acc'])}",
             f"  tuned      val {pct(s['val_acc'])}  test {pct(s['test_acc'])}"
             f"  shifted {pct(s['shifted_acc'])}  (selected on val at "
             f"{s['selected_at_forward_passes']} forward passes)"]
    return "\n".join(lines)


def evaluate_prompt(prompt: str | Path, config: TrainConfig, progress: bool = True) -> dict:
    """Accuracies of a saved prompt on the data of `config` (same model and classes)."""
    from safetensors import safe_open  # noqa: PLC0415

    prompt = Path(prompt)
    if not prompt.is_file():
        raise RunError(f"prompt file {prompt} does not exist")
    try:
        with safe_open(str(prompt), framework="pt") as f:
            metadata = f.metadata() or {}
            w = f.get_tensor("w")
    except Exception as error:  # noqa: BLE001 (anything unreadable is one error to the user)
        raise RunError(f"cannot read prompt file {prompt}: {error}") from None
    p = prepare(config, progress)
    saved_model = json.loads(metadata.get("model", "{}"))
    if saved_model != p.loaded.identity:
        raise RunError(f"{prompt} was tuned for {saved_model}, not for {p.loaded.identity}")
    if json.loads(metadata.get("classnames", "[]")) != p.data.classnames:
        raise RunError(f"{prompt} was tuned for other classes than the data's")
    if w.numel() != p.task.dim:
        raise RunError(f"{prompt} holds a {w.numel()}-dimensional prompt; this task's is "
                       f"{p.task.dim} (other intrinsic_dim or context length)")
    return _accuracies(p, w.to(p.task.device), [s for s in ("train", "val", "test", "shifted")])
