"""`sharpzo-ext compare`: forward-only methods against each other and against first-order CoOp,
on the same task, seeds and forward-pass budget.

Methods:
  sharpzo           SharpZO with this package's defaults (TrainConfig)
  sharpzo-released  SharpZO in the released code's configuration: coordinate-wise (CGE)
                    sharpness, 2d forward passes per generation, popsize 40, sigma 0.4, rho 0.1,
                    switch after 100 generations, every candidate evaluated in its own call
  zosgd             ZOSGD (MeZO): dense two-point steps
  sparsezo          SparseZO alone
  cmaes             CMA-ES alone in the intrinsic subspace (BBT)
  coop              first-order CoOp: Adam on the context vectors themselves, gradients by
                    autograd through the text tower (the reference upper bound); its budget is
                    counted in steps (a forward and a backward pass each), --coop-budget

Output in DIR: compare.json (one record per method and seed), compare.md (mean and std over
seeds, time to a target accuracy), compare.png (test accuracy against forward passes). Memory:
the process's peak resident memory while a method runs (its high-water mark reset before it,
Linux), and that peak minus the memory resident when it started (what the method itself adds).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Callable

from sharpzo_ext import checks
from sharpzo_ext.clip import methods, run_dir
from sharpzo_ext.clip.config import RunError, TrainConfig
from sharpzo_ext.clip.prepare import Prepared, prepare
from sharpzo_ext.clip.evaluate import accuracies
from sharpzo_ext.clip.train import initial_progress, optimize
from sharpzo_ext.files import atomic_path, write_json, write_text

__all__ = ["COMPARE_METHODS", "CompareConfig", "compare", "method_config"]

COMPARE_METHODS = ("sharpzo", "sharpzo-released", "zosgd", "sparsezo", "cmaes", "coop")
LABELS = {"sharpzo": "SharpZO (ours)", "sharpzo-released": "SharpZO, released config",
          "zosgd": "ZOSGD (MeZO)", "sparsezo": "SparseZO", "cmaes": "CMA-ES (BBT)",
          "coop": "CoOp (first order)"}


@dataclasses.dataclass
class CompareConfig:
    base: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    methods: tuple[str, ...] = COMPARE_METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    coop_budget: int = 2000
    coop_lr: float = 2e-3
    target: float | None = None  # test accuracy; None: 95% of CoOp's mean (else the best's)

    def check(self) -> None:
        """Raises RunError, naming the field, unless every field is valid (the base
        configuration with each method and seed included)."""
        unknown = [m for m in self.methods if m not in COMPARE_METHODS]
        if unknown or not self.methods:
            raise RunError(f"methods must be some of {', '.join(COMPARE_METHODS)}, got "
                           f"{list(self.methods)}")
        if not self.seeds:
            raise RunError("seeds must name at least one seed")
        try:
            checks.integer(self.coop_budget, "coop_budget", 1)
            if self.target is not None:
                target = checks.real(self.target, "target", positive=True)
                if target > 1:
                    raise ValueError(f"target must be a test accuracy in (0, 1], got {target}")
        except (TypeError, ValueError) as error:
            raise RunError(f"invalid configuration: {error}") from None
        for seed in self.seeds:
            for method in self.methods:
                method_config(dataclasses.replace(self, base=dataclasses.replace(
                    self.base, seed=seed)), method).check()


def method_config(config: CompareConfig, method: str) -> TrainConfig:
    """The run configuration of one compared method: `base` with the method, and for
    sharpzo-released the released code's settings, for coop its step budget and learning rate
    (evaluated 40 times over its run)."""
    base = config.base
    if method == "sharpzo-released":
        return dataclasses.replace(base, method="sharpzo", sharpness="cge", popsize=40,
                                   sigma=0.4, rho=0.1, switch_step=100, batched=False)
    if method == "coop":
        return dataclasses.replace(base, method="coop", budget=config.coop_budget,
                                   coop_lr=config.coop_lr,
                                   eval_every=max(1, config.coop_budget // 40))
    return dataclasses.replace(base, method=method)


# ---- peak memory of one method -----------------------------------------------------------------

def _reset_peak_rss() -> bool:
    """Resets the kernel's high-water mark of this process's resident memory (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float | None:
    """VmHWM (peak resident memory) or VmRSS (resident memory now) of this process, in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _method_run(p: Prepared, method: str, config: CompareConfig, progress: bool) -> dict:
    run_config = method_config(config, method)
    task = methods.make_task(run_config, p.loaded, p.data.classnames)
    run = methods.build(run_config, task, p.features["train"], p.labels["train"])
    best, log = initial_progress(p, task)
    measured = _reset_peak_rss()
    resident = _status_mb("VmRSS")
    best = optimize(p, run, run_config.budget, run_config.eval_every, best, log,
                    progress=progress, label=f"{method} seed {run_config.seed}")
    peak = _status_mb("VmHWM") if measured else None
    extra = peak - resident if peak is not None and resident is not None else None
    final = accuracies(p, task, best["w"], p.eval_splits())
    return {"method": method, "seed": run_config.seed,
            **{f"{s}_acc": v for s, v in final.items()},
            "zero_shot_test_acc": log[0].get("test_acc"),
            "forward_passes": methods.forward_passes(run.optimizer),
            "selected_at_forward_passes": best["forward_passes"],
            "wall_time_s": log[-1]["wall_time_s"], "peak_memory_mb": peak,
            "training_memory_mb": extra, "curve": log}


# ---- reporting ---------------------------------------------------------------------------------

def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _time_to(curve: list[dict], target: float) -> tuple[int | None, float | None]:
    for row in curve:
        if row.get("test_acc", -1) >= target:
            return row["forward_passes"], row["wall_time_s"]
    return None, None


def _table(records: list[dict], methods: tuple[str, ...], target: float) -> str:
    header = ("| method | val acc | test acc | shifted acc | forward passes | wall time s | "
              "peak memory MB | training memory MB | to target: forward passes | "
              "to target: wall time s |")
    lines = [header, "|" + " --- |" * 10]
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        if not rows:
            continue
        cells = [LABELS[method]]
        for key, scale, fmt in (("val_acc", 100, ".1f"), ("test_acc", 100, ".1f"),
                                ("shifted_acc", 100, ".1f"), ("forward_passes", 1, ".0f"),
                                ("wall_time_s", 1, ".1f"), ("peak_memory_mb", 1, ".0f"),
                                ("training_memory_mb", 1, ".1f")):
            mean, std = _mean_std([r.get(key) for r in rows])
            cells.append(f"{scale * mean:{fmt}} ± {scale * std:{fmt}}")
        reached = [_time_to(r["curve"], target) for r in rows]
        fwd = [f for f, _ in reached if f is not None]
        sec = [s for _, s in reached if s is not None]
        suffix = f" ({len(fwd)}/{len(rows)} seeds)" if len(fwd) < len(rows) else ""
        cells.append(f"{statistics.median(fwd):.0f}{suffix}" if fwd else "not reached")
        cells.append(f"{statistics.median(sec):.1f}{suffix}" if sec else "not reached")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(path: Path, records: list[dict], methods: tuple[str, ...], target: float) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        if not rows:
            continue
        points = sorted({row["forward_passes"] for r in rows for row in r["curve"]})
        means = []
        for x in points:  # each seed's accuracy at x: its last evaluation at or before x
            values = [max((row for row in r["curve"] if row["forward_passes"] <= x),
                          key=lambda row: row["forward_passes"])["test_acc"] for r in rows]
            means.append(statistics.fmean(values))
        ax.plot(points, means, label=LABELS[method], linestyle="--" if method == "coop" else "-")
    ax.axhline(target, color="gray", linestyle=":", label=f"target {100 * target:.1f}%")
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlim(left=0)
    ax.set_xlabel("forward passes (CoOp: steps of a forward and a backward pass)")
    ax.set_ylabel(f"test accuracy (mean of {len({r['seed'] for r in records})} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def compare(config: CompareConfig, out: str | Path, progress: bool = True,
            report: Callable[[str], None] = print) -> list[dict]:
    config.check()
    out = Path(out)
    run_dir.check_out(out)
    start = time.time()
    records = []
    for seed in config.seeds:
        p = prepare(dataclasses.replace(config.base, seed=seed), progress)
        for method in config.methods:
            records.append(_method_run(p, method, config, progress))
    target = config.target
    if target is None:
        coop = [r["test_acc"] for r in records if r["method"] == "coop"]
        reference = statistics.fmean(coop) if coop else max(
            statistics.fmean(r["test_acc"] for r in records if r["method"] == m)
            for m in config.methods)
        target = 0.95 * reference
    table = _table(records, config.methods, target)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compare.json", [{k: v for k, v in r.items() if k != "curve"} | {
        "curve": [{"forward_passes": row["forward_passes"], "test_acc": row.get("test_acc"),
                   "val_acc": row.get("val_acc"), "wall_time_s": row["wall_time_s"]}
                  for row in r["curve"]]} for r in records])
    header = (f"Task: {config.base.dataset or config.base.data} data, {config.base.model} model, "
              f"{config.base.shots} shots, seeds {list(config.seeds)}; forward-only budget "
              f"{config.base.budget} forward passes, CoOp {config.coop_budget} steps. Accuracy "
              f"of the prompt selected on validation (mean ± std over seeds); target = "
              f"{100 * target:.1f}% test accuracy. Total time {time.time() - start:.0f} s.\n\n")
    write_text(out / "compare.md", header + table + "\n")
    _plot(out / "compare.png", records, config.methods, target)
    report(header + table)
    return records
