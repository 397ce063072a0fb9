"""The main job end to end on the embedded default: `sharpzo-ext train` / `eval`, the run
directory, resumption, the feature cache, and the errors users get."""

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from sharpzo_ext.cli import main
from sharpzo_ext.clip.runs.config import TrainConfig
from sharpzo_ext.clip.runs.train import train

from markers import INT8

FAST = dict(method="cmaes", budget=1200, eval_every=200)


def run(tmp_path, cache, name="run", **kwargs):
    config = TrainConfig(cache_dir=cache, **{**FAST, **kwargs})
    return train(config, tmp_path / name, progress=False, report=lambda s: None)


@pytest.mark.slow
def test_a_run_writes_its_directory_and_beats_zero_shot(tmp_path, cache):
    summary = run(tmp_path, cache)
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} == {"config.json", "log.jsonl", "state.pt",
                                               "prompt.safetensors", "accuracy.png",
                                               "summary.json", ".lock"}
    saved = json.loads((out / "summary.json").read_text())
    for key in ("zero_shot_test_acc", "test_acc", "forward_passes", "wall_time_s",
                "peak_memory_mb"):
        assert key in saved
    for key in ("zero_shot_test_acc", "test_acc", "val_acc", "shifted_acc"):
        assert 0 <= saved[key] <= 1
    assert saved["forward_passes"] >= 1200
    assert summary["test_acc"] >= summary["zero_shot_test_acc"] + 0.05
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["forward_passes"] for row in log] == sorted(row["forward_passes"] for row in log)
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("precision", [pytest.param("int8", marks=INT8), "bf16"])
def test_a_low_precision_run_tunes_as_well(tmp_path, cache, precision):
    exact = run(tmp_path, cache, "fp32")
    low = run(tmp_path, cache, precision, precision=precision)
    assert json.loads((tmp_path / precision / "config.json").read_text())["precision"] == precision
    assert low["zero_shot_test_acc"] == pytest.approx(exact["zero_shot_test_acc"], abs=0.02)
    assert low["test_acc"] >= low["zero_shot_test_acc"] + 0.05
    assert low["test_acc"] == pytest.approx(exact["test_acc"], abs=0.05)


@pytest.mark.slow
def test_an_onnxruntime_run_tunes_as_the_torch_run_does(tmp_path, cache):
    exact = run(tmp_path, cache, "torch")
    engine = run(tmp_path, cache, "onnxruntime", backend="onnxruntime")
    assert json.loads((tmp_path / "onnxruntime" / "config.json").read_text())["backend"] == \
        "onnxruntime"
    assert list(Path(cache).glob("text-tower-*.onnx"))  # cached beside the features
    assert engine["zero_shot_test_acc"] == exact["zero_shot_test_acc"]
    assert engine["test_acc"] == pytest.approx(exact["test_acc"], abs=0.005)


@pytest.mark.slow
def test_a_hugging_face_checkpoint_trains_from_the_command_line(tmp_path, cache, capsys):
    from hf_helpers import save_hf_clip

    save_hf_clip(tmp_path / "checkpoint")
    argv = ["train", "--model", f"hf:{tmp_path / 'checkpoint'}", "--method", "cmaes",
            "--budget", "100", "--eval-every", "50", "--cache-dir", cache, "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert main(argv + ["--out", str(tmp_path / "b")]) == 0
    first, second = (json.loads((tmp_path / r / "summary.json").read_text()) for r in "ab")
    assert first["model"] == f"hf:{tmp_path / 'checkpoint'}"
    assert first["forward_passes"] >= 100
    assert all(second["feature_cache_hits"].values())  # keyed by the checkpoint's weights
    assert second["test_acc"] == first["test_acc"]


@pytest.mark.slow
def test_resume_continues_the_same_trajectory(tmp_path, cache):
    straight = run(tmp_path, cache, "straight", budget=1200)
    run(tmp_path, cache, "resumed", budget=600)
    config = TrainConfig(cache_dir=cache, **{**FAST, "budget": 1200})
    resumed = train(config, tmp_path / "resumed", resume=True, progress=False,
                    report=lambda s: None)
    for key in ("test_acc", "val_acc", "forward_passes", "selected_at_forward_passes"):
        assert resumed[key] == straight[key]
    log_a = (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "wall_time_s"}  # noqa: E731
                          for r in rows]
    assert strip(log_a) == strip(log_b)


