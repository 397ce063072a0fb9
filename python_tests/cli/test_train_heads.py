"""Runs with a closed-form head: a prompt tuned for it, the head-only methods, what their run
directories keep, and the refusals."""

import json
import math

import pytest
import torch
from PIL import Image

from sharpzo_ext.cli import main
from sharpzo_ext.clip.task import heads
from sharpzo_ext.clip.runs.config import RunError, TrainConfig
from sharpzo_ext.clip.runs.evaluate import evaluate_prompt
from sharpzo_ext.clip.runs.train import train

FAST = dict(method="cmaes", budget=600, eval_every=200, data="embedded-grainy", head_views=4)


def run(out, cache, resume=False, **kwargs):
    config = TrainConfig(cache_dir=cache, **{**FAST, **kwargs})
    return train(config, out, resume=resume, progress=False, report=lambda s: None)


@pytest.mark.slow
def test_a_prompt_tuned_for_a_head_never_ends_below_the_head_alone(tmp_path, cache):
    summary = run(tmp_path / "run", cache, head="gda")
    assert summary["head"] == "gda" and summary["head_views"] == 4
    assert summary["val_acc"] >= summary["head_alone_val_acc"]
    assert summary["image_encodings"] == 2 * 4 * 160  # shift and flip-shift views, 4 each
    weight = summary["head_weight"]
    assert summary["selected"] == ("the gda head alone" if weight == "inf" else
                                   "the prompt alone" if weight == 0 else
                                   f"the prompt + the gda head (weight {weight:g})")
    # the zero-shot accuracies stay those of the zero-shot prompt alone
    plain = run(tmp_path / "plain", cache, head="none", budget=200)
    assert summary["zero_shot_test_acc"] == plain["zero_shot_test_acc"]
    # eval of the saved prompt scores it with its head at its weight: the same accuracies
    config = TrainConfig(cache_dir=cache, data="embedded-grainy")
    again = evaluate_prompt(tmp_path / "run" / "prompt.safetensors", config, progress=False)
    assert again["test"] == summary["test_acc"] and again["val"] == summary["val_acc"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", heads.HEADS)
def test_a_head_only_method_costs_no_forward_pass(tmp_path, cache, kind):
    summary = run(tmp_path / kind, cache, method=kind)
    assert summary["forward_passes"] == 0 and summary["head"] == kind
    assert summary["test_acc"] > summary["zero_shot_test_acc"] + 0.1
    config = TrainConfig(cache_dir=cache, data="embedded-grainy")
    again = evaluate_prompt(tmp_path / kind / "prompt.safetensors", config, progress=False)
    assert again["test"] == summary["test_acc"]


@pytest.mark.slow
def test_a_resumed_run_keeps_its_head(tmp_path, cache, monkeypatch):
    straight = run(tmp_path / "straight", cache, budget=800)
    run(tmp_path / "resumed", cache, budget=400)
    # the head comes from state.pt: a resume that fitted one again would fail here
    monkeypatch.setattr(heads, "fit", lambda *a: pytest.fail("the head was fitted again"))
    resumed = run(tmp_path / "resumed", cache, resume=True, budget=800)
    for key in ("test_acc", "val_acc", "forward_passes", "head_weight", "head_alone_test_acc"):
        assert resumed[key] == straight[key], key
    monkeypatch.undo()
    state = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    del state["ensemble"]
    torch.save(state, tmp_path / "resumed" / "state.pt")
    with pytest.raises(RunError, match="it holds no gda head"):
        run(tmp_path / "resumed", cache, resume=True, budget=1000)


def test_a_config_from_before_heads_resumes_without_one():
    saved = {k: v for k, v in TrainConfig().__dict__.items() if k not in ("head", "head_views")}
    config = TrainConfig.from_saved(saved, "config.json")
    assert config.head == "none" and config.head_kind is None


def error_of(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def folder(root, images_per_class):
    for c, name in enumerate(("circle", "square", "triangle")):
        (root / name).mkdir(parents=True)
        for i in range(images_per_class):
            Image.new("RGB", (8, 8), (80 * c, 10 * i, 0)).save(root / name / f"{i}.png")
    return root


def test_heads_refuse_what_they_cannot_do_in_one_line(tmp_path, cache, capsys):
    # a split of 2 images per class leaves 1 to train and 1 to test: no val split
    no_val = folder(tmp_path / "no-val", 2)
    base = ["--cache-dir", cache, "--quiet", "--budget", "20", "--method", "cmaes"]
    code, err = error_of(["train", "--data", str(no_val), "--out", str(tmp_path / "a")] + base,
                         capsys)
    assert code == 2 and len(err) == 1 and "chosen on validation" in err[0] \
        and "--head none" in err[0]
    assert not (tmp_path / "a").exists()
    assert main(["train", "--data", str(no_val), "--head", "none", "--out",
                 str(tmp_path / "b")] + base) == 0
    code, err = error_of(["train", "--method", "gda", "--head", "tip-adapter", "--out",
                          str(tmp_path / "c"), "--cache-dir", cache, "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and "head 'tip-adapter' does not apply" in err[0]
    assert not (tmp_path / "c").exists()
    code, err = error_of(["train", "--head-views", "0", "--out", str(tmp_path / "d")] + base,
                         capsys)
    assert code == 2 and len(err) == 1 and "head_views must be an int in [1, 256]" in err[0]


@pytest.mark.slow
def test_one_shot_heads_and_a_prompt_tuned_for_one(tmp_path, cache):
    gda = run(tmp_path / "gda", cache, method="gda", shots=1)
    tuned = run(tmp_path / "tuned", cache, shots=1, budget=200)  # the head abstains in training
    assert gda["test_acc"] > gda["zero_shot_test_acc"]
    assert tuned["val_acc"] >= tuned["head_alone_val_acc"]


def test_eval_refuses_a_head_of_other_features(tmp_path, cache, capsys):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    run(tmp_path / "run", cache, method="gda")
    prompt = tmp_path / "run" / "prompt.safetensors"
    with safe_open(str(prompt), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(prompt))
    tensors["head.weight"] = torch.zeros(10, 7, dtype=torch.float64)  # 7 wide, not 64
    save_file(tensors, str(prompt), metadata=metadata)
    code, err = error_of(["eval", str(tmp_path / "run"), "--cache-dir", cache, "--quiet"],
                         capsys)
    assert code == 2 and len(err) == 1 and "head for features of width 7" in err[0]
    tensors["head.bias"] = torch.zeros(3, dtype=torch.float64)  # no longer one per class
    save_file(tensors, str(prompt), metadata=metadata)
    code, err = error_of(["eval", str(tmp_path / "run"), "--cache-dir", cache, "--quiet"],
                         capsys)
    assert code == 2 and len(err) == 1 and "holds a damaged 'gda' head" in err[0]


def test_summary_files_hold_the_head_alone_weight_as_json(tmp_path, cache):
    run(tmp_path / "run", cache, method="gda")
    text = (tmp_path / "run" / "summary.json").read_text()
    weight = json.loads(text)["head_weight"]
    assert "Infinity" not in text and (weight == "inf" or math.isfinite(weight))
