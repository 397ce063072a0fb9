"""What `sharpzo-ext compare` reports from its records: per task, a markdown table (mean and 95%
confidence interval over seeds, Note [Intervals from a few seeds]; time to a target accuracy)
and a plot of test accuracy against forward passes with confidence bands."""

from __future__ import annotations

import statistics
from pathlib import Path

from sharpzo_ext.clip.confidence import mean_ci
from sharpzo_ext.files import atomic_path

__all__ = ["LABELS", "target_accuracy", "time_to", "table", "plot"]

LABELS = {"sharpzo": "SharpZO (ours)", "sharpzo-released": "SharpZO, released config",
          "zip": "ZIP", "spsa-gc": "SPSA-GC (BlackVIP's optimizer)", "zosgd": "ZOSGD (MeZO)",
          "sparsezo": "SparseZO", "cmaes": "CMA-ES (BBT)", "coop": "CoOp (first order)"}


def target_accuracy(records: list[dict], methods: tuple[str, ...]) -> float:
    """Zero-shot plus half of CoOp's gain over it (mean test accuracies: the level at which a
    forward-only method keeps half of what first-order tuning gains), or 95% of the best
    method's mean without CoOp."""
    coop = [r["test_acc"] for r in records if r["method"] == "coop"]
    if coop:
        zero_shot = statistics.fmean(_zero_shot(records).values())
        return zero_shot + 0.5 * (statistics.fmean(coop) - zero_shot)
    return 0.95 * max(
        statistics.fmean(r["test_acc"] for r in records if r["method"] == m) for m in methods
        if any(r["method"] == m for r in records))


def _zero_shot(records: list[dict]) -> dict[int, float]:
    """Zero-shot test accuracy of each seed (every method of a seed starts from it)."""
    return {r["seed"]: r["zero_shot_test_acc"] for r in records}


def time_to(curve: list[dict], target: float) -> tuple[int | None, float | None]:
    """(forward passes, seconds) at the first evaluation whose test accuracy reaches target."""
    for row in curve:
        if row.get("test_acc", -1) >= target:
            return row["forward_passes"], row["wall_time_s"]
    return None, None


def _cell(values: list, scale: float, fmt: str) -> str:
    mean, half = mean_ci(values)
    return f"{scale * mean:{fmt}} ± {scale * half:{fmt}}"


def table(records: list[dict], methods: tuple[str, ...], target: float) -> str:
    """One row per method: accuracies, budget, time and memory as mean ± 95% CI over seeds; time
    to target as the median over the seeds that reach it."""
    header = ("| method | val acc | test acc | shifted acc | forward passes | wall time s | "
              "peak memory MB | training memory MB | to target: forward passes | "
              "to target: wall time s |")
    lines = [header, "|" + " --- |" * 10]
    zero_shot = list(_zero_shot(records).values())
    lines.append(f"| zero-shot | | {_cell(zero_shot, 100, '.1f')} |" + " |" * 7)
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        if not rows:
            continue
        cells = [LABELS[method]]
        for key, scale, fmt in (("val_acc", 100, ".1f"), ("test_acc", 100, ".1f"),
                                ("shifted_acc", 100, ".1f"), ("forward_passes", 1, ".0f"),
                                ("wall_time_s", 1, ".1f"), ("peak_memory_mb", 1, ".0f"),
                                ("training_memory_mb", 1, ".1f")):
            cells.append(_cell([r.get(key) for r in rows], scale, fmt))
        reached = [time_to(r["curve"], target) for r in rows]
        fwd = [f for f, _ in reached if f is not None]
        sec = [s for _, s in reached if s is not None]
        suffix = f" ({len(fwd)}/{len(rows)} seeds)" if len(fwd) < len(rows) else ""
        cells.append(f"{statistics.median(fwd):.0f}{suffix}" if fwd else "not reached")
        cells.append(f"{statistics.median(sec):.1f}{suffix}" if sec else "not reached")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _accuracy_at(curve: list[dict], x: int) -> float:
    """A run's test accuracy after x forward passes: its last evaluation at or before x."""
    return max((row for row in curve if row["forward_passes"] <= x),
               key=lambda row: row["forward_passes"])["test_acc"]


def plot(path: Path, records: list[dict], methods: tuple[str, ...], target: float,
         title: str) -> None:
    """Mean test accuracy against forward passes, one line per method, with its 95% band."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        if not rows:
            continue
        points = sorted({row["forward_passes"] for r in rows for row in r["curve"]})
        stats = [mean_ci([_accuracy_at(r["curve"], x) for r in rows]) for x in points]
        means = [100 * m for m, _ in stats]
        line, = ax.plot(points, means, label=LABELS[method],
                        linestyle="--" if method == "coop" else "-")
        ax.fill_between(points, [m - 100 * h for m, (_, h) in zip(means, stats)],
                        [m + 100 * h for m, (_, h) in zip(means, stats)],
                        color=line.get_color(), alpha=0.15, linewidth=0)
    ax.axhline(100 * target, color="gray", linestyle=":", label=f"target {100 * target:.1f}%")
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlim(left=0)
    ax.set_xlabel("forward passes (CoOp: steps of a forward and a backward pass)")
    seeds = len({r["seed"] for r in records})
    ax.set_ylabel(f"test accuracy %, mean and 95% CI of {seeds} seeds")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
