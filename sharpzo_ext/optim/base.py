"""What every forward-only optimizer of sharpzo_ext shares: seeds, the forward-pass counter,
state_dict with the optimizer-wide state, flat views of the parameters, and exception safety."""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import operator
from typing import Callable, Iterable, Iterator

import torch

__all__ = ["ForwardOnlyOptimizer"]


def check_seed(seed) -> int:
    if isinstance(seed, bool):
        raise TypeError("seed must be an int in [0, 2^63), got a bool")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an int in [0, 2^63), got {type(seed).__name__}") from None
    if not 0 <= seed < 1 << 63:
        raise ValueError(f"seed must be in [0, 2^63), got {seed}")
    return seed


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be finite and {'>=' if allow_zero else '>'} 0, got {value}")
    return value


def check_int(value, name: str, least: int, most: int | None = None) -> int:
    """An integer argument in [least, most] (bools and fractions refused), naming it."""
    bound = f"in [{least}, {most}]" if most is not None else f">= {least}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")
    if value < least or (most is not None and value > most):
        raise ValueError(f"{name} must be an int {bound}, got {value}")
    return int(value)


def loss_value(loss) -> float:
    """A closure's loss as a Python float (a 0-dim or one-element tensor, or a number)."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"the closure must return a scalar loss, got a tensor of shape "
                             f"{tuple(loss.shape)}")
        return float(loss.detach())
    return float(loss)


def takes_population(closure: Callable) -> bool:
    """Whether a closure takes the population matrix (one positional parameter) rather than
    nothing (the standard torch.optim closure)."""
    try:
        parameters = inspect.signature(closure).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    return len(positional) == 1


class ForwardOnlyOptimizer(torch.optim.Optimizer):
    """Base of the forward-only optimizers.

    Subclasses keep optimizer-wide state (seed, counters, search distribution) in
    ``self.shared``, a dict of tensors and Python values that ``state_dict()`` stores under the
    key ``"sharpzo"`` next to torch's per-parameter state, without the dtype casts torch applies
    to per-parameter state on loading (which would break bit-for-bit resumption).
    """

    def __init__(self, params: Iterable, defaults: dict, seed: int):
        super().__init__(params, defaults)
        self.shared: dict = {"seed": check_seed(seed), "forward_passes": 0, "steps": 0}

    # ---- counters ------------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self.shared["seed"]

    @property
    def forward_passes(self) -> int:
        """Loss evaluations so far (a batched closure call on m candidates counts m)."""
        return self.shared["forward_passes"]

    def _count(self, evaluations: int) -> None:
        self.shared["forward_passes"] += evaluations

    # ---- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["sharpzo"] = {"class": type(self).__name__, **copy.deepcopy(self.shared)}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        shared = state_dict.pop("sharpzo", None)
        if not isinstance(shared, dict) or shared.get("class") != type(self).__name__:
            found = shared.get("class") if isinstance(shared, dict) else None
            raise ValueError(f"not a {type(self).__name__} state dict (saved by "
                             f"{found or 'something else'})")
        super().load_state_dict(state_dict)
        shared = {k: v for k, v in shared.items() if k != "class"}
        device = self._params()[0].device
        self.shared = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                       for k, v in copy.deepcopy(shared).items()}

    # ---- parameters ----------------------------------------------------------------------------

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _numel(self) -> int:
        return sum(p.numel() for p in self._params())

    def _flat(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The parameters as one flat vector (a copy)."""
        return torch.cat([p.detach().reshape(-1).to(dtype) for p in self._params()])

    @torch.no_grad()
    def _assign(self, flat: torch.Tensor) -> None:
        """Writes a flat vector into the parameters (cast to each parameter's dtype)."""
        offset = 0
        for p in self._params():
            p.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    def _snapshot(self, masks: list[torch.Tensor] | None = None) -> Callable[[], None]:
        """Copies the parameters (only the elements under `masks`, one bool mask per parameter,
        if given) and returns a function that writes them back bitwise."""
        params = self._params()
        if masks is None:
            saved = [p.detach().clone() for p in params]

            @torch.no_grad()
            def restore() -> None:
                for p, b in zip(params, saved):
                    p.copy_(b)
        else:
            saved = [p.detach()[m].clone() for p, m in zip(params, masks)]

            @torch.no_grad()
            def restore() -> None:
                for p, m, b in zip(params, masks, saved):
                    p.masked_scatter_(m, b)
        return restore

    def _evaluate(self, closure: Callable, X: torch.Tensor) -> torch.Tensor:
        """Losses (float64, CPU) at the flat points X (rows): one call of a population closure,
        or each row written into the parameters in turn for a standard closure (the caller
        restores the parameters)."""
        if takes_population(closure):
            losses = torch.as_tensor(closure(X)).detach().to("cpu", torch.float64).flatten()
            if losses.numel() != X.shape[0]:
                raise ValueError(f"the population closure must return {X.shape[0]} losses, "
                                 f"got {losses.numel()}")
            self._count(X.shape[0])
            return losses
        losses = []
        for x in X:
            self._assign(x)
            losses.append(loss_value(closure()))
            self._count(1)
        return torch.tensor(losses, dtype=torch.float64)

    @contextlib.contextmanager
    def _restored_on_error(self, restore: Callable[[], None] | None = None) -> Iterator[None]:
        """Parameters bitwise as they were if the block raises (from `restore`, or a snapshot
        of all parameters taken here)."""
        restore = self._snapshot() if restore is None else restore
        try:
            yield
        except BaseException:
            restore()
            raise
