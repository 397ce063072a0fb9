"""The `sharpzo-ext` command (also `python -m sharpzo_ext`)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from sharpzo_ext.errors import UserError

__all__ = ["main"]


class CliError(UserError):
    """A user error: printed as one line, exit status 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seconds(text: str) -> float:
    from sharpzo_ext.bench.common import MAX_MIN_RUN_TIME  # noqa: PLC0415

    value = float(text)
    if not 0 < value <= MAX_MIN_RUN_TIME:  # nan and inf fail this too
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_MIN_RUN_TIME:g}] seconds, got "
                                         f"{text}")
    return value


def _add_bench(p) -> None:
    from sharpzo_ext.bench import SUITES  # noqa: PLC0415

    p.add_argument("--suite", action="append", choices=SUITES,
                   help="a suite to run (repeatable; default: all but the real-size suites "
                   "memory, backends, clip-realsize and adapter-realsize, which take minutes "
                   "each)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--quick", action="store_true", help="small sizes, short runs")
    p.add_argument("--min-run-time", type=_seconds, default=None,
                   help="seconds per measurement (default: 0.5, or 0.05 with --quick; a value "
                   "given here applies with --quick too)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables as a Markdown page "
                   "that names the machine and the date (the docs' benchmark pages)")
    p.set_defaults(handler=_run_bench)


def _run_bench(args) -> None:
    import torch  # noqa: PLC0415

    from sharpzo_ext.bench import DEFAULT_SUITES, BenchConfig, run_suites  # noqa: PLC0415
    from sharpzo_ext.bench.common import environment, machine_line  # noqa: PLC0415
    import time  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from sharpzo_ext.files import path_problem, write_json, write_text  # noqa: PLC0415

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(f"--device {args.device}: no CUDA device is available")
    if args.device not in ("cpu",) and not args.device.startswith("cuda"):
        raise CliError(f"--device must be cpu or cuda, got {args.device!r}")
    for option in ("json", "markdown"):
        problem = getattr(args, option) and path_problem(getattr(args, option), directory=False)
        if problem:
            raise CliError(f"--{option}: {problem}")
    if args.json and args.markdown and Path(args.json).resolve() == Path(args.markdown).resolve():
        raise CliError(f"--json and --markdown both name {args.markdown}; the second would "
                       "overwrite the first: give two files")
    config = BenchConfig(device=args.device, quick=args.quick, min_run_time=args.min_run_time)
    suites = run_suites(args.suite or DEFAULT_SUITES, config,
                        progress=lambda m: print(m, file=sys.stderr))
    where = machine_line(args.device)
    sections = []
    for suite in suites:
        lines = [f"## {suite.name} ({where}, {torch.get_num_threads()} threads)", "", suite.table]
        if suite.targets:
            lines += ["", "Targets:", ""] + [f"- {target.line()}" for target in suite.targets]
        sections.append("\n".join(lines))
    print("\n" + "\n\n".join(sections))
    if args.markdown:
        write_text(args.markdown, f"# Benchmarks: {', '.join(s.name for s in suites)}\n\n"
                   f"Written by `sharpzo-ext bench` on {time.strftime('%Y-%m-%d')}, torch "
                   f"{torch.__version__}{', quick sizes' if args.quick else ''}.\n\n"
                   + "\n\n".join(sections) + "\n")
        print(f"\nwrote {args.markdown}", file=sys.stderr)
    if args.json:
        write_json(args.json, {
            "environment": environment(), "device": args.device, "quick": args.quick,
            "suites": [{"name": s.name, "records": s.records,
                        "targets": [{**vars(t), "met": t.met} for t in s.targets]}
                       for s in suites]})
        print(f"\nwrote {args.json}", file=sys.stderr)


# Note [Explicit options]
# Options of a run default to argparse.SUPPRESS: the namespace holds only what the command line
# gave, the TrainConfig dataclass supplies every default (one place), and the commands know
# which values were set on purpose. That matters where a saved value competes with an option:
# a resumed run or an evaluated prompt keeps what it recorded, and an explicit value that
# contradicts it is refused rather than silently ignored or silently applied.
def _option(p, flag: str, default, help: str | None = None, **kwargs) -> None:
    """An option of a run: absent from the namespace unless given (Note [Explicit options])."""
    text = f"{help} " if help else ""
    p.add_argument(flag, default=argparse.SUPPRESS, help=f"{text}(default: {default})".replace(
        "%", "%%"), **kwargs)


