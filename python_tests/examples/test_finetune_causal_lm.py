"""examples/finetune_causal_lm.py on a tiny random OPT: the optimizers as drop-in torch.optim
classes on a model that is not CLIP. The loss falls with every weight, with LoRA adapters and in
bfloat16; a run resumed from its checkpoint ends where the straight run ends, bit for bit."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = next(p for p in Path(__file__).resolve().parents
            if (p / "examples" / "finetune_causal_lm.py").is_file())


def _example():
    spec = importlib.util.spec_from_file_location(
        "finetune_causal_lm", ROOT / "examples" / "finetune_causal_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _example()


def _losses(*argv):
    return example.finetune(example.parser().parse_args(["--tiny", "--quiet", *argv]))


def _fell(losses, by):
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    return last < first * (1 - by), (first, last)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,by", [("zosgd", 0.1), ("sparsezo", 0.02)])
def test_the_loss_falls(optimizer, by):
    fell, (first, last) = _fell(_losses("--optimizer", optimizer, "--steps", "300"), by)
    assert fell, f"{optimizer}: mean loss {first:.3f} over the first 20 steps, {last:.3f} last"


@pytest.mark.slow
def test_lora_adapters_train():
    # MeZO users report LoRA with MeZO failing to converge: here the adapters' loss falls
    pytest.importorskip("peft")
    fell, (first, last) = _fell(_losses("--lora", "--steps", "300", "--lr", "3e-2"), 0.01)
    assert fell, f"LoRA: mean loss {first:.3f} over the first 20 steps, {last:.3f} over the last"


@pytest.mark.slow
def test_bf16_weights_train():
    fell, (first, last) = _fell(_losses("--dtype", "bf16", "--steps", "300"), 0.1)
    assert fell, f"bf16: mean loss {first:.3f} over the first 20 steps, {last:.3f} over the last"


@pytest.mark.slow
def test_a_run_interrupted_and_resumed_ends_where_the_straight_run_ends(tmp_path, monkeypatch):
    straight = _losses("--steps", "60")
    checkpoint = str(tmp_path / "lm.pt")
    calls, loss = [], example.lm_loss

    def interrupted(model, tokens):  # the run dies in step 36 (two evaluations a step)
        calls.append(1)
        if len(calls) > 71:
            raise KeyboardInterrupt
        return loss(model, tokens)

    monkeypatch.setattr(example, "lm_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _losses("--steps", "60", "--resume", checkpoint, "--save-every", "10")
    monkeypatch.setattr(example, "lm_loss", loss)
    resumed = _losses("--steps", "60", "--resume", checkpoint, "--save-every", "10")
    assert resumed == straight[30:]  # from the checkpoint of step 30, bit for bit


def _main(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        example.main(["--tiny", "--quiet", *argv])
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be an int >= 1"),
    (["--batch", "0"], "--batch must be an int >= 1"),
    (["--length", "1"], "--length must be an int >= 2"),
    (["--length", "100"], "beyond the model's 64 positions"),
    (["--lr", "-1"], "--lr must be finite >= 0"),
    (["--lr", "nan"], "--lr must be finite"),
    (["--eps", "0"], "--eps must be finite > 0"),
    (["--save-every", "0"], "--save-every must be"),
    (["--seed", "-1"], "--seed must be in"),
    (["--steps", "abc"], "invalid int value"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, argv, message):
    # #35.5: each of these ended in a traceback
    code, err = _main(capsys, *argv)
    assert code == 2 and len(err) == 1 and message in err[0], err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "lm.pt"
    _losses("--steps", "4", "--save-every", "2", "--resume", str(path))
    return path


@pytest.mark.parametrize("argv, damage, message", [
    (["--dtype", "bf16"], None, "was run with --dtype 'fp32', not 'bf16'"),
    (["--seed", "1"], None, "was run with --seed 0"),
    (["--batch", "4"], None, "was run with --batch 8"),
    (["--length", "16"], None, "was run with --length 32"),
    ([], "half the weights", "holds"),
    ([], "a NaN weight", "holds values that are not finite"),
    ([], "truncated", "cannot read the checkpoint"),
    ([], "no arguments", "is not a checkpoint of this example"),
])
def test_a_resume_that_does_not_fit_the_run_is_refused_and_changes_nothing(
        capsys, tmp_path, checkpoint, argv, damage, message):
    # #35.7: a float32 checkpoint resumed under bf16, other seeds, batches and lengths, and
    # checkpoints lacking weights (loaded with strict=False) were all accepted
    import torch

    path = tmp_path / "lm.pt"
    path.write_bytes(checkpoint.read_bytes())
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage is not None:
        state = torch.load(path, weights_only=True)
        if damage == "half the weights":
            names = sorted(state["weights"])
            state["weights"] = {k: state["weights"][k] for k in names[::2]}
        elif damage == "a NaN weight":
            name = sorted(state["weights"])[0]
            state["weights"][name] = state["weights"][name].clone().fill_(float("nan"))
        else:
            del state["args"]
        torch.save(state, path)
    before = path.read_bytes()
    code, err = _main(capsys, "--steps", "8", "--resume", str(path), *argv)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert path.read_bytes() == before


def test_a_checkpoint_resumes_under_the_same_arguments(tmp_path, checkpoint):
    path = tmp_path / "lm.pt"
    path.write_bytes(checkpoint.read_bytes())
    assert len(_losses("--steps", "6", "--save-every", "2", "--resume", str(path))) == 2
