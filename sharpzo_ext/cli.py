"""The `sharpzo-ext` command (also `python -m sharpzo_ext`)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]


class CliError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _add_bench(sub) -> None:
    from sharpzo_ext.bench import SUITES  # noqa: PLC0415

    p = sub.add_parser("bench", help="run the microbenchmarks and print their table",
                       description="Microbenchmarks on torch.utils.benchmark. Ratios are "
                       "measured in one run; compare ratios, not times, across machines.")
    p.add_argument("--suite", action="append", choices=SUITES,
                   help="a suite to run (repeatable; default: all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--quick", action="store_true", help="small sizes, short runs")
    p.add_argument("--min-run-time", type=_positive_float, default=0.5,
                   help="seconds per measurement (default: 0.5)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(run=_run_bench)


def _run_bench(args) -> None:
    import torch  # noqa: PLC0415

    from sharpzo_ext.bench import SUITES, BenchConfig, run_suites  # noqa: PLC0415
    from sharpzo_ext.bench.common import environment  # noqa: PLC0415
    from sharpzo_ext.files import write_json  # noqa: PLC0415

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(f"--device {args.device}: no CUDA device is available")
    if args.device not in ("cpu",) and not args.device.startswith("cuda"):
        raise CliError(f"--device must be cpu or cuda, got {args.device!r}")
    config = BenchConfig(device=args.device, quick=args.quick, min_run_time=args.min_run_time)
    suites = run_suites(args.suite or SUITES, config, progress=lambda m: print(m, file=sys.stderr))
    for suite in suites:
        print(f"\n## {suite.name} ({args.device}, {torch.get_num_threads()} threads)\n")
        print(suite.table)
        if suite.targets:
            print("\nTargets:")
            for target in suite.targets:
                print("  " + target.line())
    if args.json:
        write_json(args.json, {
            "environment": environment(), "device": args.device, "quick": args.quick,
            "suites": [{"name": s.name, "records": s.records,
                        "targets": [{**vars(t), "met": t.met} for t in s.targets]}
                       for s in suites]})
        print(f"\nwrote {args.json}", file=sys.stderr)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="a short demonstration of the kernels")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> None:
    import torch  # noqa: PLC0415

    import sharpzo_ext as sz  # noqa: PLC0415

    print("sharpzo_ext demo: seeded in-place perturbations (the MeZO seed trick, fused)\n")
    w = torch.randn(1 << 20)
    w0 = w.clone()
    seed, eps = 2024, 1e-3
    sz.ops.perturb_(w, seed, scale=eps)        # w + eps z
    sz.ops.perturb_(w, seed, scale=-2 * eps)   # w - eps z: the same z, regenerated, not stored
    sz.ops.perturb_(w, seed, scale=eps)        # back to w
    print(f"+eps, -2 eps, +eps over 2^20 parameters: max |w - w0| = {(w - w0).abs().max():.2e}")
    z = sz.ops.sample(1 << 20, seed)
    print(f"the direction z: mean {z.mean():+.4f}, std {z.std():.4f} "
          f"(same bits on any thread count; regenerated from seed {seed})\n")
    args.suite, args.device, args.quick, args.min_run_time, args.json = None, "cpu", True, 0.05, None
    _run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sharpzo-ext",
                                     description="Forward-only fine-tuning: SharpZO and friends.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_bench(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except CliError as error:
        print(f"sharpzo-ext {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sharpzo-ext {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
