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
# gave, the configuration's dataclasses supply every default (one place), and the commands know
# which values were set on purpose. That matters where a saved value competes with an option:
# a resumed run or an evaluated prompt keeps what it recorded, and an explicit value that
# contradicts it is refused rather than silently ignored or silently applied.
def _add_config_options(p, config, command: str, groups: dict) -> None:
    """The options of `command` that the fields of the dataclass instance `config` make (Note
    [Options made from the config]), each absent from the namespace unless given (Note
    [Explicit options]), its default shown from `config`; in the argument groups of `groups`
    (a group title for each name, made when first used)."""
    import dataclasses  # noqa: PLC0415

    from sharpzo_ext.clip.runs.config import GROUPS  # noqa: PLC0415

    for field in dataclasses.fields(config):
        meta = field.metadata
        if command not in meta.get("commands", ()):
            continue
        if meta["group"] not in groups:
            groups[meta["group"]] = p.add_argument_group(GROUPS[meta["group"]])
        value = getattr(config, field.name)
        shown = meta["shown"] or (" ".join(map(str, value)) if isinstance(value, tuple)
                                  else value)
        groups[meta["group"]].add_argument(
            f"--{field.name.replace('_', '-')}", default=argparse.SUPPRESS,
            help=f"{meta['help']} (default: {shown})".replace("%", "%%"), **meta["argparse"])


def _add_train(p) -> None:
    from sharpzo_ext.clip.runs.config import TrainConfig  # noqa: PLC0415

    _add_config_options(p, TrainConfig(), "train", {})
    p.add_argument("--out", help="run directory (default: runs/<method>-<time>)")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR (to --budget if larger than its own)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_run_train)


def _explicit(args) -> set[str]:
    """The TrainConfig fields the command line set (Note [Explicit options])."""
    import dataclasses  # noqa: PLC0415

    from sharpzo_ext.clip.runs.config import TrainConfig  # noqa: PLC0415

    return {f.name for f in dataclasses.fields(TrainConfig)} & set(vars(args))


def _config_from(args, base=None):
    """TrainConfig from the options given, `base`'s values (default: TrainConfig's defaults)
    for the others."""
    import dataclasses  # noqa: PLC0415

    from sharpzo_ext.clip.runs.config import TrainConfig  # noqa: PLC0415

    return dataclasses.replace(base or TrainConfig(),
                               **{k: getattr(args, k) for k in _explicit(args)})


def _run_config(args, directory):
    """TrainConfig from the options given, and for the others the values the run in
    `directory` saved, if it has a config.json, else the defaults (Note [Explicit options]):
    what `eval RUN` evaluates and `train --resume RUN` continues."""
    from pathlib import Path  # noqa: PLC0415

    from sharpzo_ext.clip.runs import run_dir  # noqa: PLC0415

    saved_file = Path(directory) / "config.json"
    if not saved_file.is_file():
        return _config_from(args)
    return _config_from(args, run_dir.read_config_file(saved_file))


def _run_train(args) -> None:
    import time  # noqa: PLC0415

    from sharpzo_ext.clip.runs.train import train  # noqa: PLC0415

    if args.resume and args.out:
        raise CliError("--resume DIR continues the run in DIR; --out does not apply")
    # a resume goes on to the run's own budget, and further only with an explicit --budget
    config = _run_config(args, args.resume) if args.resume else _config_from(args)
    out = args.resume or args.out or f"runs/{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    if train(config, out, resume=bool(args.resume), progress=not args.quiet,
             explicit=_explicit(args)):
        print(f"run directory: {out}")  # rank 0 (the only one that writes)


def _add_eval(p) -> None:
    from sharpzo_ext.clip.runs.config import TrainConfig  # noqa: PLC0415

    p.add_argument("target", metavar="RUN", help="a run directory, or a prompt .safetensors file")
    _add_config_options(p, TrainConfig(), "eval", {})
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
    from sharpzo_ext.clip.runs.compare import CompareConfig  # noqa: PLC0415

    c, groups = CompareConfig(), {}
    _add_config_options(p, c, "compare", groups)
    _add_config_options(p, c.base, "compare", groups)
    p.add_argument("--out", help="output directory (default: runs/compare-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_run_compare)


def _run_compare(args) -> None:
    import dataclasses  # noqa: PLC0415
    import time  # noqa: PLC0415

    from sharpzo_ext.clip.runs.compare import CompareConfig, compare  # noqa: PLC0415

    if "tasks" in vars(args) and "data" in vars(args):
        raise CliError("--tasks and --data both name what to compare on; give one")
    c = CompareConfig()
    own = {f.name for f in dataclasses.fields(c) if f.metadata}  # the comparison's options
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in own}
    if "data" in vars(args):
        given["tasks"] = (args.data,)
    config = dataclasses.replace(c, base=_config_from(args, c.base), **given)
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
