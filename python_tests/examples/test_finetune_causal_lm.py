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
