"""examples/lightning_causal_lm.py: ZOSGD and SparseZO stepped by a LightningModule with manual
optimization give the plain loop of examples/finetune_causal_lm.py bit for bit (losses and
weights), with no backward and no .grad; a Lightning run stopped at its checkpoint and resumed
with ckpt_path= ends bit for bit where the straight run ends."""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

ROOT = next(p for p in Path(__file__).resolve().parents
            if (p / "examples" / "lightning_causal_lm.py").is_file())
CPU = {"accelerator": "cpu", "devices": 1, "logger": False}


def _load(name):
    """examples/<name>.py as a module (examples/ on the path while it loads: the Lightning
    example imports finetune_causal_lm's helpers)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return module


@pytest.fixture(scope="module")
def example():
    pytest.importorskip("pytorch_lightning")  # here, not at collection: it takes seconds to import
    return _load("lightning_causal_lm")


@pytest.fixture(scope="module")
def plain():
    return _load("finetune_causal_lm")


def _fit(example, *argv, **options):
    args = example.parser().parse_args(["--tiny", "--quiet", *argv])
    example.check(args)
    return example.train(args, **{**CPU, **options})


@pytest.mark.parametrize("optimizer", ["zosgd", "sparsezo"])
def test_lightning_steps_are_the_plain_loops_bit_for_bit(example, plain, optimizer, tmp_path,
                                                           monkeypatch):
    argv = ["--steps", "12", "--optimizer", optimizer]
    reference = tmp_path / "plain.pt"  # the plain loop's checkpoint: its final weights
    expected = plain.finetune(plain.parser().parse_args(
        ["--tiny", "--quiet", *argv, "--save-every", "12", "--resume", str(reference)]))

    def no_backward(*args, **kwargs):
        raise AssertionError("backward was called")

    grad_modes, loss = [], example.lm_loss

    def recording(model, tokens):
        grad_modes.append(torch.is_grad_enabled())
        return loss(model, tokens)

    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    monkeypatch.setattr(torch.autograd, "backward", no_backward)
    monkeypatch.setattr(example, "lm_loss", recording)
    from pytorch_lightning.loggers import CSVLogger

    module = _fit(example, *argv, logger=CSVLogger(tmp_path, name="csv"), log_every_n_steps=1)
    assert module.losses == expected
    saved = torch.load(reference, weights_only=True)["weights"]
    weights = module.model.state_dict()
    assert saved.keys() == {n for n, _ in module.model.named_parameters()}  # every one
    assert all(torch.equal(weights[k], v) for k, v in saved.items())
    assert all(p.grad is None for p in module.parameters())
    assert len(grad_modes) == 2 * 12 + (10 if optimizer == "sparsezo" else 0)  # + the mask's
    assert not any(grad_modes)
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    logged = [float(r["loss"]) for r in rows if r.get("loss")]
    assert logged == expected  # every step's loss, logged in float64


def test_a_run_stopped_at_its_checkpoint_and_resumed_ends_where_the_straight_run_ends(
        example, tmp_path, monkeypatch):
    straight = _fit(example, "--steps", "16")
    checkpoint = str(tmp_path / "lm.ckpt")
    calls, loss = [], example.lm_loss

    def interrupted(model, tokens):  # the run dies in step 11 (two evaluations a step)
        calls.append(1)
        if len(calls) > 21:
            raise RuntimeError("interrupted")
        return loss(model, tokens)

    monkeypatch.setattr(example, "lm_loss", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(example, "--steps", "16", "--resume", checkpoint, "--save-every", "8")
    monkeypatch.setattr(example, "lm_loss", loss)
    resumed = _fit(example, "--steps", "16", "--resume", checkpoint, "--save-every", "8")
    assert resumed.losses == straight.losses[8:]  # from the checkpoint of step 8, bit for bit
    final, weights = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in final.items())
    assert resumed.trainer.optimizers[0].state_dict()["sharpzo"]["steps"] == 16

    with pytest.raises(example.ExampleError, match="was run with --seed 0, not 1"):
        _fit(example, "--steps", "16", "--resume", checkpoint, "--seed", "1")


def _main(example, capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        example.main(["--quiet", *argv])
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("argv, message", [
    (["--tiny", "--steps", "0"], "--steps must be an int >= 1"),
    (["--tiny", "--eps", "0"], "--eps must be finite > 0"),
    (["--tiny", "--length", "100"], "beyond the model's 64 positions"),
    (["--tiny", "--resume", "lm.pt"], "--resume lm.pt must end in .ckpt"),
    ([], "the following arguments are required: --tiny"),
])
def test_bad_arguments_are_one_line_and_exit_2(example, capsys, argv, message):
    code, err = _main(example, capsys, *argv)
    assert code == 2 and len(err) == 1 and message in err[0], err
