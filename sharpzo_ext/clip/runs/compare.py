"""`sharpzo-ext compare`: forward-only methods against each other and against first-order CoOp,
on the same tasks, seeds and forward-pass budget.

Methods: the rows of COMPARED below, each with what it is (`sharpzo-ext compare --help` and
docs/cli.md list them): every row of the method table (method_table.py), and compare's own
variants of a row (SharpZO tuned for the GDA head, SharpZO in the released code's settings, GDA
as 0.2 fitted it). A first-order method's budget is counted in steps (a forward and a backward
pass each: --coop-budget, --adapter-budget); coop always runs at fp32 on torch.

--head (default none) gives every other forward-only method a head too; coop never has one.
The heads' stage and views are --head-features and --head-augment (default: chosen on
validation), shared by every method with a head.

Every method runs on every task with every seed; the seed draws the few-shot split and the
method's projection and perturbation stream. Output in DIR: compare.json (one record per task,
method and seed, with its accuracy curve), compare.md (per task: mean ± 95% confidence interval
over seeds, passes to a target accuracy and to CoOp's level; compare_report.py) and
compare-<task>.png (test accuracy against passes, with the intervals as bands). Memory: the
process's peak resident memory while a method runs (its high-water mark reset before it,
Linux), and that peak minus the memory resident when it started (what the method itself adds).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch

from sharpzo_ext import machine, resident_memory
from sharpzo_ext.ops import checks
from sharpzo_ext.clip.data.datasets import BUILTIN_TASKS
from sharpzo_ext.clip.runs import compare_report, methods, run_dir
from sharpzo_ext.clip.runs.config import RunError, TrainConfig, option
from sharpzo_ext.clip.runs.evaluate import accuracies, split_logits
from sharpzo_ext.clip.runs.method_table import METHODS, Kind
from sharpzo_ext.clip.runs.prepare import Prepared, make_task, prepare
from sharpzo_ext.clip.runs.train import finish, initial_progress, optimize, zero_shot
from sharpzo_ext.clip.task import ensemble as ensemble_lib
from sharpzo_ext.clip.task.heads import HEADS
from sharpzo_ext.files import write_json, write_text

__all__ = ["Compared", "COMPARED", "COMPARE_METHODS", "DEFAULT_METHODS", "DEFAULT_TASKS",
           "BUDGET", "CompareConfig", "compare", "method_config"]

@dataclasses.dataclass(frozen=True)
class Compared:
    """A method compare runs: what it is (`help`), and its run configuration made from the
    comparison's (`configure(config)`, config.base its starting point)."""
    name: str
    help: str
    configure: Callable[["CompareConfig"], TrainConfig]