def _add_run_options(p, d) -> None:
    """Model, data and task options shared by train, eval and compare."""
    from sharpzo_ext.clip.engine.precision import PRECISIONS  # noqa: PLC0415
    from sharpzo_ext.clip.engine.backend import BACKENDS  # noqa: PLC0415
    from sharpzo_ext.clip.task.prompt_task import INTRINSIC_DIM_CAP  # noqa: PLC0415
    from sharpzo_ext.files import CACHE_ENV, CACHE_HOME  # noqa: PLC0415

    _option(p, "--model", d.model, "open_clip model name (e.g. ViT-B-16, RN50), 'embedded', or "
            "hf:PATH_OR_NAME, a Hugging Face CLIP checkpoint directory or cached hub name")
    _option(p, "--pretrained", d.pretrained, "open_clip pretrained tag (e.g. openai; needs a "
            "network once) or a local checkpoint file")
    _option(p, "--data", d.data, "a built-in task ('embedded'; 'embedded-cluttered', "
            "'embedded-grainy', 'embedded-colors', 'embedded-stencil', 'digits': "
            "docs/results.md), an ImageFolder tree, or CoOp's data root with --dataset")
    _option(p, "--dataset", d.dataset, "a CoOp data set under --data (caltech101, oxford_pets, "
            "stanford_cars, oxford_flowers, food101, sun397, dtd, eurosat, ucf101, "
            "fgvc_aircraft, imagenet)")
    _option(p, "--shots", d.shots, "images per class", type=int)
    _option(p, "--seed", d.seed, type=int)
    _option(p, "--device", d.device)
    _option(p, "--ctx-init", d.ctx_init, "words that start the context")
    _option(p, "--intrinsic-dim", f"min({INTRINSIC_DIM_CAP}, context size / 2)",
            "length of the tuned vector", type=int)
    _option(p, "--precision", d.precision, "the text tower's linear layers: fp32, bf16, or int8 "
            "(CPU only; docs/clip.md)", choices=PRECISIONS)
    _option(p, "--backend", d.backend, "runs the text tower: torch, or onnxruntime (an ONNX "
            "export, cached in --cache-dir; fp32 or int8; docs/backends.md)", choices=BACKENDS)
    _option(p, "--cache-dir", f"${CACHE_ENV} or {CACHE_HOME}", "feature cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_head_options(p, d, head_default) -> None:
    """--head, --head-views, --head-augment, --head-features and --adapter-dim, of train and
    compare."""
    from sharpzo_ext.clip.runs.config import (HEAD_AUGMENTS, HEAD_CHOICES,  # noqa: PLC0415
                                              HEAD_FEATURES, MAX_HEAD_VIEWS)

    _option(p, "--head", head_default, "tune for this closed-form head on the image features, "
            "ensembled with it by a weight chosen on validation (none: what is tuned alone)",
            choices=HEAD_CHOICES)
    _option(p, "--head-views", d.head_views, "views of each training image whose features a "
            f"head averages, 1 to {MAX_HEAD_VIEWS}; each costs an encoding of the training "
            "images for each kind of views", type=int)
    _option(p, "--head-augment", d.head_augment, "the views: none (the image alone), shift, "
            "flip-shift (shifts and horizontal flips; not for digits, text or anything with a "
            "handedness), or auto: chosen on validation", choices=HEAD_AUGMENTS)
    _option(p, "--head-features", d.head_features, "the image features a head reads: final, "
            "pre (before the image tower's projection; wider), or auto: chosen on validation",
            choices=HEAD_FEATURES)
    _option(p, "--adapter-dim", d.adapter_dim, "the image-side adapter's tuned dimension",
            type=int)


def _add_train(p) -> None:
    from sharpzo_ext.clip.runs.config import (DEFAULT_TUNE, HYPERPARAMETERS,  # noqa: PLC0415
                                              TrainConfig)
    from sharpzo_ext.clip.runs.method_table import METHODS, TUNED  # noqa: PLC0415

    d = TrainConfig()
    _add_run_options(p, d)
    _option(p, "--method", d.method, "; ".join(f"{name}: {spec.help}" for name, spec in
                                              METHODS.items()), choices=tuple(METHODS))
    _option(p, "--tune", f"{DEFAULT_TUNE} (coop: prompt; clip-adapter: adapter)", "what a "
            "forward-only method tunes: the prompt, the image-side adapter over the cached "
            "features (a candidate costs no text-tower pass), or both as one vector",
            choices=TUNED)
    _add_head_options(p, d, d.head)
    _option(p, "--budget", d.budget, "training forward passes; coop: steps", type=int)
    p.add_argument("--out", help="run directory (default: runs/<method>-<time>)")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR (to --budget if larger than its own)")
    _option(p, "--eval-every", d.eval_every, "forward passes between validation evaluations",
            type=int)
    for field in HYPERPARAMETERS:
        settings = dict(field.metadata)
        _option(p, f"--{field.name.replace('_', '-')}", field.default, settings.pop("help"),
                **({} if "choices" in settings else {"type": type(field.default)}), **settings)
    _option(p, "--shard", d.shard, "under torchrun: split the candidates or the training "
            "images across the processes (only losses travel; every process applies the same "
            "update)", choices=("population", "data"))
    p.set_defaults(handler=_run_train)


def _explicit(args) -> set[str]:
    """The TrainConfig fields the command line set (Note [Explicit options])."""
    import dataclasses  # noqa: PLC0415

    from sharpzo_ext.clip.runs.config import TrainConfig  # noqa: PLC0415

    return {f.name for f in dataclasses.fields(TrainConfig)} & set(vars(args))


def _config_from(args, **changes):
    """TrainConfig from the options given, its defaults for the others."""
    from sharpzo_ext.clip.runs.config import TrainConfig  # noqa: PLC0415

    return TrainConfig(**{**{k: getattr(args, k) for k in _explicit(args)}, **changes})


def _run_config(args, directory):
    """TrainConfig from the options given, and for the others the values the run in
    `directory` saved, if it has a config.json, else the defaults (Note [Explicit options]):
    what `eval RUN` evaluates and `train --resume RUN` continues."""
    from pathlib import Path  # noqa: PLC0415

    from sharpzo_ext.clip.runs import run_dir  # noqa: PLC0415

    saved_file = Path(directory) / "config.json"
    if not saved_file.is_file():
        return _config_from(args)
    saved = run_dir.read_config_file(saved_file)
    return _config_from(args, **{k: getattr(saved, k) for k in vars(saved)
                                 if k not in _explicit(args)})


def _run_train(args) -> None:
    import time  # noqa: PLC0415

    from sharpzo_ext.clip.runs.train import train  # noqa: PLC0415

    if args.resume and args.out:
        raise CliError("--resume DIR continues the run in DIR; --out does not apply")
    # a resume goes on to the run's own budget, and further only with an explicit --budget
    config = _run_config(args, args.resume) if args.resume else _config_from(args)
    if "head" in vars(args) and not config.tunes_anything and config.head != config.method:
        raise CliError(f"--method {config.method} is the {config.method} head on the zero-shot "
                       f"prompt; --head {config.head} does not apply")
    out = args.resume or args.out or f"runs/{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    if train(config, out, resume=bool(args.resume), progress=not args.quiet,
             explicit=_explicit(args)):
        print(f"run directory: {out}")  # rank 0 (the only one that writes)


