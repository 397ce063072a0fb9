"""ZOTrainer (sharpzo_ext.integrations.transformers) against the plain loop, on the tiny random
OPT of examples/finetune_causal_lm.py: a Trainer run is the loop `optimizer.step(closure)` with
the same seed, batches and schedule, bit for bit (weights and logged losses), with gradient
accumulation, evaluation, bfloat16 weights, bfloat16 autocast and LoRA adapters; a run resumed
from its checkpoint ends where the straight run ends; nothing calls backward or allocates a
.grad; and what it cannot honour is refused in one line."""

import importlib.util
import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import TrainerCallback, TrainingArguments, get_scheduler  # noqa: E402

import sharpzo_ext as sz  # noqa: E402
from sharpzo_ext.integrations.transformers import (  # noqa: E402
    DEFAULT_EPS, TrainerRefusal, ZOTrainer)

ROOT = next(p for p in Path(__file__).resolve().parents
            if (p / "examples" / "finetune_causal_lm.py").is_file())


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load("finetune_causal_lm")
transformers.logging.set_verbosity_error()

BATCH, LENGTH, STEPS, WARMUP, LR, SEED = 4, 16, 8, 2, 1e-2, 3


class Sequences(torch.utils.data.Dataset):
    """Fixed token sequences, each its own labels (the causal-LM loss shifts them)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


def _batches(count, batch=BATCH, seed=0):
    batches = example.tiny_batches(batch, LENGTH, seed)
    return [next(batches) for _ in range(count)]


def _args(out, **overrides):
    """The run both sides share: cosine schedule with warmup, batches in order, no clipping."""
    return TrainingArguments(**{
        "output_dir": str(out), "max_steps": STEPS, "per_device_train_batch_size": BATCH,
        "learning_rate": LR, "lr_scheduler_type": "cosine", "warmup_steps": WARMUP,
        "train_sampling_strategy": "sequential", "max_grad_norm": 0, "seed": SEED,
        "logging_steps": 1, "save_strategy": "no", "report_to": "none", "disable_tqdm": True,
        "use_cpu": True, "dataloader_pin_memory": False, **overrides})


def _zosgd(model, **kwargs):
    params = [p for p in model.parameters() if p.requires_grad]
    return sz.optim.ZOSGD(params, **{"lr": LR, "eps": DEFAULT_EPS, "seed": SEED, **kwargs})


def _hf_loss(model, tokens):
    return model(input_ids=tokens, labels=tokens).loss


def _plain_loop(model, optimizer, windows, loss=_hf_loss, after_step=None):
    """The reference: each window's batches evaluated at the same points, the mean of their
    losses one objective; get_scheduler's cosine, stepped once per step; after_step(step) after
    each. Returns the losses, rounded to float32 as Trainer logs them."""
    model.eval()
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=WARMUP,
                              num_training_steps=len(windows))
    losses = []
    for step, window in enumerate(windows, 1):
        estimate = optimizer.step(lambda: sum(float(loss(model, t)) for t in window)
                                  / len(window))
        scheduler.step()
        losses.append(float(torch.tensor(float(estimate), dtype=torch.float32)))
        if after_step is not None:
            after_step(step)
    return losses


def _train(model, args, rows, optimizer=None, resume=False, **kwargs):
    trainer = ZOTrainer(model=model, args=args, train_dataset=Sequences(rows),
                        optimizers=(optimizer, None), **kwargs)
    trainer.train(resume_from_checkpoint=resume or None)
    return trainer


def _logged(trainer, key="loss"):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def _rates(steps):
    """The learning rate of each step under get_scheduler's cosine with warmup."""
    optimizer = torch.optim.SGD([torch.zeros(1)], lr=LR)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=WARMUP,
                              num_training_steps=steps)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A Trainer run with a checkpoint every 4 steps and an evaluation every 4, and the plain
    loop over the same batches: (trainer, its model, the loop's model, the loop's losses,
    the loop's evaluation losses at steps 4 and 8)."""
    batches = _batches(STEPS)
    evaluation = _batches(1, batch=1, seed=9)[0]
    model = example.tiny_model(0)
    args = _args(tmp_path_factory.mktemp("straight"), save_strategy="steps", save_steps=4,
                 eval_strategy="steps", eval_steps=4)
    trainer = ZOTrainer(model=model, args=args, train_dataset=Sequences(torch.cat(batches)),
                        eval_dataset=Sequences(evaluation), optimizers=(_zosgd(model), None))
    trainer.train()
    reference = example.tiny_model(0)
    evaluated = []

    def evaluate(step):
        if step % 4 == 0:
            with torch.no_grad():
                evaluated.append(float(_hf_loss(reference, evaluation)))

    losses = _plain_loop(reference, _zosgd(reference), [[t] for t in batches],
                         after_step=evaluate)
    return trainer, model, reference, losses, evaluated


def test_a_trainer_run_is_the_plain_loop_bit_for_bit(straight):
    trainer, model, reference, losses, _ = straight
    assert _logged(trainer) == losses
    assert _same_weights(model, reference)
    assert trainer.state.global_step == STEPS
    assert not [e for e in trainer.state.log_history if "grad_norm" in e]  # there is none


def test_evaluation_sees_the_weights_of_its_step(straight):
    trainer, _, _, _, evaluated = straight
    assert _logged(trainer, "eval_loss") == evaluated


def test_a_run_resumed_from_its_checkpoint_ends_where_the_straight_run_ends(tmp_path, straight):
    trainer, model, *_ = straight
    out = tmp_path / "run"

    class Interrupt(TrainerCallback):  # the run dies in step 7, after its checkpoint at 4
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 7:
                raise KeyboardInterrupt

    rows = torch.cat(_batches(STEPS))
    evaluation = _batches(1, batch=1, seed=9)[0]
    args = _args(out, save_strategy="steps", save_steps=4, eval_strategy="steps", eval_steps=4)
    interrupted = example.tiny_model(0)
    with pytest.raises(KeyboardInterrupt):
        _train(interrupted, args, rows, _zosgd(interrupted), eval_dataset=Sequences(evaluation),
               callbacks=[Interrupt()])
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-4"]
    resumed = example.tiny_model(0)
    optimizer = _zosgd(resumed)
    again = _train(resumed, args, rows, optimizer, eval_dataset=Sequences(evaluation),
                   resume=True)
    assert _same_weights(resumed, model)
    assert _logged(again) == _logged(trainer)  # the first 4 from the checkpoint's record
    assert optimizer.shared == {"seed": SEED, "forward_passes": 2 * STEPS, "steps": STEPS}


def test_accumulated_micro_batches_are_one_estimate(tmp_path):
    # gradient_accumulation_steps=2: both micro-batches at the same points, their mean one loss
    batches = _batches(2 * STEPS, batch=2)
    model = example.tiny_model(0)
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    trainer = _train(model, _args(tmp_path, per_device_train_batch_size=2,
                                  gradient_accumulation_steps=2), torch.cat(batches),
                     _zosgd(model))
    reference = example.tiny_model(0)
    losses = _plain_loop(reference, _zosgd(reference),
                         [batches[k:k + 2] for k in range(0, 2 * STEPS, 2)])
    assert _logged(trainer) == losses
    assert _same_weights(model, reference)
    assert len(forwards) == 2 * 2 * STEPS  # two points, two micro-batches, once per step
    assert _logged(trainer, "learning_rate") == _rates(STEPS)  # the scheduler: once per step


def test_the_default_optimizer_is_zosgd_from_the_arguments(tmp_path):
    # no optimizer given: ZOSGD(lr, seed from the arguments, eps DEFAULT_EPS), weight decay on
    # all but biases and layer norms, those groups first
    batches = _batches(STEPS)
    model = example.tiny_model(0)
    trainer = _train(model, _args(tmp_path, weight_decay=0.1), torch.cat(batches))
    reference = example.tiny_model(0)
    named = list(reference.named_parameters())
    plain = [n for n, _ in named if "bias" not in n and "layer_norm" not in n]
    groups = [{"params": [p for n, p in named if n in plain], "weight_decay": 0.1},
              {"params": [p for n, p in named if n not in plain], "weight_decay": 0.0}]
    losses = _plain_loop(reference, sz.optim.ZOSGD(groups, lr=LR, eps=DEFAULT_EPS, seed=SEED),
                         [[t] for t in batches])
    assert _logged(trainer) == losses
    assert _same_weights(model, reference)


@pytest.fixture
def no_backward(monkeypatch):
    """backward refused everywhere, and whether any forward pass ran with grad mode on."""
    def refuse(*args, **kwargs):
        raise AssertionError("backward was called")

    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    return []


def test_no_gradient_is_allocated_and_backward_is_never_called(tmp_path, no_backward):
    model = example.tiny_model(0)
    model.register_forward_hook(lambda *_: no_backward.append(torch.is_grad_enabled()))
    _train(model, _args(tmp_path, gradient_accumulation_steps=2, max_steps=3),
           torch.cat(_batches(6)), _zosgd(model))
    assert no_backward and not any(no_backward)  # every forward pass under no_grad
    assert all(p.grad is None for p in model.parameters())


def test_the_model_runs_in_eval_mode(tmp_path):
    # Note [Evaluation mode]: dropout on would make the two points of an estimate differ
    model = example.tiny_model(0)
    modes = []
    model.register_forward_hook(lambda module, *_: modes.append(module.training))
    _train(model, _args(tmp_path, max_steps=2), torch.cat(_batches(2)), _zosgd(model))
    assert modes and not any(modes)


def test_lora_adapters_train_and_the_base_weights_stay_bitwise(tmp_path):
    pytest.importorskip("peft")
    batches = _batches(STEPS)
    model = example.with_lora(example.tiny_model(0))
    before = {n: p.clone() for n, p in model.named_parameters()}
    trainer = _train(model, _args(tmp_path, learning_rate=3e-2), torch.cat(batches))
    reference = example.with_lora(example.tiny_model(0))
    losses = _plain_loop(reference, _zosgd(reference, lr=3e-2), [[t] for t in batches])
    assert _logged(trainer) == losses
    assert _same_weights(model, reference)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    adapters = {n for n, p in model.named_parameters() if p.requires_grad}
    assert moved and moved <= adapters  # every base weight bitwise as it was


def test_bf16_weights_are_the_plain_loop_bit_for_bit(tmp_path):
    batches = _batches(STEPS)
    model = example.tiny_model(0).to(torch.bfloat16)
    trainer = _train(model, _args(tmp_path), torch.cat(batches), _zosgd(model))
    reference = example.tiny_model(0).to(torch.bfloat16)
    losses = _plain_loop(reference, _zosgd(reference), [[t] for t in batches])
    assert _logged(trainer) == losses
    assert _same_weights(model, reference)


def test_bf16_autocast_is_the_plain_loop_under_torch_autocast(tmp_path):
    # TrainingArguments(bf16=True): float32 weights, bfloat16 matrix products, a float32 loss
    batches = _batches(STEPS)
    model = example.tiny_model(0)
    trainer = _train(model, _args(tmp_path, bf16=True), torch.cat(batches), _zosgd(model))

    def autocast_loss(model, tokens):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return _hf_loss(model, tokens)

    reference = example.tiny_model(0)
    losses = _plain_loop(reference, _zosgd(reference), [[t] for t in batches],
                         loss=autocast_loss)
    assert _logged(trainer) == losses
    assert _same_weights(model, reference)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def _fell(losses, by):
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    return last < first * (1 - by), (first, last)


@pytest.mark.slow
@pytest.mark.parametrize("kind, lr, by", [("lora", 3e-2, 0.01), ("bf16", 1e-2, 0.1)])
def test_the_loss_falls(tmp_path, kind, lr, by):
    # 300 steps, with the optimizer ZOTrainer builds from the arguments
    if kind == "lora":
        pytest.importorskip("peft")
        model = example.with_lora(example.tiny_model(0))
    else:
        model = example.tiny_model(0).to(torch.bfloat16)
    rows = torch.cat(_batches(300, batch=8))
    trainer = _train(model, _args(tmp_path, max_steps=300, per_device_train_batch_size=8,
                                  learning_rate=lr, train_sampling_strategy="random"), rows)
    fell, (first, last) = _fell(_logged(trainer), by)
    assert fell, f"{kind}: mean loss {first:.3f} over the first 20 steps, {last:.3f} last"


def _one_line(error):
    assert "\n" not in str(error.value), str(error.value)


@pytest.mark.parametrize("overrides, message", [
    ({"max_grad_norm": 1.0}, r"^max_grad_norm=1.0: there is no gradient to clip"),
    ({"fp16": True}, r"^fp16=True: .*GradScaler"),
    ({"neftune_noise_alpha": 5.0}, r"^neftune_noise_alpha: "),
    ({"optim": "sgd"}, r"^optim='sgd' is a backpropagation optimizer"),
    ({"deepspeed": {"train_batch_size": 4}}, r"^deepspeed: .*sharpzo_ext.distributed"),
    ({"fsdp": "full_shard"}, r"^fsdp: .*sharpzo_ext.distributed"),
])
def test_arguments_it_cannot_honour_are_refused_in_one_line(tmp_path, overrides, message):
    args = _args(tmp_path)
    for name, value in overrides.items():  # after construction: TrainingArguments checks some
        setattr(args, name, value)
    model = example.tiny_model(0)
    with pytest.raises(TrainerRefusal, match=message) as error:
        ZOTrainer(model=model, args=args, train_dataset=Sequences(torch.cat(_batches(1))))
    _one_line(error)


def test_more_than_one_process_is_refused_in_one_line(tmp_path, monkeypatch):
    from transformers.training_args import ParallelMode

    args = _args(tmp_path)
    monkeypatch.setattr(TrainingArguments, "parallel_mode",
                        property(lambda self: ParallelMode.DISTRIBUTED))
    with pytest.raises(TrainerRefusal, match=r"^this run is parallel \(distributed: .*"
                                             r"sharpzo_ext.distributed") as error:
        ZOTrainer(model=example.tiny_model(0), args=args)
    _one_line(error)


def test_fsdp_from_accelerates_configuration_is_refused_in_one_line(tmp_path, monkeypatch):
    # `accelerate launch` with an FSDP configuration: the Trainer's accelerator enables it
    original = transformers.Trainer.create_accelerator_and_postprocess

    def with_fsdp(self):
        original(self)
        self.is_fsdp_enabled = True

    monkeypatch.setattr(transformers.Trainer, "create_accelerator_and_postprocess", with_fsdp)
    with pytest.raises(TrainerRefusal, match=r"^accelerate's configuration enables FSDP") as error:
        ZOTrainer(model=example.tiny_model(0), args=_args(tmp_path))
    _one_line(error)


def test_no_arguments_are_refused_in_one_line():
    with pytest.raises(TrainerRefusal, match=r"^args: .*max_grad_norm=0") as error:
        ZOTrainer(model=example.tiny_model(0))
    _one_line(error)


@pytest.mark.parametrize("given, message", [
    ({"optimizers": "adamw"}, r"^optimizers: AdamW is not a forward-only optimizer"),
    ({"optimizer_cls_and_kwargs": (torch.optim.AdamW, {})},
     r"^optimizer_cls_and_kwargs: AdamW is not a forward-only optimizer"),
])
def test_an_optimizer_that_is_not_forward_only_is_refused_in_one_line(tmp_path, given, message):
    model = example.tiny_model(0)
    if given.get("optimizers") == "adamw":
        given = {"optimizers": (torch.optim.AdamW(model.parameters()), None)}
    with pytest.raises(TrainerRefusal, match=message) as error:
        ZOTrainer(model=model, args=_args(tmp_path), **given)
    _one_line(error)


def test_a_forward_only_optimizer_class_is_built_from_optimizer_cls_and_kwargs(tmp_path):
    batches = _batches(STEPS)
    model = example.tiny_model(0)
    trainer = ZOTrainer(model=model, args=_args(tmp_path), train_dataset=Sequences(
        torch.cat(batches)), optimizer_cls_and_kwargs=(sz.optim.SparseZO, {
            "lr": LR, "density": 0.1, "seed": SEED}))
    trainer.train()
    reference = example.tiny_model(0)
    losses = _plain_loop(reference, sz.optim.SparseZO(reference.parameters(), lr=LR,
                                                      density=0.1, seed=SEED),
                         [[t] for t in batches])
    assert _logged(trainer) == losses
    assert _same_weights(model, reference)


def test_a_checkpoint_without_the_optimizer_state_is_refused_in_one_line(tmp_path):
    args = _args(tmp_path, save_strategy="steps", save_steps=4, save_only_model=True)
    model = example.tiny_model(0)
    rows = torch.cat(_batches(STEPS))
    _train(model, args, rows, _zosgd(model))
    with pytest.raises(TrainerRefusal, match=r"^resume_from_checkpoint: .*checkpoint-8 holds "
                                             r"no optimizer.pt") as error:
        _train(model, args, rows, _zosgd(model), resume=True)
    _one_line(error)


def test_a_half_precision_loss_is_refused_in_one_line(tmp_path):
    # Note [Mixed precision]: a bfloat16 loss has 8 significant bits
    model = example.tiny_model(0)
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(TrainerRefusal, match=r"^compute_loss returned a torch.bfloat16 loss")\
            as error:
        _train(model, _args(tmp_path), torch.cat(_batches(STEPS)), _zosgd(model),
               compute_loss_func=lambda outputs, labels, **_: outputs.logits.bfloat16().mean())
    _one_line(error)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def _example_run(*argv):
    module = _load("trainer_causal_lm")
    return module.finetune(module.parser().parse_args(["--tiny", "--quiet", *argv]))


def test_the_example_resumes_where_its_straight_run_ends(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # it imports finetune_causal_lm
    argv = ["--steps", "8", "--save-steps", "4", "--log-steps", "1", "--accumulation", "2",
            "--batch", "4"]
    straight = _example_run(*argv, "--output", str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-4", tmp_path / "b" / "checkpoint-4")
    resumed = _example_run(*argv, "--output", str(tmp_path / "b"), "--resume")
    assert len(straight) == 8 and resumed == straight  # 4 of them the checkpoint's record
    weights = "checkpoint-8/model.safetensors"
    assert (tmp_path / "b" / weights).read_bytes() == (tmp_path / "a" / weights).read_bytes()
