"""ZOTrainer: Hugging Face's ``transformers.Trainer`` with a forward-only optimizer of
sharpzo_ext.optim in place of backpropagation. Nothing calls ``backward()``, no ``.grad`` is
allocated, and every forward pass runs under ``torch.no_grad()``: training takes the memory of
inference (plus what the optimizer documents).

    from sharpzo_ext.integrations.transformers import ZOTrainer

    args = TrainingArguments("runs/opt", learning_rate=1e-6, max_grad_norm=0, max_steps=20_000,
                             lr_scheduler_type="cosine", save_steps=1000)
    trainer = ZOTrainer(model=model, args=args, train_dataset=dataset)  # ZOSGD, from args
    trainer.train()                                  # or train(resume_from_checkpoint=True)

or with an optimizer of your own: ``ZOTrainer(..., optimizers=(sz.optim.SparseZO(params, lr=1e-6,
density=0.1, seed=0), None))`` (the scheduler is built from the arguments when None).

Everything else is Trainer's: the data loading, the learning-rate schedule (stepped once per
optimizer step), gradient accumulation (Note [One estimate per optimizer step]), logging,
evaluation, checkpoints and resumption. A checkpoint's optimizer.pt is the optimizer's
``state_dict()``, which holds its seed and step counter (the random stream), so a resumed run
draws the directions the uninterrupted run would have drawn, and ends where it ends, bit for bit.

Note [Evaluation mode]
The two evaluations of an estimate must see the same function: in training mode dropout draws
new masks at every forward pass, and the difference of two losses then measures the masks, not
the perturbation. Trainer's own training_step puts the model in training mode; ZOTrainer's puts
it in evaluation mode before every step, as MeZO does. Dropout (LoRA's lora_dropout included) is
off throughout training, and the model is left in evaluation mode.

Note [Mixed precision]
- bfloat16 weights (``model.to(torch.bfloat16)`` before the Trainer is built) halve the memory.
  The optimizers perturb them in float32 arithmetic and round once, and put them back bitwise
  (docs/optimizers.md, "Low precision"). The loss must still be computed in float32: Hugging
  Face's causal-LM loss upcasts the logits; a float16 or bfloat16 loss from compute_loss is
  refused (with 8 significant bits the two losses of an estimate often round to the same value,
  and the step is lost).
- ``TrainingArguments(bf16=True)`` is autocast, something else: accelerate runs each forward
  pass under ``torch.autocast(dtype=torch.bfloat16)`` over the weights as they are. float32
  weights stay float32 (so small updates accumulate), the matrix products run in bfloat16, and
  the loss comes out in float32: the run is that of a plain loop whose closure runs under
  torch.autocast. It saves no weight memory.
- ``fp16=True`` is refused: accelerate steps the optimizer through a GradScaler, which unscales
  gradients and finds none.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Callable

import torch

from sharpzo_ext.errors import UserError
from sharpzo_ext.optim.base import ForwardOnlyOptimizer
from sharpzo_ext.optim.zosgd import ZOSGD

try:
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint
    from transformers.training_args import ParallelMode
except ImportError as error:  # transformers stays optional: only this module needs it
    raise ImportError(f"sharpzo_ext.integrations.transformers needs transformers and accelerate "
                      f"(pip install 'sharpzo_ext[hf]'): {error}") from error

__all__ = ["ZOTrainer", "TrainerRefusal", "DEFAULT_EPS"]

DEFAULT_EPS = 1e-3  # the perturbation size of the ZOSGD built from the arguments (MeZO's)
OPTIMIZER_FILE = "optimizer.pt"  # where Trainer saves the optimizer's state_dict in a checkpoint
_ONE_PROCESS = ("ZOTrainer runs in one process on one device; for forward-only training across "
                "processes use sharpzo_ext.distributed (DataShard splits the data over ranks)")


class TrainerRefusal(UserError, ValueError):
    """What ZOTrainer cannot honour (a TrainingArguments option, an optimizer, a checkpoint or a
    loss), said in one line."""


def _default_optim() -> str:
    return next(f.default for f in dataclasses.fields(TrainingArguments) if f.name == "optim")


def _check_arguments(args: TrainingArguments | None) -> None:
    """Raises TrainerRefusal naming the first argument ZOTrainer cannot honour."""
    if args is None:
        raise TrainerRefusal("args: ZOTrainer needs TrainingArguments(..., max_grad_norm=0) "
                             "(Trainer's default clips gradients, and there are none)")
    if args.deepspeed:
        raise TrainerRefusal(f"deepspeed: DeepSpeed shards gradients and optimizer states a "
                             f"forward-only run does not have. {_ONE_PROCESS}")
    if args.fsdp:
        raise TrainerRefusal(f"fsdp: FSDP shards the weights over processes. {_ONE_PROCESS}")
    if args.parallel_mode != ParallelMode.NOT_PARALLEL:
        raise TrainerRefusal(f"this run is parallel ({args.parallel_mode.value}: "
                             f"{args.world_size} process(es), {args.n_gpu} GPU(s) per process). "
                             f"{_ONE_PROCESS}")
    if args.fp16:
        raise TrainerRefusal("fp16=True: float16 mixed precision steps through a GradScaler, "
                             "which needs gradients; use bf16=True or bfloat16 weights")
    if args.max_grad_norm > 0:
        raise TrainerRefusal(f"max_grad_norm={args.max_grad_norm}: there is no gradient to clip "
                             f"(forward passes only); pass max_grad_norm=0")
    if args.neftune_noise_alpha is not None:
        raise TrainerRefusal("neftune_noise_alpha: NEFTune adds fresh noise to every training "
                             "forward pass; the two evaluations of an estimate must see the same "
                             "model")
    if args.optim != _default_optim():
        raise TrainerRefusal(f"optim={getattr(args.optim, 'value', args.optim)!r} is a "
                             f"backpropagation optimizer; ZOTrainer builds ZOSGD from "
                             f"learning_rate, weight_decay and seed, or takes a forward-only one "
                             f"from optimizers=(optimizer, scheduler)")


def _check_optimizer(optimizer: torch.optim.Optimizer | None, optimizer_cls: type | None) -> None:
    """Raises TrainerRefusal unless the optimizer (or class) given is a forward-only one."""
    if optimizer is not None and not isinstance(optimizer, ForwardOnlyOptimizer):
        argument, name = "optimizers", type(optimizer).__name__
    elif optimizer_cls is not None and not (isinstance(optimizer_cls, type)
                                            and issubclass(optimizer_cls, ForwardOnlyOptimizer)):
        argument, name = "optimizer_cls_and_kwargs", getattr(optimizer_cls, "__name__",
                                                              repr(optimizer_cls))
    else:
        return
    raise TrainerRefusal(f"{argument}: {name} is not a forward-only optimizer (one of "
                         f"sharpzo_ext.optim: ZOSGD, SparseZO, ...); ZOTrainer computes no "
                         f"gradient for it")


def _loss_value(loss: torch.Tensor) -> float:
    """A micro-batch's loss as a float; half-precision losses are refused (Note [Mixed
    precision])."""
    if loss.dtype in (torch.float16, torch.bfloat16):
        raise TrainerRefusal(f"compute_loss returned a {loss.dtype} loss: the two losses of an "
                             f"estimate would often round to the same value; compute it in "
                             f"float32 (upcast the logits)")
    return float(loss.detach())


class _StepTaken(torch.optim.Optimizer):
    """The forward-only optimizer as Trainer's loop holds it (Note [One estimate per optimizer
    step]): when the loop calls step(), training_step has already taken the step, so step() does
    nothing. The parameter groups, state and state dicts are the optimizer's own: schedulers set
    its learning rates, and checkpoints save and load its state."""

    def __init__(self, optimizer: ForwardOnlyOptimizer):
        self.optimizer = optimizer  # nothing of its own: torch.optim.Optimizer.__init__ not run

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @property
    def state(self) -> dict:
        return self.optimizer.state

    @property
    def defaults(self) -> dict:
        return self.optimizer.defaults

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def step(self, closure: Callable | None = None) -> None:
        """Nothing: training_step took this step."""


# Note [One estimate per optimizer step]
# Trainer's loop calls training_step once per micro-batch and, after the last micro-batch of an
# accumulation window, optimizer.step() with no closure, then the scheduler. A forward-only step
# must evaluate every batch of the step at the same perturbed points, with the same seed. So
# training_step keeps the window's micro-batches (their inputs: a few token tensors, no
# activations) and on the last one (accelerator.sync_gradients, which the loop sets for exactly
# that micro-batch) takes the optimizer's step with a closure that evaluates all of them and
# returns the mean of their losses: one estimate, one update. It returns that step's loss
# estimate, and 0 for the window's other micro-batches, so the loss Trainer sums per step and
# logs is the step's estimate. Each micro-batch's loss is compute_loss's mean over its own
# batch (num_items_in_batch is not passed), so micro-batches weigh the same whatever their
# token counts. The loop's own optimizer.step() then finds the step taken (_StepTaken).
# Overriding the loop instead would mean copying Trainer's, which changes from one release
# to the next.
class ZOTrainer(Trainer):
    """``transformers.Trainer`` trained by a forward-only optimizer (module docs).

    Takes Trainer's arguments. The optimizer is ``optimizers[0]`` if given, else
    ``optimizer_cls_and_kwargs``'s class, else ZOSGD(lr=args.learning_rate, eps=DEFAULT_EPS,
    seed=args.seed), over the parameters that require grad in model order; with
    ``args.weight_decay`` > 0 in two groups as Trainer makes them (decayed: all but biases and
    norms, first; not decayed). Either way it must be a forward-only optimizer
    (sharpzo_ext.optim). ``args.optim`` must be left at its default. The scheduler is
    ``optimizers[1]``, or built from the arguments (lr_scheduler_type, warmup), and steps once
    per optimizer step.

    Refused at construction, with a TrainerRefusal (a ValueError) in one line: no args,
    DeepSpeed, FSDP, more than one process or device (see sharpzo_ext.distributed),
    fp16 (a GradScaler needs gradients), max_grad_norm > 0 (there is no gradient to clip: pass
    0), NEFTune, a backpropagation ``optim``, and an optimizer that is not forward-only. At
    train(): a checkpoint without optimizer.pt (its random stream would restart). During
    training: a half-precision loss (Note [Mixed precision]).

    Each optimizer step evaluates the step's micro-batches (gradient_accumulation_steps of them)
    at the same points and steps once on the mean of their losses (Note [One estimate per
    optimizer step]); the model runs in evaluation mode (Note [Evaluation mode]).
    """

    def __init__(self, model=None, args: TrainingArguments | None = None, *rest, **kwargs):
        _check_arguments(args)
        super().__init__(model, args, *rest, **kwargs)
        _check_optimizer(self.optimizer, (self.optimizer_cls_and_kwargs or (None,))[0])
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:  # from `accelerate launch`'s config
            raise TrainerRefusal(f"accelerate's configuration enables "
                                 f"{'DeepSpeed' if self.is_deepspeed_enabled else 'FSDP'}. "
                                 f"{_ONE_PROCESS}")
        self._window: list[dict] = []  # the micro-batches of the accumulation window so far
        self._forward_only: ForwardOnlyOptimizer | None = None  # set by create_optimizer

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """The forward-only optimizer (class docs), wrapped for Trainer's loop (_StepTaken)."""
        if self.optimizer is None:
            groups = self._parameter_groups(self.model if model is None else model)
            if self.optimizer_cls_and_kwargs is not None:
                cls, kwargs = self.optimizer_cls_and_kwargs
                self.optimizer = cls(groups, **kwargs)
            else:
                self.optimizer = ZOSGD(groups, lr=self.args.learning_rate, eps=DEFAULT_EPS,
                                       seed=self.args.seed)
        if isinstance(self.optimizer, ForwardOnlyOptimizer):  # not yet wrapped (first train())
            self._forward_only = self.optimizer
            self.optimizer = _StepTaken(self.optimizer)
        return self.optimizer

    def _parameter_groups(self, model: torch.nn.Module) -> list[dict]:
        """The parameters to tune (those that require grad), in model order; with weight decay,
        the decayed ones (Trainer's choice: all but biases and norms) first."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.args.weight_decay:
            return [{"params": [p for _, p in named]}]
        decayed = set(self.get_decay_parameter_names(model))
        groups = [{"params": [p for n, p in named if n in decayed],
                   "weight_decay": self.args.weight_decay},
                  {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0}]
        return [group for group in groups if group["params"]]

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None,
              ignore_keys_for_eval: list[str] | None = None):
        """Trainer.train; a checkpoint to resume must hold the optimizer's state (its seed and
        step counter): Trainer would otherwise go on with a fresh optimizer silently."""
        checkpoint = (get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True
                      else resume_from_checkpoint or None)
        if (checkpoint is not None and os.path.isdir(checkpoint)
                and not os.path.isfile(os.path.join(checkpoint, OPTIMIZER_FILE))):
            raise TrainerRefusal(f"resume_from_checkpoint: {checkpoint} holds no {OPTIMIZER_FILE} "
                                 f"(saved with save_only_model?); the optimizer's random stream "
                                 f"would restart")
        self._window = []  # a window an earlier train() left unfinished is not this run's
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)

    def training_step(self, model: torch.nn.Module, inputs: dict,
                      num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        """Keeps the micro-batch; on the last of the accumulation window, takes the optimizer's
        step on the whole window and returns its loss estimate, else returns 0 (Note [One
        estimate per optimizer step]). `num_items_in_batch` is not used: each micro-batch's
        loss is its own mean."""
        if self._forward_only is None:
            raise RuntimeError("ZOTrainer.training_step before create_optimizer (train() "
                               "creates the optimizer)")
        model.eval()  # Note [Evaluation mode]
        self._window.append(self._prepare_inputs(inputs))
        if not self.accelerator.sync_gradients:
            return torch.zeros((), device=self.args.device)
        window, self._window = self._window, []
        with torch.no_grad():
            loss = self._forward_only.step(lambda: self._window_loss(model, window))
        return torch.as_tensor(loss, dtype=torch.float32).to(self.args.device)

    def _window_loss(self, model: torch.nn.Module, window: list[dict]) -> float:
        """The objective at the current point: the mean, in float64, of the micro-batches'
        losses (compute_loss on each)."""
        total = 0.0
        for inputs in window:
            with self.compute_loss_context_manager():
                # a copy: compute_loss may pop the labels, and the batch is evaluated again
                total += _loss_value(self.compute_loss(model, copy.copy(inputs)))
        return total / len(window)

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm=None) -> None:
        """None, so no gradient norm is logged: there is no gradient (Trainer would log the norm
        of no tensors, 0)."""
        return None