def _add_eval(p) -> None:
    from sharpzo_ext.clip.runs.config import TrainConfig  # noqa: PLC0415

    p.add_argument("target", metavar="RUN", help="a run directory, or a prompt .safetensors file")
    _add_run_options(p, TrainConfig())
    p.set_defaults(handler=_run_eval)


def _run_eval(args) -> None:
    from pathlib import Path  # noqa: PLC0415

    from sharpzo_ext.clip.runs.evaluate import evaluate_prompt  # noqa: PLC0415

    target = Path(args.target)
    if not target.exists():
        raise CliError(f"{target} does not exist (expected a run directory or a prompt file)")
    prompt = target / "prompt.safetensors" if target.is_dir() else target
    config = _run_config(args, target) if target.is_dir() else _config_from(args)
    accuracies = evaluate_prompt(prompt, config, progress=not args.quiet,
                                 explicit=_explicit(args))
    for split, acc in accuracies.items():
        print(f"{split:8s} {100 * acc:.1f}%")


def _add_compare(p) -> None:
    from sharpzo_ext.clip.runs.compare import (COMPARE_METHODS, COMPARED,  # noqa: PLC0415
                                               CompareConfig)
    from sharpzo_ext.clip.runs.config import TrainConfig  # noqa: PLC0415
    from sharpzo_ext.clip.data.datasets import BUILTIN_TASKS  # noqa: PLC0415

    d, c = TrainConfig(), CompareConfig()
    _add_run_options(p, d)
    p.add_argument("--tasks", nargs="+", choices=BUILTIN_TASKS, default=None,
                   help=f"built-in tasks to compare on (default: {' '.join(c.tasks)}; "
                   "--data DATA instead: that one task)")
    p.add_argument("--methods", nargs="+", choices=COMPARE_METHODS, default=list(c.methods),
                   help="; ".join(f"{row.name}: {row.help}" for row in COMPARED.values())
                   + f" (default: {' '.join(c.methods)})")
    _add_head_options(p, d, c.base.head)
    p.add_argument("--seeds", nargs="+", type=int, default=list(c.seeds))
    p.add_argument("--budget", type=int, default=c.base.budget,
                   help=f"forward passes of every forward-only method ({c.base.budget}, ZIP's "
                   "query budget)")
    p.add_argument("--coop-budget", type=int, default=c.coop_budget,
                   help=f"steps of first-order CoOp ({c.coop_budget})")
    p.add_argument("--coop-lr", type=float, default=c.coop_lr)
    p.add_argument("--adapter-budget", type=int, default=c.adapter_budget,
                   help=f"steps of first-order clip-adapter ({c.adapter_budget})")
    p.add_argument("--target", type=float, default=None,
                   help="test accuracy for 'time to target' (default: zero-shot plus half of "
                   "CoOp's gain over it)")
    p.add_argument("--eval-every", type=int, default=100,
                   help="forward passes between evaluations (100: fine curves, precise times "
                   "to target)")
    p.add_argument("--out", help="output directory (default: runs/compare-<time>)")
    p.set_defaults(handler=_run_compare)


