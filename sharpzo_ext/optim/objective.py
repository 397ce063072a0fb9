"""The two kinds of objective a forward-only optimizer evaluates, declared by the caller.

- A **closure**, torch.optim's convention: ``opt.step(closure)`` calls ``closure()`` with no
  argument and reads one loss. The optimizer sets the parameters to each point it needs (in
  place, under ``torch.no_grad()``) before calling it, and puts them back afterwards.
- A **population**, ``opt.step(Population(fn))``: ``fn(X)`` gets the points as the rows of one
  float64 matrix X (m, d), flat parameter vectors, and returns their m losses in one call (one
  batched forward, for models whose trainable vector is small, such as prompts).

Nothing is inferred from a callable's signature: a plain callable is always a closure, and only
a Population (or a subclass, such as the distributed shards) is evaluated by rows. A callable
of the wrong kind fails at its first call with a TypeError that says which kind was expected
(Note [Wrong objective kinds]).

Note [Evaluation model]
Every optimizer step is: the algorithm's core proposes points (flat vectors, or directions
around the current parameters), `evaluate_rows` or `two_point.losses` obtains their losses
from the objective, and the core updates its state from the losses alone. The objective's kind
only decides how points reach the model; the numbers the algorithm sees are the same either way
(exactly for float64 parameters).
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import torch

from sharpzo_ext.optim import flat

__all__ = ["Population", "Objective", "check_objective", "closure_loss", "evaluate_rows"]


# Note [Wrong objective kinds]
# Which kind an objective is comes from its type only. The messages below only help when a
# callable of the other kind is passed: calling it with the wrong number of arguments raises
# Python's argument-binding TypeError, at the call or in a wrapper that forwards the call
# (torch.no_grad(), nn.Module.__call__), so that error, wherever it is raised, gets a note
# saying which kind was expected; the original error is kept as its cause. Any other TypeError
# from inside an objective is the objective's own and passes through untouched.
_NEEDS_AN_ARGUMENT = re.compile(r"missing \d+ required (positional|keyword-only) argument")
_TAKES_NO_ARGUMENT = re.compile(r"takes (\d+ positional arguments?|no arguments) but \d+ "
                                r"(was|were) given")


def _call(fn: Callable, args: tuple, binding: re.Pattern, advice: str):
    """fn(*args); an argument-binding TypeError matching `binding` gets `advice` appended."""
    try:
        return fn(*args)
    except TypeError as error:
        if binding.search(str(error)):
            raise TypeError(f"{error}: {advice}") from error
        raise


class Population:
    """A population objective: ``fn(X)`` with X a (m, d) float64 tensor of candidate flat
    parameter vectors (rows), returning m losses (a tensor or sequence) in one call.

        opt.step(sz.optim.Population(lambda X: task.losses(X, features, labels)))

    Usable as a decorator. X is on the parameters' device; losses may be on any device.
    """

    def __init__(self, fn: Callable[[torch.Tensor], object]):
        if not callable(fn):
            raise TypeError(f"Population needs a callable fn(X), got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """The losses of the rows of X: float64, on the CPU, one per row."""
        raw = _call(self.fn, (X,), _TAKES_NO_ARGUMENT,
                    "a Population objective is called as fn(X) with the candidates as the rows "
                    "of X; a closure that takes no argument is passed to step() as it is, "
                    "without Population")
        try:
            losses = torch.as_tensor(raw).detach()
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"the population objective must return a tensor or sequence of "
                            f"losses, got {type(raw).__name__}") from None
        _refuse_unreal(losses, "the population objective must return real losses")
        losses = losses.to("cpu", torch.float64).flatten()
        if losses.numel() != X.shape[0]:
            raise ValueError(f"the population objective must return {X.shape[0]} losses (one "
                             f"per row of X), got {losses.numel()}")
        return losses


Objective = Callable[[], object] | Population


def check_objective(closure, owner: str) -> Objective:
    """What ``owner.step(closure)`` got: a Population or a closure; anything else is refused."""
    if isinstance(closure, Population):
        return closure
    if closure is None:
        raise TypeError(f"{owner}.step needs a closure that returns the loss (or a Population "
                        "objective); forward-only optimizers have no gradients to use instead")
    if not callable(closure):
        raise TypeError(f"{owner}.step needs a closure or a Population, got "
                        f"{type(closure).__name__}")
    return closure


def _refuse_unreal(losses: torch.Tensor, what: str) -> None:
    """TypeError(`what`, naming the dtype) for bool or complex losses."""
    if losses.dtype == torch.bool or losses.is_complex():
        raise TypeError(f"{what}, got {losses.dtype}")


def closure_loss(closure: Callable[[], object]) -> float:
    """One call of a closure, as a Python float."""
    loss = _call(closure, (), _NEEDS_AN_ARGUMENT,
                 "step(closure) calls closure() with no argument, as torch.optim does; to "
                 "evaluate candidates as the rows of a matrix in one call, pass "
                 "sz.optim.Population(fn)")
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"the closure must return a scalar loss, got a tensor of shape "
                             f"{tuple(loss.shape)}")
        _refuse_unreal(loss, "the closure must return a real loss")
        return float(loss.detach())
    if isinstance(loss, (bool, complex, str, bytes)):
        raise TypeError(f"the closure must return a real loss, got {type(loss).__name__}")
    try:
        return float(loss)
    except (TypeError, ValueError):
        raise TypeError(f"the closure must return a real loss, got {type(loss).__name__}") from None


def evaluate_rows(objective: Objective, params: Sequence[torch.Tensor],
                  X: torch.Tensor) -> torch.Tensor:
    """Losses (float64, CPU) at the flat points X (rows): one call of a Population, or each row
    written into the parameters in turn for a closure (the caller restores the parameters)."""
    if isinstance(objective, Population):
        return objective(X)
    losses = []
    for x in X:
        flat.scatter_(params, x)
        losses.append(closure_loss(objective))
    return torch.tensor(losses, dtype=torch.float64)