@pytest.mark.slow
def test_feature_cache_misses_then_hits(tmp_path):
    cache = str(tmp_path / "cold-cache")
    first = run(tmp_path, cache, "a", budget=100)
    second = run(tmp_path, cache, "b", budget=100)
    assert not any(first["feature_cache_hits"].values())
    assert all(second["feature_cache_hits"].values())
    other_seed = run(tmp_path, cache, "c", budget=100, seed=1)  # other shots: other train data
    assert not other_seed["feature_cache_hits"]["train"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["zosgd", "zip"])  # zip: its low-rank prompt is recorded
def test_cli_train_and_eval(tmp_path, cache, capsys, method):
    out = tmp_path / "cli"
    assert main(["train", "--method", method, "--budget", "400", "--out", str(out),
                 "--cache-dir", cache, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "zero-shot" in printed and "tuned" in printed and str(out) in printed
    summary = json.loads((out / "summary.json").read_text())
    assert main(["eval", str(out), "--cache-dir", cache, "--quiet"]) == 0
    lines = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert float(lines["test"].rstrip("%")) == pytest.approx(100 * summary["test_acc"], abs=0.051)


def error_of(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_cli_errors_are_one_line(tmp_path, cache, capsys):
    base = ["--cache-dir", cache, "--quiet"]
    cases = [
        (["train", "--model", "ViT-Q-99", "--out", str(tmp_path / "a")], "unknown model"),
        (["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")],
         "does not exist"),
        (["train", "--pretrained", str(tmp_path / "nothing.safetensors"),
          "--out", str(tmp_path / "c")], "missing"),
        (["eval", str(tmp_path / "no-run")], "does not exist"),
        (["train", "--method", "coop", "--precision", "int8", "--out", str(tmp_path / "d")],
         "coop trains with gradients"),
        (["train", "--method", "coop", "--backend", "onnxruntime", "--out", str(tmp_path / "e")],
         "which the onnxruntime backend has none of"),
        (["train", "--backend", "onnxruntime", "--precision", "bf16", "--out",
          str(tmp_path / "f")], "runs precision fp32 or int8, not 'bf16'"),
        (["train", "--model", f"hf:{tmp_path / 'no-checkpoint'}", "--out", str(tmp_path / "g")],
         "is neither a directory nor a model in the Hugging Face cache"),
        (["train", "--model", f"hf:{tmp_path}", "--out", str(tmp_path / "h")],
         "has no readable config.json"),
    ]
    for argv, message in cases:
        code, err = error_of(argv + base, capsys)
        assert code == 2 and len(err) == 1 and message in err[0], (argv, err)
    for name in ("a", "b", "c", "d", "e", "f", "g", "h"):
        assert not (tmp_path / name).exists()  # nothing written


@pytest.mark.slow
def test_an_intrinsic_dim_that_does_not_fit_the_context_is_one_line(tmp_path, cache, capsys):
    # #28.7: zip with --intrinsic-dim 3 gave a traceback about `rank`; #28.10: 100000 tried to
    # allocate an 80 GB covariance
    base = ["--cache-dir", cache, "--quiet", "--budget", "20"]
    for argv, message in [
        (["train", "--method", "zip", "--intrinsic-dim", "3"],
         "a low-rank prompt needs intrinsic_dim of at least one per context token (4)"),
        (["compare", "--methods", "zip", "--seeds", "0", "--intrinsic-dim", "3"],
         "at least one per context token"),
        (["train", "--method", "cmaes", "--intrinsic-dim", "100000"],
         "intrinsic_dim must be at most the context's size, 4 tokens x 64 = 256, got 100000"),
    ]:
        code, err = error_of(argv + base + ["--out", str(tmp_path / "x")], capsys)
        assert code == 2 and len(err) == 1 and message in err[0], (argv, err)
        assert not (tmp_path / "x").exists()
    assert main(["train", "--method", "cmaes", "--intrinsic-dim", "256", "--out",
                 str(tmp_path / "whole")] + base) == 0  # the whole context is fine


def test_class_folder_without_images_and_corrupt_image(tmp_path, cache, capsys):
    root = tmp_path / "folder"
    for name in ("circle", "square"):
        for i in range(3):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(root / name / f"{i}.png")
    (root / "star").mkdir()
    code, err = error_of(["train", "--data", str(root), "--out", str(tmp_path / "x"),
                          "--cache-dir", cache, "--quiet"], capsys)
    assert code == 2 and "has no images" in err[0]
    (root / "star" / "0.png").write_bytes(b"garbage")
    (root / "star" / "1.png").write_bytes(b"garbage")
    code, err = error_of(["train", "--data", str(root), "--shots", "1", "--out",
                          str(tmp_path / "x"), "--cache-dir", cache, "--quiet"], capsys)
    assert code == 2 and "cannot read image" in err[0] and "star" in err[0]
    assert not (tmp_path / "x").exists()


def test_checkpoint_of_another_model_is_refused(tmp_path, cache, capsys):
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"token_ids": torch.arange(3, dtype=torch.int32),
               "token_rows": torch.zeros(3, 8, dtype=torch.float16)}, str(wrong))
    code, err = error_of(["train", "--pretrained", str(wrong), "--out", str(tmp_path / "x"),
                          "--cache-dir", cache, "--quiet"], capsys)
    assert code == 2 and "not a checkpoint of the embedded model" in err[0]


