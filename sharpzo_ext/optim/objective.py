"""The two kinds of objective a forward-only optimizer evaluates, declared by the caller.

- A **closure**, torch.optim's convention: ``opt.step(closure)`` calls ``closure()`` with no
  argument and reads one loss. The optimizer sets the parameters to each point it needs (in
  place, under ``torch.no_grad()``) before calling it, and puts them back afterwards.
- A **population**, ``opt.step(Population(fn))``: ``fn(X)`` gets the points as the rows of one
  float64 matrix X (m, d), flat parameter vectors, and returns their m losses in one call (one
  batched forward, for models whose trainable vector is small, such as prompts).

Nothing is inferred from a callable's signature: a plain callable is always a closure, and only
a Population (or a subclass, such as the distributed shards) is evaluated by rows. A callable
of the wrong kind fails at its first call with a TypeError that says which kind was expected.

Note [Evaluation model]
Every optimizer step is: the algorithm's core proposes points (flat vectors, or directions
around the current parameters), `evaluate_rows` or `two_point.losses` obtains their losses
from the objective, and the core updates its state from the losses alone. The objective's kind
only decides how points reach the model; the numbers the algorithm sees are the same either way
(exactly for float64 parameters).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from sharpzo_ext.optim import flat

__all__ = ["Population", "Objective", "check_objective", "closure_loss", "evaluate_rows"]


def _raised_at_the_call(error: TypeError) -> bool:
    """Whether a TypeError came from calling a function with the wrong arguments rather than
    from inside it: the traceback then ends in the caller's frame (no frame of the callee)."""
    return error.__traceback__ is not None and error.__traceback__.tb_next is None


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
        try:
            raw = self.fn(X)
        except TypeError as error:
            if _raised_at_the_call(error):
                raise TypeError(
                    f"a Population objective is called as fn(X) with the candidates as the rows "
                    f"of X, and this one cannot be ({error}); a closure that takes no argument "
                    f"is passed to step() as it is, without Population") from None
            raise
        losses = torch.as_tensor(raw).detach().to("cpu", torch.float64).flatten()
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


def closure_loss(closure: Callable[[], object]) -> float:
    """One call of a closure, as a Python float."""
    try:
        loss = closure()
    except TypeError as error:
        if _raised_at_the_call(error):
            raise TypeError(
                f"step(closure) calls closure() with no argument, as torch.optim does, and this "
                f"callable needs one ({error}); to evaluate candidates as the rows of a matrix "
                f"in one call, pass sz.optim.Population(fn)") from None
        raise
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"the closure must return a scalar loss, got a tensor of shape "
                             f"{tuple(loss.shape)}")
        return float(loss.detach())
    return float(loss)


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