def _row(name: str) -> Compared:
    """A row of the method table as compare runs it: a head beside the zero-shot prompt; coop
    with its step budget, rate, fp32 on torch and no head; clip-adapter with its step budget for
    the GDA head (both evaluated 40 times over their runs); any other as the base says."""
    def configure(config):
        base = config.base
        if name in HEADS:
            return dataclasses.replace(base, method=name, head=None, tune=None)
        if name == "coop":
            return dataclasses.replace(base, method=name, budget=config.coop_budget,
                                       precision="fp32", backend="torch", head="none",
                                       tune=None, eval_every=max(1, config.coop_budget // 40))
        if name == "clip-adapter":
            return dataclasses.replace(base, method=name, budget=config.adapter_budget,
                                       eval_every=max(1, config.adapter_budget // 40),
                                       head="gda", tune=None)
        return dataclasses.replace(base, method=name)
    return Compared(name, METHODS[name].help, configure)


def _tuned_for_gda(name: str, tune: str, help: str) -> Compared:
    return Compared(name, help, lambda config: dataclasses.replace(
        config.base, method="sharpzo", head="gda", tune=tune))


# compare's own variants of a method of the table: SharpZO tuned for the GDA head (its prompt,
# the image-side adapter, or both), SharpZO with the released code's settings, and GDA as fitted
# before stages and view kinds
VARIANTS = (
    _tuned_for_gda("sharpzo-gda", "prompt", "SharpZO tuning the prompt for the GDA head "
                   "(train's default)"),
    _tuned_for_gda("sharpzo-adapter", "adapter", "SharpZO tuning the image-side adapter for "
                   "the GDA head (train --tune adapter)"),
    _tuned_for_gda("sharpzo-joint", "prompt+adapter", "SharpZO tuning the prompt and the "
                   "adapter as one vector, for the GDA head"),
    Compared("sharpzo-released", "SharpZO in the released code's configuration: coordinate-wise "
             "sharpness (2d passes a generation), popsize 40, sigma 0.4, rho 0.1, switch after "
             "100 generations, one call per candidate", lambda config: dataclasses.replace(
                 config.base, method="sharpzo", sharpness="cge", popsize=40, sigma=0.4, rho=0.1,
                 switch_step=100, batched=False)),
    Compared("gda-final", "GDA as sharpzo_ext 0.2 fitted it: the final features, 16 flip-shift "
             "views", lambda config: dataclasses.replace(
                 config.base, method="gda", head=None, tune=None, head_features="final",
                 head_augment="flip-shift")),
)
COMPARED: dict[str, Compared] = {c.name: c for c in (
    _row("sharpzo"), *VARIANTS, *(_row(m) for m in METHODS if m != "sharpzo"))}
COMPARE_METHODS = tuple(COMPARED)
# SharpZO on each thing it tunes, ZIP, the first-order references and the heads (GDA also as
# sharpzo_ext 0.2 fitted it), within the 8 minutes the default run took before the image side
# was added (2 cores); the other methods run on request: sharpzo-released and sparsezo
# (SharpZO's own ablations), sharpzo-joint, cmaes, spsa-gc, zosgd and linear-probe (which now
# chooses its stage and views by cross-validated fits: 44 s a seed)
DEFAULT_METHODS = ("sharpzo", "sharpzo-gda", "sharpzo-adapter", "zip", "coop", "clip-adapter",
                   "gda", "gda-final", "tip-adapter")
DEFAULT_TASKS = ("embedded-grainy", "embedded-colors")  # Note [Tasks that separate]
BUDGET = 5000  # forward passes of each forward-only method: ZIP's MAX_API_CALLS


COMPARE = ("compare",)


@dataclasses.dataclass
class CompareConfig:
    """What compare runs: every method on every task (a `data` of TrainConfig: base with
    data = task) with every seed. The base's fields that compare offers and these are its
    options (Note [Options made from the config]); eval_every 100 gives fine curves and precise
    times to target."""
    base: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(budget=BUDGET, head="none", eval_every=100))
    tasks: tuple[str, ...] = option(DEFAULT_TASKS, "comparison", "built-in tasks to compare on "
                                    "(--data DATA instead: that one task)", COMPARE,
                                    nargs="+", choices=BUILTIN_TASKS)
    methods: tuple[str, ...] = option(DEFAULT_METHODS, "comparison", "; ".join(
        f"{row.name}: {row.help}" for row in COMPARED.values()), COMPARE, nargs="+",
        choices=COMPARE_METHODS)
    seeds: tuple[int, ...] = option((0, 1, 2, 3, 4), "comparison", "each draws the few-shot "
                                    "split and every method's projection and stream", COMPARE,
                                    nargs="+", type=int)
    coop_budget: int = option(2000, "comparison", "steps of first-order CoOp", COMPARE,
                              type=int)
    adapter_budget: int = option(BUDGET // 2, "comparison", "steps of first-order clip-adapter "
                                 "(as many passes as the forward-only budget)", COMPARE,
                                 type=int)
    target: float | None = option(None, "comparison", "test accuracy for 'time to target'",
                                  COMPARE, shown="zero-shot plus half of CoOp's gain over it",
                                  type=float)

    def check(self) -> None:
        """Raises RunError, naming the field, unless every field is valid (the base
        configuration with each method and seed included)."""
        unknown = [m for m in self.methods if m not in COMPARE_METHODS]
        if unknown or not self.methods:
            raise RunError(f"methods must be some of {', '.join(COMPARE_METHODS)}, got "
                           f"{list(self.methods)}")
        if not self.seeds:
            raise RunError("seeds must name at least one seed")
        if not self.tasks:
            raise RunError("tasks must name at least one task")
        for name in ("seeds", "methods", "tasks"):  # a repeat would count one run twice
            values = list(getattr(self, name))
            repeated = sorted({v for v in values if values.count(v) > 1}, key=values.index)
            if repeated:
                raise RunError(f"{name} must be distinct, got {repeated[0]!r} more than once: a "
                               "repeated run would narrow the intervals without new evidence")
        try:
            checks.integer(self.coop_budget, "coop_budget", 1)
            checks.integer(self.adapter_budget, "adapter_budget", 1)
            if self.target is not None:
                target = checks.real(self.target, "target", positive=True)
                if target > 1:
                    raise ValueError(f"target must be a test accuracy in (0, 1], got {target}")
        except (TypeError, ValueError) as error:
            raise RunError(f"invalid configuration: {error}") from None
        for task in self.tasks:  # refused now, not after the tasks before it have run
            if task not in BUILTIN_TASKS and not Path(task).is_dir():
                raise RunError(f"task {task!r} is neither a built-in task "
                               f"({', '.join(BUILTIN_TASKS)}) nor a data folder")
        for seed in self.seeds:
            for method in self.methods:
                method_config(dataclasses.replace(self, base=dataclasses.replace(
                    self.base, seed=seed)), method).check()


def method_config(config: CompareConfig, method: str) -> TrainConfig:
    """The run configuration of one compared method (its row of COMPARED)."""
    return COMPARED[method].configure(config)


def _method_run(p: Prepared, method: str, config: CompareConfig, progress: bool) -> dict:
    run_config = method_config(config, method).resolved()
    p = dataclasses.replace(p, config=run_config)
    task = make_task(run_config, p.loaded, p.data.classnames)
    measured = resident_memory.reset_peak()
    resident = resident_memory.status_mb("VmRSS")
    start = time.time()
    run = methods.build(run_config, task, p)  # a head is fitted here
    fitted = time.time() - start
    progress_ = initial_progress(p, run)
    optimize(p, run, progress_, label=f"{method} seed {run_config.seed}" if progress else None)
    best, log = progress_.best, progress_.log
    finish(p, run, best)
    peak = resident_memory.status_mb("VmHWM") if measured else None
    extra = peak - resident if peak is not None and resident is not None else None
    final = accuracies(p, split_logits(p, run.tuned, best["w"], p.eval_splits()), run.ensemble)
    head = run.ensemble
    return {"method": method, "seed": run_config.seed,
            **{f"{s}_acc": v for s, v in final.items()},
            "zero_shot_test_acc": zero_shot(log).get("test"),
            "forward_passes": methods.forward_passes(run.optimizer),
            "passes_per_step": 2 if run_config.spec.kind == Kind.FIRST_ORDER else 1,
            "image_encoding_passes": methods.image_encodings(p),
            "tuned": run_config.tuned, "head": head and head.head.kind,
            "head_features": head and head.stage, "head_augment": head and head.augment,
            "head_weight": head and ensemble_lib.weight_record(head.weight),
            "selected_at_forward_passes": best["forward_passes"],
            "wall_time_s": fitted + log[-1]["wall_time_s"], "peak_memory_mb": peak,
            "training_memory_mb": extra, "curve": log}


def _task_name(task: str) -> str:
    """The task in file names: an embedded task's name, or a data folder's last component."""
    return Path(task).name or "data"


def compare(config: CompareConfig, out: str | Path, progress: bool = True,
            report: Callable[[str], None] = print) -> list[dict]:
    """Runs every method on every task and seed; writes compare.json (every record),
    compare.md (a table per task) and compare-<task>.png (a plot per task) in `out`."""
    config.check()
    out = Path(out)
    run_dir.check_out(out)
    if (out / "compare.json").exists():
        raise RunError(f"{out} already holds a comparison (compare.json); use another --out, or "
                       "remove it first")
    start = time.time()
    records = []
    for task in config.tasks:
        for seed in config.seeds:
            # the seed draws the few-shot split and each method's projection and stream
            one = dataclasses.replace(config, base=dataclasses.replace(config.base, data=task,
                                                                       seed=seed))
            p = prepare(one.base, progress)
            # the views' encodings, shared by every head (not timed)
            p.head_features(tuple(dict.fromkeys(
                augment for m in config.methods for _, augment in methods.head_candidates(
                    method_config(one, m), p) if method_config(one, m).head_kind)))
            for method in config.methods:
                records.append({"task": task} | _method_run(p, method, one, progress))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compare.json", [{k: v for k, v in r.items() if k != "curve"} | {
        "curve": [{"forward_passes": row["forward_passes"], "test_acc": row.get("test_acc"),
                   "val_acc": row.get("val_acc"), "wall_time_s": row["wall_time_s"]}
                  for row in r["curve"]]} for r in records])
    base = config.base
    sections = [f"Measured on {machine.cpu_model()}, {torch.get_num_threads()} threads, torch "
                f"{torch.__version__}, {time.strftime('%Y-%m-%d')}. Forward-only budget "
                f"{base.budget} forward passes, CoOp {config.coop_budget} steps; {base.model} "
                f"model, {base.shots} shots, seeds {list(config.seeds)}. Accuracy of the prompt "
                f"selected on validation, mean ± 95% confidence interval over seeds. Total time "
                f"{time.time() - start:.0f} s."]
    for task in config.tasks:
        rows = [r for r in records if r["task"] == task]
        target = config.target or compare_report.target_accuracy(rows, config.methods)
        name = f"{base.dataset} under {task}" if base.dataset else task
        sections.append(f"### {name}\n\nTarget: {100 * target:.1f}% test accuracy.\n\n"
                        + compare_report.table(rows, config.methods, target))
        compare_report.plot(out / f"compare-{_task_name(task)}.png", rows, config.methods,
                            target, f"{name}: {base.model} model, {base.shots} shots")
    text = "\n\n".join(sections)
    write_text(out / "compare.md", text + "\n")
    report(text)
    return records