def test_a_prompt_for_other_classes_is_refused(tmp_path, cache, capsys):
    run(tmp_path, cache, "run", budget=100)
    root = tmp_path / "folder"
    for name in ("circle", "square"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 90, 0, 0)).save(root / name / f"{i}.png")
    code, err = error_of(["eval", str(tmp_path / "run"), "--data", str(root), "--cache-dir",
                          cache, "--quiet"], capsys)
    assert code == 2 and "other classes" in err[0]


def test_an_existing_run_is_not_overwritten(tmp_path, cache):
    run(tmp_path, cache, "run", budget=100)
    from sharpzo_ext.clip.runs.config import RunError

    with pytest.raises(RunError, match="already holds a run"):
        run(tmp_path, cache, "run", budget=100)


def test_unknown_open_clip_tag_and_ill_fitting_checkpoint(tmp_path):
    from sharpzo_ext.clip.families import ModelError, load_model

    with pytest.raises(ModelError, match="neither a file nor a pretrained tag"):
        load_model("RN50", pretrained="not-a-tag")
    bad = tmp_path / "rn50.pt"
    torch.save({"state_dict": {"visual.conv1.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ModelError, match="does not fit model RN50"):
        load_model("RN50", pretrained=str(bad))


@pytest.mark.slow
def test_coop_is_a_method_of_train_and_resumes_its_trajectory(tmp_path, cache):
    coop = dict(method="coop", budget=40, eval_every=10)
    straight = run(tmp_path, cache, "straight", **coop)
    assert straight["forward_passes"] == 40  # steps of a forward and a backward pass
    assert straight["test_acc"] > straight["zero_shot_test_acc"]
    run(tmp_path, cache, "resumed", **{**coop, "budget": 20})
    config = TrainConfig(cache_dir=cache, **coop)
    resumed = train(config, tmp_path / "resumed", resume=True, progress=False,
                    report=lambda s: None)
    for key in ("test_acc", "val_acc", "forward_passes", "selected_at_forward_passes"):
        assert resumed[key] == straight[key]


# ---- #12: runs that cannot start or continue write nothing -----------------------------------

def test_classes_with_fewer_images_than_shots_train(tmp_path, cache, capsys):
    # #12: 3 classes of 20 images (10 train after the test split) and 16 shots crashed in einsum.
    root = tmp_path / "folder"
    for c, name in enumerate(("circle", "square", "triangle")):
        (root / name).mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (8, 8), (80 * c, 10 * i, 0)).save(root / name / f"{i}.png")
    assert main(["train", "--data", str(root), "--budget", "60", "--method", "cmaes",
                 "--eval-every", "30", "--out", str(tmp_path / "run"), "--cache-dir", cache,
                 "--quiet"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["val_acc"] is not None


@pytest.mark.slow
def test_eval_keeps_the_projection_the_prompt_was_tuned_with(tmp_path, cache, capsys):
    # #12: `eval RUN --seed 5` silently evaluated the prompt under another projection.
    summary = run(tmp_path, cache, "run", budget=300, seed=3)
    prompt = tmp_path / "run" / "prompt.safetensors"
    code, err = error_of(["eval", str(tmp_path / "run"), "--seed", "5", "--cache-dir", cache,
                          "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and "seed = 3" in err[0]
    # the prompt file alone, without --seed: its own seed wins over the default 0
    assert main(["eval", str(prompt), "--shots", "16", "--cache-dir", cache, "--quiet"]) == 0
    lines = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert float(lines["test"].rstrip("%")) == pytest.approx(100 * summary["test_acc"], abs=0.051)


def test_a_second_writer_of_a_run_directory_is_refused(tmp_path, cache, capsys):
    from sharpzo_ext.clip.runs import run_dir

    out = tmp_path / "run"
    with run_dir.RunDir(out).locked():  # another run writing there
        code, err = error_of(["train", "--out", str(out), "--budget", "100", "--cache-dir",
                              cache, "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and "in use by another run" in err[0]
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


@pytest.mark.slow
@pytest.mark.parametrize("damage, message", [
    (lambda out: (out / "state.pt").write_bytes((out / "state.pt").read_bytes()[:100]),
     "cannot read"),
    (lambda out: (out / "config.json").write_text("{not json"), "cannot read"),
    (lambda out: (out / "config.json").write_text(json.dumps(
        {k: v for k, v in json.loads((out / "config.json").read_text()).items()
         if k != "method"})), "no method"),
    (lambda out: (out / "config.json").write_text(json.dumps(
        {**json.loads((out / "config.json").read_text()), "method": "zosgd"})),
     "not a ZOSGD state dict"),
    (lambda out: (out / "config.json").write_text(json.dumps(
        {**json.loads((out / "config.json").read_text()), "lr": -1})), "lr must be"),
])
def test_a_damaged_run_fails_to_resume_and_changes_no_file(tmp_path, cache, capsys, damage,
                                                          message):
    out = tmp_path / "run"
    run(tmp_path, cache, "run", budget=200)
    damage(out)
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = error_of(["train", "--resume", str(out), "--budget", "400", "--cache-dir", cache,
                          "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


class RunsCode:
    """Unpickling it runs a shell command (what a crafted state.pt would carry)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_run_state_that_would_run_code_is_refused_and_never_runs(tmp_path, cache, capsys):
    # #28.15: --resume unpickled state.pt with weights_only=False, running whatever it held
    out, marker = tmp_path / "run", tmp_path / "payload-ran"
    run(tmp_path, cache, "run", budget=200)
    state = torch.load(out / "state.pt", weights_only=True)
    state["log"].append(RunsCode(marker))
    torch.save(state, out / "state.pt")
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = error_of(["train", "--resume", str(out), "--budget", "400", "--cache-dir", cache,
                          "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and "does not load (unpickling them could run code)" \
        in err[0], err
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_a_resume_refuses_options_that_contradict_the_run(tmp_path, cache, capsys):
    out = tmp_path / "run"
    run(tmp_path, cache, "run", budget=200)
    code, err = error_of(["train", "--resume", str(out), "--method", "zosgd", "--cache-dir",
                          cache, "--quiet"], capsys)
    assert code == 2 and "method = 'cmaes'" in err[0]
    assert main(["train", "--resume", str(out), "--budget", "400", "--method", "cmaes",
                 "--cache-dir", cache, "--quiet"]) == 0  # agreeing options are fine


def test_eval_with_a_bad_config_is_one_line(tmp_path, cache, capsys):
    run(tmp_path, cache, "run", budget=100)
    (tmp_path / "run" / "config.json").write_text("[1, 2]")
    code, err = error_of(["eval", str(tmp_path / "run"), "--cache-dir", cache, "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and "not a run configuration" in err[0]


@pytest.mark.slow
def test_a_cache_file_of_other_rows_is_recomputed(tmp_path):
    from safetensors.torch import load_file, save_file

    cache = str(tmp_path / "cache")
    run(tmp_path, cache, "a", budget=100)
    for path in (tmp_path / "cache").glob("features-*.safetensors"):
        features = load_file(str(path))
        save_file({k: v[:-1].contiguous() for k, v in features.items()}, str(path))
    summary = run(tmp_path, cache, "b", budget=100)
    assert not any(summary["feature_cache_hits"].values())


def test_run_and_cache_files_have_the_usual_mode(tmp_path):
    # #12: prompt.safetensors and the cache files were 0600, the other run files 0644.
    import os

    cache = str(tmp_path / "cache")
    umask = os.umask(0o022)
    try:
        run(tmp_path, cache, "run", budget=100)
    finally:
        os.umask(umask)
    files = [*(tmp_path / "run").iterdir(), *(tmp_path / "cache").iterdir()]
    assert {oct(p.stat().st_mode & 0o777) for p in files if p.name != ".lock"} == {"0o644"}


def test_a_resume_refuses_a_model_or_data_that_changed(tmp_path, cache, capsys):
    # #28.1: a resume carried on over other weights or other images, mixing them in one log
    import shutil

    from sharpzo_ext.clip.families import embedded

    weights = tmp_path / "weights.safetensors"
    shutil.copy(embedded.asset_path(), weights)
    root = tmp_path / "folder"
    for c, name in enumerate(("circle", "square")):
        (root / name).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (100 * c, 20 * i, 0)).save(root / name / f"{i}.png")
    argv = ["--cache-dir", cache, "--quiet", "--method", "cmaes", "--eval-every", "20"]
    out = tmp_path / "run"
    assert main(["train", "--pretrained", str(weights), "--data", str(root), "--budget", "40",
                 "--out", str(out)] + argv) == 0
    resume = ["train", "--resume", str(out), "--budget", "80"] + argv
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(weights), framework="pt") as f:  # the same tensors, other bytes
        metadata = f.metadata()
    save_file(load_file(str(weights)), str(weights), metadata={**metadata, "edited": "yes"})
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = error_of(resume, capsys)
    assert code == 2 and len(err) == 1 and "the model's weights are not those" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    # the data: one image replaced
    out2 = tmp_path / "run2"
    assert main(["train", "--data", str(root), "--budget", "40", "--out", str(out2)] + argv) == 0
    Image.new("RGB", (8, 8), (0, 0, 255)).save(root / "circle" / "3.png")
    code, err = error_of(["train", "--resume", str(out2), "--budget", "80"] + argv, capsys)
    assert code == 2 and len(err) == 1 and "the data is not what the run was tuned on" in err[0]


_STRAIGHT = {}


def _cli_run(argv):
    """main(argv) with stdout and stderr silenced: its exit status."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


@pytest.mark.slow
@settings(max_examples=4, deadline=None)
@given(stop=st.integers(min_value=1, max_value=3), method=st.sampled_from(["cmaes", "zosgd"]))
def test_a_run_interrupted_anywhere_resumes_from_its_directory_alone_to_the_same_end(stop,
                                                                                     method):
    # #28.4: `train --resume DIR` without --budget ran to the option's default, 20000 forward
    # passes, instead of the run's own budget
    import tempfile
    from pathlib import Path

    from sharpzo_ext.clip.runs import run_dir

    options = ["--method", method, "--budget", "400", "--eval-every", "100", "--head-views",
               "2", "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = ["--cache-dir", str(tmp / "cache")]
        if method not in _STRAIGHT:
            assert _cli_run(["train", "--out", str(tmp / "straight")] + options + cache) == 0
            _STRAIGHT[method] = json.loads((tmp / "straight" / "summary.json").read_text())
        real, calls = run_dir.RunDir.save_progress, []

        def save_then_stop(*args, **kwargs):
            real(*args, **kwargs)
            calls.append(1)
            if len(calls) == stop:
                raise KeyboardInterrupt

        out = tmp / "interrupted"
        run_dir.RunDir.save_progress = save_then_stop
        try:
            assert _cli_run(["train", "--out", str(out)] + options + cache) == 130
        finally:
            run_dir.RunDir.save_progress = real
        assert not (out / "summary.json").exists()
        assert _cli_run(["train", "--resume", str(out)] + cache + ["--quiet"]) == 0
        resumed = json.loads((out / "summary.json").read_text())
    for key in ("test_acc", "val_acc", "forward_passes", "selected_at_forward_passes",
                "head_weight"):
        assert resumed[key] == _STRAIGHT[method][key], key
