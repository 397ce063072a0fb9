"""Paths the command cannot write (#28.8): a run directory to resume, the parent of --out, a cold
feature cache, the cache of an ONNX export, bench's --json: one line naming the path, exit
status 2, and nothing changed. As root, permissions do not stop writes, so the paths live on a
read-only tmpfs (skipped where mounting is not allowed); otherwise they are chmod'ed."""

import contextlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings, strategies as st

from sharpzo_ext.cli import main

RUN = ["--method", "cmaes", "--budget", "40", "--eval-every", "20", "--head-views", "2",
       "--quiet"]


def cli(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue().splitlines()


def files_under(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A read-only directory holding a finished run ("run") and a feature cache warm for the
    run's data ("cache"; no ONNX export)."""
    work = tmp_path_factory.mktemp("writable")
    assert cli(["train", "--out", str(work / "run"), "--cache-dir", str(work / "cache")]
               + RUN)[0] == 0
    root = tmp_path_factory.mktemp("read-only")
    if os.geteuid() != 0:
        shutil.copytree(work, root, dirs_exist_ok=True)
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        yield root
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root, and mounting a read-only tmpfs is not allowed here")
    try:
        shutil.copytree(work, root, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


def cases(root: Path, tmp: Path) -> dict:
    writable_cache = ["--cache-dir", str(tmp / "cache")]
    return {
        "the parent of --out": (["train", "--out", str(root / "new" / "run")] + RUN
                                + writable_cache, str(root)),
        "the run directory to resume": (["train", "--resume", str(root / "run"), "--budget",
                                         "80", "--quiet"] + writable_cache, str(root / "run")),
        "a cold feature cache": (["train", "--out", str(tmp / "a"), "--cache-dir",
                                  str(root / "cache"), "--data", "embedded-grainy"] + RUN,
                                 str(root / "cache")),
        "the ONNX export's cache": (["train", "--out", str(tmp / "b"), "--cache-dir",
                                     str(root / "cache"), "--backend", "onnxruntime",
                                     "--precision", "int8"] + RUN, str(root / "cache")),
        "bench's --json": (["bench", "--suite", "cmaes", "--quick", "--json",
                            str(root / "bench.json")], str(root)),
    }


CASES = ["the parent of --out", "the run directory to resume", "a cold feature cache",
         "the ONNX export's cache", "bench's --json"]


def every_case(test):
    for case in CASES:
        test = example(which=case)(test)
    return test


@pytest.mark.slow
@settings(max_examples=len(CASES), deadline=None)
@given(which=st.sampled_from(CASES))
@every_case
def test_a_path_that_cannot_be_written_is_one_line_and_changes_nothing(read_only, which,
                                                                       tmp_path_factory):
    tmp = tmp_path_factory.mktemp("elsewhere")
    argv, named = cases(read_only, tmp)[which]
    before = files_under(read_only)
    code, err = cli(argv)
    assert code == 2 and len(err) == 1 and "error:" in err[0] and named in err[0], (which, err)
    assert files_under(read_only) == before
