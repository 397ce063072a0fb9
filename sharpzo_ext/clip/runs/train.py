"""The main job: tune a CLIP prompt, select it on validation, report on test (and a shifted
split), and keep everything in a run directory (run_dir.py).

    prepare (prepare.py) -> a method (methods.py) -> optimize (here) -> run directory files
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import resource
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from sharpzo_ext import deprecated, distributed, loaded
from sharpzo_ext.ops import checks
from sharpzo_ext.clip.task import ensemble as ensemble_lib
from sharpzo_ext.clip.runs.run_dir import Progress, RunDir, check_out
from sharpzo_ext.clip.runs.config import RunError, TrainConfig
from sharpzo_ext.clip.runs.evaluate import accuracies, split_logits
from sharpzo_ext.clip.runs.methods import Method, build, forward_passes, image_encodings
from sharpzo_ext.clip.runs.prepare import Prepared, prepare
from sharpzo_ext.clip.task.heads import HeadError

__all__ = ["train", "resumed_config", "optimize",
           "initial_progress", "finish", "summarize", "format_summary", "zero_shot"]


def __getattr__(name: str):
    """evaluate_prompt lived here in sharpzo_ext 0.1.0."""
    if name == "evaluate_prompt":
        from sharpzo_ext.clip.runs import evaluate  # noqa: PLC0415

        deprecated.warn("sharpzo_ext.clip.runs.train.evaluate_prompt", stacklevel=2)
        return evaluate.evaluate_prompt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _evaluate(p: Prepared, method: Method, w: torch.Tensor) -> tuple[float, dict, float, dict]:
    """(the training loss of w, a log row's accuracies, the validation accuracy that selects
    iterates, the tuned logits of the evaluated splits), all from one call of tuned.logits
    (Note [One evaluation per iterate]). The training loss is what the optimizer minimizes: of
    the tuned logits, plus the head's cross-fitted logits for a method tuned for a head. With
    such a head (Note [Ensembling a head]) the row shows the head at the weight validation
    chooses for this iterate, what stopping here would give, and that weight; iterates are
    selected at the weight they are tuned for."""
    e = method.ensemble
    logits = split_logits(p, method.tuned, w, ("train", *p.eval_splits()))
    train = logits.pop("train")
    if e is not None and e.cross_fitted is not None:
        train = train + e.offset()
    loss = float(F.cross_entropy(train, p.labels["train"]))
    accs = accuracies(p, logits, e)
    if e is None or method.optimizer is None:  # no head, or a head-only method's own weight
        return loss, {f"{k}_acc": v for k, v in accs.items()}, accs.get("val", 0.0), logits
    weight = ensemble_lib.choose_weight(logits["val"], e.logits["val"], p.labels["val"])
    shown = accuracies(p, logits, e, weight)
    return (loss, {**{f"{k}_acc": v for k, v in shown.items()},
                   "head_weight": ensemble_lib.weight_record(weight)}, accs["val"], logits)


def initial_progress(p: Prepared, method: Method) -> Progress:
    """The progress before any step: w = 0, zero-shot CLIP (with the method's head, if it has
    one; the first row then keeps the zero-shot prompt's own accuracies in "zero_shot")."""
    zero_w = method.tuned.zero_vector()
    loss, scores, val, logits = _evaluate(p, method, zero_w)
    best = {"val_acc": val, "w": zero_w.clone(), "forward_passes": 0, "train_loss": loss}
    row = {"forward_passes": 0, "train_loss": loss, **scores, "wall_time_s": 0.0}
    if method.ensemble is not None:
        row["zero_shot"] = accuracies(p, logits)
    return Progress(best, [row])


def optimize(p: Prepared, method: Method, progress: Progress, label: str | None = None,
             on_eval: Callable[[Progress], None] | None = None, evaluate: bool = True) -> None:
    """Steps the method until p.config.budget forward passes (methods.forward_passes),
    evaluating every p.config.eval_every into `progress`, and calls on_eval(progress) after each
    evaluation; with a progress bar named `label` (None: none). With evaluate=False (the other
    ranks of a distributed run) it only steps. A head-only method has nothing to step."""
    optimizer, w = method.optimizer, method.w
    if optimizer is None:
        return
    budget, eval_every, elapsed = p.config.budget, p.config.eval_every, progress.elapsed
    session_start = time.time()
    bar = None
    if label is not None:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=budget, initial=forward_passes(optimizer), desc=label, unit="fwd",
                   leave=False)
    spent = forward_passes(optimizer)
    next_eval = (spent // eval_every + 1) * eval_every
    while spent < budget:
        optimizer.step(method.objective)
        before, spent = spent, forward_passes(optimizer)
        if bar is not None:
            bar.update(spent - before)
        if not evaluate or (spent < next_eval and spent < budget):
            continue
        next_eval = (spent // eval_every + 1) * eval_every
        current = w.detach().clone()
        train_loss, scores, val, _ = _evaluate(p, method, current)
        progress.add({"forward_passes": spent, "train_loss": train_loss, **scores,
                      "wall_time_s": elapsed + time.time() - session_start}, current, val)
        if on_eval is not None:
            on_eval(progress)
    if bar is not None:
        bar.close()


RESUME_MAY_CHANGE = ("budget", "cache_dir")  # what a resumed run may differ in


def resumed_config(out: RunDir, config: TrainConfig, explicit: Iterable[str]) -> TrainConfig:
    """The configuration that resumes the run in `out`: the saved one, going on to
    config.budget if that is larger. Fields named in `explicit` (set on purpose, e.g. on the
    command line) must agree with the saved run, but for RESUME_MAY_CHANGE."""
    saved = out.read_config()
    for name in sorted(set(explicit) - set(RESUME_MAY_CHANGE)):
        if getattr(config, name) != getattr(saved, name):
            raise RunError(f"{out.path} was run with {name} = {getattr(saved, name)!r}; a resume "
                           f"continues it as it was (only {' and '.join(RESUME_MAY_CHANGE)} may "
                           f"change), got {name} = {getattr(config, name)!r}")
    return dataclasses.replace(saved, budget=max(config.budget, saved.budget),
                               cache_dir=config.cache_dir if "cache_dir" in explicit
                               else saved.cache_dir)


def _resume_(out: RunDir, method: Method, state: dict) -> Progress:
    """Loads the run's state (its state.pt) into `method`, and returns its progress. Every value
    is checked before any is used (Note [Loaded values are checked])."""
    try:
        w = loaded.tensor(state["w"], "w", tuple(method.w.shape))
        best, log = state["best"], state["log"]
        if not isinstance(best, dict):
            raise loaded.BadValue("best", "must be a dict")
        loaded.tensor(best["w"], "best.w", tuple(method.w.shape))
        loaded.number(best["val_acc"], "best.val_acc", 0, 1)
        loaded.number(best["train_loss"], "best.train_loss")
        checks.integer(best["forward_passes"], "best.forward_passes", 0)
        if not (isinstance(log, list) and log and all(isinstance(row, dict) for row in log)):
            raise loaded.BadValue("log", "must be a list of rows")
        for row in log:
            loaded.number(row["wall_time_s"], "log.wall_time_s", 0)
            checks.integer(row["forward_passes"], "log.forward_passes", 0)
        method.optimizer.load_state_dict(state["optimizer"])
    except KeyError as error:
        raise RunError(f"cannot resume from {out.path / 'state.pt'}: it lacks {error}") from None
    except (TypeError, ValueError) as error:
        raise RunError(f"cannot resume from {out.path / 'state.pt'}: {error}") from None
    with torch.no_grad():
        method.w.copy_(w)
    return Progress(best, log)


def train(config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
          report: Callable[[str], None] = print, explicit: Iterable[str] = ()) -> dict:
    """Runs (or with `resume`, continues) the job in run directory `out`; returns the summary.

    Everything is checked before anything is written: the configuration, the output path, the
    model and the data (and with `resume`, the saved state), so a run that cannot start leaves
    no file behind and a failed resume changes none. One process at a time writes a run
    directory (Note [One writer per run directory]). `explicit`: see resumed_config."""
    check_out(Path(out))
    out = RunDir(Path(out))
    if resume:
        config = resumed_config(out, config, explicit)
    else:
        config.check()
        config = config.resolved()
        out.check_new()
    start = time.time()
    owner = not distributed.initialized()  # this run starts the process group, and ends it
    rank, world = distributed.init(timeout_s=120)
    try:
        summary = _train(config, out, resume, _Session(start, rank, world, progress, report))
    except BaseException:
        if owner:
            distributed.finish(wait=False)  # Note [Ending a distributed run]
        raise
    if owner:
        distributed.finish()
    return summary


@dataclasses.dataclass(frozen=True)
class _Session:
    """This process's session of a run: when it started, its place in a distributed run (rank 0
    of `world` processes writes the run directory; the others step and write nothing), and how
    it reports."""
    start: float  # time.time() when this session of the run started
    rank: int
    world: int
    progress: bool
    report: Callable[[str], None]

    @property
    def writer(self) -> bool:
        return self.rank == 0

    @property
    def bars(self) -> bool:
        return self.progress and self.writer


@dataclasses.dataclass
class _Run:
    """One process's part of a run: what it prepared, the method it steps, the directory it
    writes, and its session."""
    p: Prepared
    method: Method
    out: RunDir
    session: _Session


def _train(config: TrainConfig, out: RunDir, resume: bool, session: _Session) -> dict:
    """`train` in this process's session."""
    p = prepare(config, session.bars)
    world = session.world
    # a new run's head is fitted before anything is written; a resumed run keeps its own
    method = None if resume else build(config, p.task, p, world)
    with out.locked() if session.writer else contextlib.nullcontext():
        if resume:
            state = out.load_progress()
            out.check_identity(state, _identity(p))
            method = build(config, p.task, p, world, head=_saved_head(out, config, state, p))
            progress = _resume_(out, method, state)
        else:
            out.check_new()  # again, now that no other writer can start one
            progress = initial_progress(p, method)
        if session.writer:
            out.write_config(config)
        return _run(_Run(p, method, out, session), progress)


def _run(run: _Run, progress: Progress) -> dict:
    """Optimizes from `progress` to the budget, saving it at each evaluation, then writes the
    prompt, the plot and the summary."""
    p, method, out, config, session = run.p, run.method, run.out, run.p.config, run.session

    def save(progress: Progress) -> None:
        out.save_progress(method.optimizer, method.w, progress, method.ensemble, _identity(p))

    optimize(p, method, progress, label=config.method if session.bars else None, on_eval=save,
             evaluate=session.writer)
    if not session.writer:
        return {}
    best, log = progress.best, progress.log
    finish(p, method, best)
    summary = summarize(p, method, progress, session.start)
    summary["processes"] = session.world
    out.save_prompt(method.tuned, best["w"], {
        "model": p.loaded.identity, "classnames": p.data.classnames,
        "val_acc": summary["val_acc"], "forward_passes": best["forward_passes"],
        "method": config.method, **({"tune": config.tuned} if config.tuned else {})},
        method.ensemble)
    out.plot(log, zero_shot(log), f"{config.method}: {config.dataset or config.data} data, "
             f"{config.model} model")
    out.write_summary(summary)
    session.report(format_summary(summary))
    return summary


def _identity(p: Prepared) -> dict:
    """What a run is tuned on (Note [A resume checks what it resumes])."""
    return {"model": p.loaded.identity, "data": p.data.identity}


def _saved_head(out: RunDir, config: TrainConfig, state: dict,
                p: Prepared) -> ensemble_lib.Ensemble | None:
    """The head a resumed run saved (it goes on with that one, not one fitted again), or
    RunError if its state does not hold the head its configuration names, or holds a damaged
    one."""
    if config.head_kind is None:
        return None
    saved = state.get("ensemble")
    if not isinstance(saved, dict) or saved.get("kind") != config.head_kind:
        raise RunError(f"cannot resume from {out.path / 'state.pt'}: it holds no "
                       f"{config.head_kind} head, which the run's configuration names")
    try:
        return ensemble_lib.Ensemble.from_state(saved, p.features)
    except HeadError as error:
        raise RunError(f"cannot resume from {out.path / 'state.pt'}: {error}") from None


def finish(p: Prepared, method: Method, best: dict) -> None:
    """A method tuned for a head gets its final weight, chosen on validation for the selected
    iterate (Note [Ensembling a head])."""
    e = method.ensemble
    if e is not None and method.optimizer is not None:
        val = split_logits(p, method.tuned, best["w"], ("val",))["val"]
        e.weight = ensemble_lib.choose_weight(val, e.logits["val"], p.labels["val"])


def zero_shot(log: list[dict]) -> dict[str, float]:
    """The zero-shot prompt's accuracies, from a run's log."""
    return log[0].get("zero_shot") or {k[:-4]: v for k, v in log[0].items() if k.endswith("_acc")}


def summarize(p: Prepared, method: Method, progress: Progress, start: float) -> dict:
    config, e, best, log = p.config, method.ensemble, progress.best, progress.log
    logits = split_logits(p, method.tuned, best["w"], p.eval_splits())
    tuned, initial = accuracies(p, logits, e), zero_shot(log)
    summary = {
        "model": config.model, "method": config.method, "seed": config.seed,
        "zero_shot_val_acc": initial.get("val"), "zero_shot_test_acc": initial.get("test"),
        "zero_shot_shifted_acc": initial.get("shifted"),
        "val_acc": tuned.get("val"), "test_acc": tuned.get("test"),
        "shifted_acc": tuned.get("shifted"), "selected_at_forward_passes": best["forward_passes"],
        "forward_passes": forward_passes(method.optimizer), "wall_time_s": log[-1]["wall_time_s"],
        "total_time_s": time.time() - start, "peak_memory_mb": peak_memory_mb(config.device),
        "feature_cache_hits": p.cache_hits, "tuned": config.tuned, "head": None,
    }
    if e is not None:
        alone = accuracies(p, logits, e, weight=math.inf)
        summary |= {"head": e.head.kind, "head_views": config.head_views,
                    "head_features": e.stage, "head_augment": e.augment,
                    "head_choices": e.choices,
                    "head_weight": ensemble_lib.weight_record(e.weight),
                    "selected": ensemble_lib.describe(e.head.kind, e.weight,
                                                      config.tuned or "prompt"),
                    "head_alone_val_acc": alone.get("val"),
                    "head_alone_test_acc": alone.get("test"),
                    "image_encodings": image_encodings(p) * len(p.labels["train"])}
    return summary


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
    if s.get("head"):
        lines.append(f"  {s['head']} head alone  val {pct(s['head_alone_val_acc'])}  test "
                     f"{pct(s['head_alone_test_acc'])}  (on the {s['head_features']} features, "
                     f"{s['head_augment']} views); selected on val: {s['selected']}")
    return "\n".join(lines)

