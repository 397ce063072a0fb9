"""The method table (runs/method_table.py) is what every other place asks: the configuration's
checks, the prompt the task is built with, the optimizer a run steps, the command line's
choices."""

import dataclasses

import pytest
import torch

from sharpzo_ext import optim
from sharpzo_ext.cli import build_parser
from sharpzo_ext.clip.runs.config import DEFAULT_TUNE, HYPERPARAMETERS, RunError, TrainConfig
from sharpzo_ext.clip.runs.method_table import METHODS, TUNED, Kind, Prompt
from sharpzo_ext.clip.task.heads import HEADS

OPTIMIZERS = {"sharpzo": optim.SharpZO, "zosgd": optim.ZOSGD, "sparsezo": optim.SparseZO,
              "cmaes": optim.CMAES, "zip": optim.SPSA, "spsa-gc": optim.SPSA,
              "coop": torch.optim.Adam, "clip-adapter": torch.optim.Adam}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_row_builds_its_own_optimizer(name):
    spec = METHODS[name]
    assert isinstance(spec.kind, Kind) and isinstance(spec.prompt, Prompt) and spec.help
    if spec.kind == Kind.HEAD:
        assert name in HEADS and spec.optimizer is None
        assert not TrainConfig(method=name).tunes_anything
        return
    config = TrainConfig(method=name, lr=0.125, sigma=0.25, seed=3)
    optimizer = spec.optimizer(config, [torch.zeros(4)])
    assert type(optimizer) is OPTIMIZERS[name]
    expected = {"coop": ("lr", config.coop_lr),
                "clip-adapter": ("lr", config.adapter_lr)}.get(name, ("lr", 0.125))
    if name == "cmaes":
        expected = ("sigma", 0.25)
    if name not in ("zip", "spsa-gc"):  # SPSA's steps are its published constants
        assert optimizer.param_groups[0][expected[0]] == expected[1]


def test_the_command_line_offers_every_method_and_hyperparameter():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    options = {a.dest: a for a in train._actions}
    assert tuple(options["method"].choices) == tuple(METHODS)
    for field in HYPERPARAMETERS:
        assert field.name in options and field.metadata["help"] in options[field.name].help
    assert {f.name for f in HYPERPARAMETERS} >= {"lr", "eps", "sigma", "popsize", "rho",
                                                 "switch_step", "density", "q", "coop_lr",
                                                 "adapter_lr"}
    assert tuple(options["tune"].choices) == TUNED


@pytest.mark.parametrize("changes", [{"precision": "int8"}, {"backend": "onnxruntime"}])
def test_a_first_order_method_refuses_what_has_no_gradients(changes):
    for name, spec in METHODS.items():
        config = dataclasses.replace(TrainConfig(method=name), **changes)
        if spec.kind == Kind.FIRST_ORDER and spec.tunes == "prompt":
            with pytest.raises(RunError, match=f"{name} trains with gradients"):
                config.check()
    # the adapter's gradients never enter the text tower, which runs once, at any precision
    TrainConfig(method="clip-adapter", precision="bf16").check()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_what_each_method_tunes(name):
    spec = METHODS[name]
    config = TrainConfig(method=name)
    expected = {"coop": "prompt", "clip-adapter": "adapter"}.get(
        name, None if spec.kind == "head" else DEFAULT_TUNE)
    assert config.tuned == expected and config.resolved().tune == expected
    config.resolved().check()
    if spec.kind == "forward-only":
        for tune in TUNED:
            assert TrainConfig(method=name, tune=tune).tuned == tune
        return
    other = "adapter" if expected == "prompt" else "prompt"
    with pytest.raises(RunError, match=f"method {name} tunes"):
        TrainConfig(method=name, tune=other).check()
