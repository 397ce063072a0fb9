"""What `sharpzo-ext compare` reports from its records: per task, a markdown table (mean and 95%
confidence interval over seeds, Note [Intervals from a few seeds]; passes to a target accuracy
and to CoOp's level) and a plot of test accuracy against passes with confidence bands.

Note [Counting passes]
Methods spend their budgets differently, so the report counts one unit, a pass: a forward pass
of the text tower over the training images (a forward-only method's loss evaluation), each
encoding of the training images for a head (its views: 16 views are 16 passes, spent before
the first evaluation, and 32 where the head chooses between shift and flip-shift views), and
two for a step of a first-order method (its forward and its backward pass). An image-side
adapter's loss evaluation counts as a pass too, though it costs a small product over the cached
features instead of a text-tower pass (docs/adapter.md). The image features of every split,
which every method uses, are not counted.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from sharpzo_ext.clip.runs.confidence import mean_ci
from sharpzo_ext.files import atomic_path

__all__ = ["LABELS", "target_accuracy", "passes", "time_to", "table", "plot"]

LABELS = {"sharpzo": "SharpZO (ours)", "sharpzo-gda": "SharpZO tuned for GDA (ours)",
          "sharpzo-adapter": "SharpZO on the image-side adapter, for GDA (ours)",
          "sharpzo-joint": "SharpZO on prompt + adapter, for GDA (ours)",
          "clip-adapter": "the adapter by Adam, for GDA (first order)",
          "gda-final": "GDA on the final features, flip-shift views",
          "sharpzo-released": "SharpZO, released config",
          "zip": "ZIP", "spsa-gc": "SPSA-GC (BlackVIP's optimizer)", "zosgd": "ZOSGD (MeZO)",
          "sparsezo": "SparseZO", "cmaes": "CMA-ES (BBT)", "coop": "CoOp (first order)",
          "gda": "GDA (training-free head)", "tip-adapter": "Tip-Adapter (training-free head)",
          "linear-probe": "linear probe (first order, on features)"}


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


def passes(record: dict, forward_passes: int) -> int:
    """The passes (Note [Counting passes]) of a run of `record` after `forward_passes` of its
    own budget (CoOp: steps)."""
    per = record.get("passes_per_step", 2 if record["method"] == "coop" else 1)
    return per * forward_passes + record.get("image_encoding_passes", 0)


def time_to(record: dict, target: float) -> tuple[int | None, float | None]:
    """(passes, seconds) at the run's first evaluation whose test accuracy reaches target."""
    for row in record["curve"]:
        if row.get("test_acc", -1) >= target:
            return passes(record, row["forward_passes"]), row["wall_time_s"]
    return None, None


def _cell(values: list, scale: float, fmt: str) -> str:
    """mean ± half-width of the values there are, or nothing without any (a task without a
    shifted split)."""
    if all(v is None for v in values):
        return ""
    mean, half = mean_ci(values)
    return f"{scale * mean:{fmt}} ± {scale * half:{fmt}}"


def _median_over_seeds(values: list, seeds: int, fmt: str) -> str:
    """The median of the seeds that reached a level (with how many did, if not all)."""
    reached = [v for v in values if v is not None]
    suffix = f" ({len(reached)}/{seeds} seeds)" if len(reached) < seeds else ""
    return f"{statistics.median(reached):{fmt}}{suffix}" if reached else "not reached"


def table(records: list[dict], methods: tuple[str, ...], target: float) -> str:
    """One row per method: accuracies, passes (Note [Counting passes]), time and memory as
    mean ± 95% CI over seeds; passes and time to the target, and passes to CoOp's level (its
    mean test accuracy), as the median over the seeds that reach them."""
    coop = [r["test_acc"] for r in records if r["method"] == "coop"]
    level = statistics.fmean(coop) if coop else None
    header = ("| method | val acc | test acc | shifted acc | passes | wall time s | "
              "peak memory MB | training memory MB | to target: passes | "
              "to target: wall time s | to CoOp's level: passes |")
    lines = [header, "|" + " --- |" * 11]
    zero_shot = list(_zero_shot(records).values())
    lines.append(f"| zero-shot | | {_cell(zero_shot, 100, '.1f')} |" + " |" * 8)
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        if not rows:
            continue
        cells = [LABELS[method]]
        for key, scale, fmt in (("val_acc", 100, ".1f"), ("test_acc", 100, ".1f"),
                                ("shifted_acc", 100, ".1f")):
            cells.append(_cell([r.get(key) for r in rows], scale, fmt))
        cells.append(_cell([passes(r, r["forward_passes"]) for r in rows], 1, ".0f"))
        for key, scale, fmt in (("wall_time_s", 1, ".1f"), ("peak_memory_mb", 1, ".0f"),
                                ("training_memory_mb", 1, ".1f")):
            cells.append(_cell([r.get(key) for r in rows], scale, fmt))
        reached = [time_to(r, target) for r in rows]
        cells.append(_median_over_seeds([f for f, _ in reached], len(rows), ".0f"))
        cells.append(_median_over_seeds([s for _, s in reached], len(rows), ".1f"))
        cells.append("" if level is None else _median_over_seeds(
            [time_to(r, level)[0] for r in rows], len(rows), ".0f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _accuracy_at(record: dict, x: int) -> float | None:
    """A run's test accuracy after x passes: its last evaluation at or before x (None before
    its first, a head's views not yet encoded)."""
    done = [row for row in record["curve"] if passes(record, row["forward_passes"]) <= x]
    return max(done, key=lambda row: row["forward_passes"])["test_acc"] if done else None


def plot(path: Path, records: list[dict], methods: tuple[str, ...], target: float,
         title: str) -> None:
    """Mean test accuracy against passes, one line per method, with its 95% band; a head-only
    method, which has one evaluation, as a marker."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    if len(methods) > 10:  # the default cycle's 10 colours would repeat
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        if not rows:
            continue
        points = sorted({passes(r, row["forward_passes"]) for r in rows for row in r["curve"]})
        stats = [mean_ci([_accuracy_at(r, x) for r in rows]) for x in points]
        means = [100 * m for m, _ in stats]
        first_order = method in ("coop", "clip-adapter", "linear-probe")
        line, = ax.plot(points, means, label=LABELS[method], marker="o" if len(points) == 1
                        else None, linestyle="--" if first_order else "-")
        ax.fill_between(points, [m - 100 * h for m, (_, h) in zip(means, stats)],
                        [m + 100 * h for m, (_, h) in zip(means, stats)],
                        color=line.get_color(), alpha=0.15, linewidth=0)
    ax.axhline(100 * target, color="gray", linestyle=":", label=f"target {100 * target:.1f}%")
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlim(left=0)
    ax.set_xlabel("passes (forward passes; CoOp: 2 a step; heads: image encodings)")
    seeds = len({r["seed"] for r in records})
    ax.set_ylabel(f"test accuracy %, mean and 95% CI of {seeds} seeds")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the curves
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
