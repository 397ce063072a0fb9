"""Property-based fuzzing of the command line (hypothesis): invalid configurations of train,
eval, compare and bench, alone or among valid options, must give one line on stderr, exit
status 2, and write no file at all."""

import contextlib
import io
import os
import tempfile
from pathlib import Path

from hypothesis import given, settings, strategies as st

from sharpzo_ext.cli import main

# (option, invalid values) of `train`; "FILE" and "FILE/sub" stand for an existing file and a
# path under it, "DIR" for an existing directory, "GARBAGE" for a file that is no checkpoint.
TRAIN_FAULTS = {
    "--lr": ["-1", "nan", "inf", "abc"], "--sigma": ["0", "-1"], "--eps": ["0", "-0.1"],
    "--rho": ["-1", "nan"], "--popsize": ["1", "0", "-3", "2.5"], "--switch-step": ["-1"],
    "--sharpness-queries": ["0"], "--density": ["0", "2", "-0.5", "nan"],
    "--seed": ["-1", str(2**64)], "--intrinsic-dim": ["-1", "0", "100000"], "--n-ctx": ["0", "2.5"],
    "--shots": ["0", "-2"],
    "--budget": ["0", "-5"], "--eval-every": ["0"], "--q": ["0"], "--coop-lr": ["-1", "0"],
    "--method": ["foo"], "--sharpness": ["foo"], "--shard": ["foo"], "--device": ["tpu"],
    "--data": ["/nonexistent/data", "FILE"], "--out": ["FILE", "FILE/sub"],
    "--resume": ["/nonexistent/run", "DIR"], "--pretrained": ["GARBAGE", "DIR"],
    "--model": ["no-such-model"], "--precision": ["fp8"], "--head": ["knn"],
    "--head-views": ["0", "257", "2.5"], "--head-augment": ["mirror"],
    "--head-features": ["middle"], "--tune": ["head"], "--adapter-dim": ["0", "-4", "2.5"],
    "--adapter-lr": ["-1", "0", "nan"],
}
VALID_TRAIN = {"--lr": "0.01", "--popsize": "6", "--density": "0.3", "--seed": "3",
               "--budget": "50", "--sharpness": "none", "--shots": "2", "--q": "2"}
OTHER_FAULTS = [
    ["eval", "/nonexistent/run"], ["eval", "DIR"], ["eval", "GARBAGE"],
    ["compare", "--coop-budget", "-1"], ["compare", "--target", "-1"],
    ["compare", "--target", "2"], ["compare", "--out", "FILE"], ["compare", "--seeds", "-1"],
    ["compare", "--methods", "foo"], ["compare", "--budget", "0"], ["compare", "--tasks", "foo"],
    ["compare", "--tasks", "embedded", "--data", "embedded"],
    ["train", "--method", "coop", "--precision", "int8"],
    ["train", "--method", "gda", "--head", "linear-probe"], ["compare", "--head", "knn"],
    ["train", "--method", "gda", "--head", "none"], ["compare", "--out", "COMPARISON"],
    ["bench", "--json", "same.md", "--markdown", "same.md"],
    ["bench", "--json", "/proc/sharpzo-bench.json"],
    ["compare", "--head-views", "0"], ["compare", "--seeds", "0", "0", "0"],
    ["compare", "--adapter-budget", "0"], ["compare", "--adapter-dim", "0"],
    ["compare", "--head-features", "middle"], ["train", "--method", "coop", "--tune", "adapter"],
    ["train", "--head-views", "1", "--head-augment", "flip-shift"],
    ["compare", "--methods", "cmaes", "cmaes"], ["compare", "--tasks", "embedded", "embedded"],
    ["bench", "--json", "DIR"], ["bench", "--json", "FILE/sub"], ["bench", "--device", "tpu"],
    ["bench", "--min-run-time", "0"], ["bench", "--suite", "foo"], ["frobnicate"],
    ["bench", "--min-run-time", "inf"], ["bench", "--min-run-time", "nan"],
    ["bench", "--min-run-time", "61"],
]


def files_under(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


def run_in(root: Path, argv: list[str]) -> tuple[int, list[str]]:
    """main(argv) with cwd `root` and the placeholders filled in: (exit status, stderr
    lines)."""
    fill = {"FILE": str(root / "a-file"), "FILE/sub": str(root / "a-file" / "sub"),
            "DIR": str(root / "a-dir"), "GARBAGE": str(root / "garbage.bin"),
            "COMPARISON": str(root / "a-comparison")}
    argv = [fill.get(a, a) for a in argv]
    err, out = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse
                code = exit_.code
    finally:
        os.chdir(cwd)
    return code, err.getvalue().splitlines()


def check_refused(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a-file").write_text("x")
        (root / "a-dir").mkdir()
        (root / "garbage.bin").write_bytes(os.urandom(64))
        (root / "a-comparison").mkdir()
        (root / "a-comparison" / "compare.json").write_text("[]")
        before = files_under(root)
        code, err = run_in(root, argv)
        assert code == 2, (argv, code, err)
        assert len(err) == 1 and "error:" in err[0], (argv, err)
        assert files_under(root) == before, argv  # nothing written, nothing changed


@settings(max_examples=40)
@given(fault=st.sampled_from(sorted(TRAIN_FAULTS)), data=st.data(),
       valid=st.dictionaries(st.sampled_from(sorted(VALID_TRAIN)), st.just(None), max_size=4))
def test_an_invalid_train_configuration_writes_nothing(fault, data, valid):
    value = data.draw(st.sampled_from(TRAIN_FAULTS[fault]))
    argv = ["train", "--quiet", "--cache-dir", "cache"]
    for option in valid:
        if option != fault:
            argv += [option, VALID_TRAIN[option]]
    if fault != "--resume" and fault != "--out":
        argv += ["--out", "out"]
    check_refused(argv + [fault, value])


@settings(max_examples=len(OTHER_FAULTS))
@given(argv=st.sampled_from(OTHER_FAULTS))
def test_invalid_eval_compare_and_bench_commands_write_nothing(argv):
    check_refused([*argv, "--quiet"] if argv[0] in ("eval", "compare") else argv)


def test_the_fault_table_covers_every_hyperparameter_of_train():
    from sharpzo_ext.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    numeric = {a.option_strings[0] for a in train._actions
               if a.type in (int, float) and a.option_strings}
    assert numeric <= set(TRAIN_FAULTS), numeric - set(TRAIN_FAULTS)


def test_an_explicit_min_run_time_holds_with_quick():
    # #28.6: --quick silently replaced --min-run-time with 0.05
    from sharpzo_ext.bench.common import BenchConfig

    assert BenchConfig(quick=True, min_run_time=0.2).effective_min_run_time == 0.2
    assert BenchConfig(quick=True).effective_min_run_time == 0.05
    assert BenchConfig().effective_min_run_time == 0.5