def _run_compare(args) -> None:
    import time  # noqa: PLC0415

    from sharpzo_ext.clip.runs.compare import DEFAULT_TASKS, CompareConfig, compare  # noqa: PLC0415

    c = CompareConfig()
    if args.tasks and "data" in vars(args):
        raise CliError("--tasks and --data both name what to compare on; give one")
    tasks = args.tasks or ([args.data] if "data" in vars(args) else DEFAULT_TASKS)
    config = CompareConfig(base=_config_from(args, head=getattr(args, "head", c.base.head)),
                           tasks=tuple(tasks),
                           methods=tuple(args.methods),
                           seeds=tuple(args.seeds), coop_budget=args.coop_budget,
                           coop_lr=args.coop_lr, adapter_budget=args.adapter_budget,
                           target=args.target)
    out = args.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}"
    compare(config, out, progress=not args.quiet)
    print(f"output directory: {out}")


# Note [Sub-commands built on demand]
# A sub-command's options import what they offer (the method table, the benchmark suites), and
# those imports are most of the command's start-up: `bench` would load the whole CLIP layer. So
# the parser holds every sub-command's name and help, and the options of the one that runs only
# (all of them for the command's own --help and for docs/cli.md).
COMMANDS = {  # name: (help, description, what adds its options)
    "train": ("tune a CLIP prompt with forward passes only", "Tunes a CLIP prompt with a "
              "forward-only optimizer, selects it on validation and reports test (and "
              "shifted-split) accuracy. With no arguments: SharpZO on the embedded default model "
              "and task.", _add_train),
    "eval": ("evaluate a saved prompt", "Accuracy of a saved prompt (a run directory's "
             "prompt.safetensors) on the run's data, or on other data of the same classes with "
             "--data/--dataset.", _add_eval),
    "compare": ("SharpZO against forward-only baselines and CoOp", "Runs methods on the same "
                "tasks, seeds and forward-pass budget; writes compare.json, compare.md and "
                "compare-<task>.png.", _add_compare),
    "bench": ("run the microbenchmarks and print their table", "Microbenchmarks on "
              "torch.utils.benchmark. Ratios are measured in one run; compare ratios, not times, "
              "across machines.", _add_bench),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command's parser, with the options of `command` (None: of every sub-command; Note
    [Sub-commands built on demand])."""
    parser = _Parser(prog="sharpzo-ext",
                     description="Forward-only fine-tuning: SharpZO and friends.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help, description, add_options) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=description)
        if command in (None, name):
            add_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    try:
        args.handler(args)
    except UserError as error:
        print(f"sharpzo-ext {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # what no check foresaw (a disk that fills up): still one line
        where = f"{error.filename}: " if error.filename else ""
        print(f"sharpzo-ext {args.command}: error: {where}{error.strerror or error}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sharpzo-ext {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
