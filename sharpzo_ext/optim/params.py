"""Which parameters a forward-only optimizer accepts, and which of them it tunes.

Note [Frozen parameters]
torch.optim leaves alone a parameter that does not require grad (its grad stays None), and MeZO
perturbs only the parameters that require grad, so ``Opt(model.parameters())`` after freezing a
backbone tunes what is left. The forward-only optimizers follow the same rule: an
``nn.Parameter`` with ``requires_grad=False`` stays in ``param_groups`` (schedulers and
``state_dict``'s indices see it) but is never perturbed, updated or counted in the flat vector
x. A plain tensor is tuned whatever its flag: forward-only tuning never needs a grad, a tensor
that is not a Parameter has none to switch off, and ``ZOSGD([torch.zeros(3)], lr)`` is the
documented way to tune a bare tensor.

Which parameters are tuned is fixed when they are added. The search state (CMA-ES's
distribution, SparseZO's mask, momentum buffers) is sized by them, so a step refuses a
parameter frozen or unfrozen since, naming it, rather than guessing what the state should
become; build a new optimizer after changing what is frozen. ``state_dict()`` records which
parameters were frozen, and loading it into an optimizer that freezes others is refused.

Note [Parameters that share memory]
Every algorithm here perturbs the parameters in place, one tensor after another, and restores
them from copies or by subtracting the perturbation. Two parameters over the same memory (``w``
and ``w[:2]``, or a tensor passed twice) would be perturbed twice where they overlap and
restored out of order, leaving the weights changed after a failed step; an expanded tensor
(a stride of 0) is one element seen as many. Both are refused when the parameters are added.
The check compares the span from each parameter's first element to its last, so views that
interleave without sharing an element (``w[0::2]`` and ``w[1::2]``) are refused too; disjoint
slices (``w[:3]`` and ``w[3:]``) are accepted.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["check_added", "is_tuned", "frozen_indices", "check_unchanged"]


def is_tuned(p: torch.Tensor) -> bool:
    """Whether the optimizers tune `p` (Note [Frozen parameters])."""
    return p.requires_grad or not isinstance(p, torch.nn.Parameter)


def _name(group: int, index: int) -> str:
    return f"parameter {index} of group {group}"


def check_added(owner: str, params: Sequence, group: int,
                earlier: Sequence[tuple[torch.Tensor, tuple[int, int]]]) -> None:
    """Refuses, naming the parameter, what `owner` cannot tune: tensors not floating-point,
    not dense, on the meta device or expanded, and parameters that share memory with one
    another or with `earlier` ones (Note [Parameters that share memory])."""
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            continue  # torch.optim's own check names it
        name = _name(group, i)
        if p.layout != torch.strided:
            raise TypeError(f"{owner} tunes dense tensors; {name} is {p.layout}")
        if not p.is_floating_point():
            raise TypeError(f"{owner} tunes floating-point parameters; {name} is {p.dtype}")
        if p.is_meta:
            raise ValueError(f"{owner} tunes values; {name} is on the meta device and has none "
                             "(materialize it first: to_empty(), then load the weights)")
        if any(stride == 0 and size > 1 for size, stride in zip(p.shape, p.stride())):
            raise ValueError(f"{owner} perturbs parameters in place; {name} is expanded (a "
                             "stride of 0 shows one element several times): pass a copy")
    spans = [(_span(p), f"an earlier {_name(*where)}") for p, where in earlier]
    spans += [(_span(p), _name(group, i)) for i, p in enumerate(params)
              if isinstance(p, torch.Tensor)]
    spans = sorted((span, name) for span, name in spans if span is not None)
    for (a, a_name), (b, b_name) in zip(spans, spans[1:]):
        if a[0] == b[0] and b[1] < a[2]:
            raise ValueError(f"{owner} perturbs parameters in place, one after another; {a_name} "
                             f"and {b_name} share memory (views of one tensor, or one tensor "
                             "passed twice): pass each element once")


def _span(p: torch.Tensor) -> tuple[int, int, int] | None:
    """(storage address, first byte, one past the last byte) that `p` reaches; None if empty."""
    if p.numel() == 0:
        return None
    size = p.element_size()
    first = p.storage_offset()
    last = first + sum((n - 1) * s for n, s in zip(p.shape, p.stride()))
    return p.untyped_storage().data_ptr(), first * size, (last + 1) * size


def frozen_indices(params: Sequence[torch.Tensor]) -> list[int]:
    """The indices (in param_groups order) of the parameters not tuned."""
    return [i for i, p in enumerate(params) if not is_tuned(p)]


def check_unchanged(owner: str, params: Sequence[torch.Tensor], frozen: Sequence[int]) -> None:
    """Refuses a step after a parameter was frozen or unfrozen: `frozen` are the indices frozen
    when the parameters were added (Note [Frozen parameters])."""
    now = frozen_indices(params)
    if now != list(frozen):
        changed = sorted(set(now).symmetric_difference(frozen))[0]
        what = "frozen" if changed in now else "unfrozen"
        raise RuntimeError(f"parameter {changed} (in param_groups order) was {what} after it was "
                           f"given to {owner}; which parameters are tuned is fixed when they are "
                           "added (the search state is sized by them): build a new optimizer")
