"""The files a run reads back, damaged in their values (Note [Loaded values are checked]): a
prompt file's vector and head, a run's state.pt and its lock. Each is refused in one line with
exit status 2, and a refused resume changes no file of the run directory; nothing outside it is
created."""

import math
import os
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sharpzo_ext.cli import main
from sharpzo_ext.clip.runs import prompt_file
from sharpzo_ext.clip.runs.config import RunError

BASE = ["--quiet", "--data", "embedded-grainy", "--head-views", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs: a prompt tuned for a GDA head (whose state.pt holds the head), and a
    Tip-Adapter head alone; and the feature cache they share."""
    root = tmp_path_factory.mktemp("loaded-files")
    cache = str(root / "cache")
    for name, options in (("gda", ["--method", "cmaes", "--head", "gda", "--budget", "100",
                                   "--eval-every", "50", "--popsize", "6"]),
                          ("tip", ["--method", "tip-adapter"])):
        assert main(["train", "--out", str(root / name), "--cache-dir", cache, *BASE,
                     *options]) == 0
    return root, cache


def copied(runs, name, tmp_path):
    root, _ = runs
    shutil.copytree(root / name, tmp_path / name)
    return tmp_path / name


def error_of(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def rewrite_prompt(path, tensors=None, metadata=None):
    with safe_open(str(path), framework="pt") as f:
        saved = f.metadata()
    file_tensors = load_file(str(path))
    save_file({**file_tensors, **(tensors or {})}, str(path), metadata={**saved,
                                                                          **(metadata or {})})


def nan_at(x, index=0):
    x = x.clone()
    x.view(-1)[index] = math.nan
    return x


# (run, tensors to replace given the file's, metadata to replace, what the one line names)
PROMPT_DAMAGE = {
    "w NaN": ("gda", lambda t: {"w": nan_at(t["w"])}, {}, "w holds values that are not finite"),
    "w inf": ("gda", lambda t: {"w": t["w"] + math.inf}, {}, "w holds values that are not"),
    "gda weight NaN": ("gda", lambda t: {"head.weight": nan_at(t["head.weight"], 5)}, {},
                       "weight holds values that are not finite"),
    "gda bias inf": ("gda", lambda t: {"head.bias": t["head.bias"] - math.inf}, {},
                     "bias holds values that are not finite"),
    "gda weight int": ("gda", lambda t: {"head.weight": t["head.weight"].long()}, {},
                       "weight must be a floating tensor"),
    "gda weight absurd": ("gda", lambda t: {"head.weight": t["head.weight"] * 1e300}, {},
                          "weight holds"),
    "temperature 1e300": ("gda", lambda t: {}, {"head_temperature": "1e300"}, "temperature"),
    "temperature NaN": ("gda", lambda t: {}, {"head_temperature": "nan"}, "temperature"),
    "temperature text": ("gda", lambda t: {}, {"head_temperature": "warm"}, "temperature"),
    "head weight NaN": ("gda", lambda t: {}, {"head_weight": "nan"}, "weight must be one of"),
    "head weight off the grid": ("gda", lambda t: {}, {"head_weight": "0.3"},
                                 "weight must be one of"),
    "tip keys NaN": ("tip", lambda t: {"head.keys": nan_at(t["head.keys"])}, {},
                     "keys holds values that are not finite"),
    "tip keys int": ("tip", lambda t: {"head.keys": t["head.keys"].long()}, {},
                     "keys must be a floating tensor"),
    "tip beta inf": ("tip", lambda t: {"head.beta": t["head.beta"] + math.inf}, {}, "beta"),
    "tip labels float": ("tip", lambda t: {"head.labels": t["head.labels"].double()}, {},
                         "labels must be a integer tensor"),
    "tip labels bool": ("tip", lambda t: {"head.labels": t["head.labels"] > 0}, {},
                        "labels must be a integer tensor"),
    "tip labels out of range": ("tip", lambda t: {"head.labels": t["head.labels"] + 10}, {},
                                "labels holds"),
}


QUICK = ("w NaN", "gda weight NaN", "temperature 1e300", "tip labels float")  # the rest: slow


@pytest.mark.parametrize("damage", [d if d in QUICK else pytest.param(d, marks=pytest.mark.slow)
                                    for d in sorted(PROMPT_DAMAGE)])
def test_eval_refuses_a_prompt_file_with_damaged_values(runs, tmp_path, capsys, damage):
    # #35.2-4: such files were scored at chance, exit 0, or ended in a traceback
    name, tensors, metadata, message = PROMPT_DAMAGE[damage]
    out = copied(runs, name, tmp_path)
    prompt = out / "prompt.safetensors"
    rewrite_prompt(prompt, tensors(load_file(str(prompt))), metadata)
    code, err = error_of(["eval", str(out), "--cache-dir", runs[1], "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err


def floating_tensors(path):
    return sorted(k for k, v in load_file(str(path)).items() if v.is_floating_point())


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), name=st.sampled_from(["gda", "tip"]),
       bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_any_non_finite_tensor_in_a_prompt_file_is_refused(runs, tmp_path_factory, data, name,
                                                          bad):
    out = copied(runs, name, tmp_path_factory.mktemp("prompt"))
    prompt = out / "prompt.safetensors"
    tensors = load_file(str(prompt))
    key = data.draw(st.sampled_from(floating_tensors(prompt)))
    x = tensors[key].clone()
    x.view(-1)[data.draw(st.integers(0, x.numel() - 1))] = bad
    rewrite_prompt(prompt, {key: x})
    with pytest.raises(RunError, match="not finite"):
        prompt_file.read(prompt)


def tensor_entries(value, path=()):
    """(path, tensor) of every floating tensor in a nested state."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.numel():
            yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from tensor_entries(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from tensor_entries(v, (*path, i))


def replaced(state, path, new):
    if len(path) == 1:
        state[path[0]] = new
    else:
        replaced(state[path[0]], path[1:], new)


def files_of(out):
    return {p.name: ("link", os.readlink(p)) if p.is_symlink() else
            (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}


def refused_resume(runs, out, capsys, message):
    files = files_of(out)
    code, err = error_of(["train", "--resume", str(out), "--budget", "200", "--cache-dir",
                          runs[1], "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert files_of(out) == files  # config.json too: its budget is not rewritten


STATE_DAMAGE = {  # #35.10: a resumed head was not checked
    "head weight NaN": (("ensemble", "tensors", "weight"), lambda x: nan_at(x), "weight holds"),
    "temperature NaN": (("ensemble", "temperature"), lambda x: math.nan, "temperature"),
    "cross-fitted of another shape": (("ensemble", "cross_fitted"), lambda x: x[:, :3],
                                      "cross_fitted must be"),
    "cross-fitted None": (("ensemble", "cross_fitted"), lambda x: None, "cross_fitted must be"),
    "cross-fitted NaN": (("ensemble", "cross_fitted"), lambda x: nan_at(x), "cross_fitted"),
    "weight int": (("ensemble", "tensors", "weight"), lambda x: x.long(), "weight must be"),
    "no bias": (("ensemble", "tensors"), lambda t: {"weight": t["weight"]}, "holds ['weight']"),
    "ensemble weight text": (("ensemble", "weight"), lambda x: "1", "weight must be one of"),
    "w NaN": (("w",), lambda x: nan_at(x), "w holds"),
    "best w of another shape": (("best", "w"), lambda x: x[:-1], "best.w must be"),
    "identity damaged": (("identity",), lambda x: 7, "damaged identity"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(STATE_DAMAGE))
def test_a_resume_from_a_damaged_state_is_refused_and_changes_no_file(runs, tmp_path, capsys,
                                                                      damage):
    path, change, message = STATE_DAMAGE[damage]
    out = copied(runs, "gda", tmp_path)
    state = torch.load(out / "state.pt", weights_only=True)
    entry = state
    for key in path:
        entry = entry[key]
    replaced(state, path, change(entry))
    torch.save(state, out / "state.pt")
    refused_resume(runs, out, capsys, message)


@pytest.mark.slow
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_any_non_finite_tensor_in_a_run_state_is_refused(runs, tmp_path_factory, capsys, data,
                                                         bad):
    out = copied(runs, "gda", tmp_path_factory.mktemp("state"))
    state = torch.load(out / "state.pt", weights_only=True)
    entries = list(tensor_entries(state))
    path, x = data.draw(st.sampled_from(entries), label="entry")
    x = x.contiguous().clone()
    x.view(-1)[data.draw(st.integers(0, x.numel() - 1), label="index")] = bad
    replaced(state, path, x)
    torch.save(state, out / "state.pt")
    refused_resume(runs, out, capsys, "not finite")


@pytest.mark.parametrize("content", ["text", "link to text"])
def test_a_state_that_is_not_a_pickle_is_refused_in_one_line(runs, tmp_path, capsys, content):
    # #35.8: an IndexError traceback from the weights-only unpickler
    out = copied(runs, "gda", tmp_path)
    (out / "state.pt").unlink()
    if content == "text":
        (out / "state.pt").write_text("hello\n" * 50)
    else:
        (tmp_path / "notes.txt").write_text("hello\n" * 50)
        (out / "state.pt").symlink_to(tmp_path / "notes.txt")
    refused_resume(runs, out, capsys, "cannot read")


def test_the_lock_never_follows_a_link(runs, tmp_path, capsys):
    # #35.9: the lock was opened in append mode through a symlink, creating its target
    out = copied(runs, "gda", tmp_path)
    (out / ".lock").unlink(missing_ok=True)
    target = tmp_path / "elsewhere" / "created-by-the-run"
    target.parent.mkdir()
    (out / ".lock").symlink_to(target)
    refused_resume(runs, out, capsys, "is a symbolic link")
    assert not target.exists()
