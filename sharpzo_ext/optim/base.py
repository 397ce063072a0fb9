"""What every forward-only optimizer of sharpzo_ext shares: the seed and counters, the
hyperparameters in ``param_groups``, and ``state_dict`` with the optimizer-wide state.

Note [Hyperparameters and state]
Every hyperparameter lives in ``param_groups`` (torch.optim's place for them: ``defaults`` and
each group), and each step reads it from there, so schedulers and users can change lr, eps or
any other between steps, and ``state_dict()`` saves them (CMA-ES's sigma and popsize are its
starting values; its running ones are state). Those that shape the shared search
(eps, q, the mask, everything of CMA-ES) must be the same in every group: a step refuses
groups that disagree, naming the hyperparameter. ``load_state_dict`` adopts the saved
hyperparameters, as torch.optim does for lr: a resumed run continues with the values it was
saved with, whatever the new optimizer was built with, and is then bit for bit the run that
was saved.

The algorithms' own state (search distribution, masks, counters, the seed: the generator's
state) is optimizer-wide, not per parameter, so it lives in ``self.shared``, which
``state_dict()`` stores under the key "sharpzo" next to torch's per-parameter state. It is
kept apart because torch casts per-parameter state tensors to the parameter's dtype on loading,
which would break bit-for-bit resumption (float64 CMA-ES state for float32 parameters, bool
masks).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Iterable, Sequence, TypeVar

import torch

from sharpzo_ext.ops import checks
from sharpzo_ext.optim import flat, legacy, params as tuned_params, state_checks
from sharpzo_ext.optim.objective import Objective, check_objective

__all__ = ["ForwardOnlyOptimizer", "common_hyperparameters", "options_from_groups",
           "group_rates", "STATE_FORMAT"]

STATE_FORMAT = 2  # of the "sharpzo" record in state_dict(); 1 was sharpzo_ext 0.1.0's (legacy.py)

_Options = TypeVar("_Options")


def common_hyperparameters(param_groups: Sequence[dict], names: Iterable[str]) -> dict:
    """{name: value} for hyperparameters that every parameter group must share."""
    values = {}
    for name in names:
        missing = [i for i, group in enumerate(param_groups) if name not in group]
        if missing:
            raise ValueError(f"parameter group {missing[0]} has no hyperparameter {name!r} (a "
                             f"state dict of another version?)")
        first = param_groups[0][name]
        for group in param_groups[1:]:
            if group[name] is not first and group[name] != first:
                raise ValueError(f"{name} must be the same in every parameter group (one search "
                                 f"over all of them), got {first!r} and {group[name]!r}")
        values[name] = first
    return values


def options_from_groups(cls: type[_Options], param_groups: Sequence[dict]) -> _Options:
    """An options dataclass (two_point.Options, sparse.Options, cma.Options) from the values
    its fields have in the parameter groups, validated by its constructor."""
    names = [field.name for field in dataclasses.fields(cls)]
    return cls(**common_hyperparameters(param_groups, names))


def group_rates(param_groups: Sequence[dict]) -> tuple[list[float], list[float]]:
    """(lr, weight_decay) of every parameter, from its group, validated."""
    lrs, decays = [], []
    for group in param_groups:
        lr = checks.real(group["lr"], "lr", nonnegative=True)
        decay = checks.real(group["weight_decay"], "weight_decay", nonnegative=True)
        lrs += [lr] * len(group["params"])
        decays += [decay] * len(group["params"])
    return lrs, decays


class ForwardOnlyOptimizer(torch.optim.Optimizer):
    """Base of the forward-only optimizers (Note [Hyperparameters and state])."""

    def __init__(self, params: Iterable, defaults: dict, seed: int):
        self._frozen: list[int] = []  # Note [Frozen parameters]; filled as groups are added
        super().__init__(params, defaults)
        if self._numel() == 0:
            frozen = (" (the frozen ones, requires_grad=False, are not tuned)" if self._frozen
                      else "")
            raise ValueError(f"{type(self).__name__} needs parameters with at least one element "
                             f"to tune; these have none{frozen}")
        self.shared: dict = {"seed": checks.stream_integer(seed, "seed"), "forward_passes": 0,
                             "steps": 0}

    @property
    def seed(self) -> int:
        return self.shared["seed"]

    @property
    def forward_passes(self) -> int:
        """Objective evaluations so far (a Population call on m candidates counts m)."""
        return self.shared["forward_passes"]

    def _all_params(self) -> list[torch.Tensor]:
        """Every parameter of param_groups, frozen ones included, in order."""
        return [p for group in self.param_groups for p in group["params"]]

    def _tuned_groups(self) -> list[dict]:
        """param_groups with only the parameters tuned: all but those frozen when they were
        added (Note [Frozen parameters])."""
        frozen, index, groups = set(self._frozen), 0, []
        for group in self.param_groups:
            tuned = [p for i, p in enumerate(group["params"], index) if i not in frozen]
            index += len(group["params"])
            groups.append({**group, "params": tuned})
        return groups

    def _params(self) -> list[torch.Tensor]:
        """The parameters tuned, whose elements make the flat vector x."""
        return [p for group in self._tuned_groups() for p in group["params"]]

    def _numel(self) -> int:
        """d, the length of the flat parameter vector."""
        return flat.numel(self._params())

    one_vector = False  # CMAES and SharpZO: one parameter group, none added later

    def add_param_group(self, param_group: dict) -> None:
        if self.one_vector and self.param_groups:
            raise ValueError(f"{type(self).__name__} searches one vector: pass one parameter "
                             f"group, and add none later")
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        earlier = [(p, (g, i)) for g, group in enumerate(self.param_groups)
                   for i, p in enumerate(group["params"])]
        tuned_params.check_added(type(self).__name__, params, len(self.param_groups), earlier)
        super().add_param_group({**param_group, "params": params})
        self._frozen += [len(earlier) + i for i in tuned_params.frozen_indices(params)]

    def _objective(self, closure) -> Objective:
        """What each step begins with: the closure checked as an objective, and the parameters
        checked to be frozen as they were when added (Note [Frozen parameters])."""
        owner = type(self).__name__
        tuned_params.check_unchanged(owner, self._all_params(), self._frozen)
        return check_objective(closure, owner)

    def _add_defaults(self, values: dict) -> None:
        """Hyperparameters known only once the parameters are (k from density and d): into
        ``defaults``, and into every group that does not set them itself."""
        self.defaults.update(values)
        for group in self.param_groups:
            for name, value in values.items():
                group.setdefault(name, value)

    def _check_hyperparameters(self, param_groups: Sequence[dict]) -> None:
        """Raises ValueError if the hyperparameters in `param_groups` are invalid (each
        subclass reads its options as its steps do)."""
        raise NotImplementedError

    state_keys: tuple[str, ...] = ()  # the algorithm's entries of ``shared``, beyond the counters

    def _check_state(self, shared: dict, state_dict: dict) -> None:
        """Raises state_checks.InvalidState unless ``shared`` (a loaded "sharpzo" record without
        its header) and ``state_dict`` (its per-parameter state and hyperparameters, already
        validated) are a state this optimizer can continue. Subclasses check their entries and
        call this."""
        state_checks.keys(shared, "sharpzo", ("seed", "forward_passes", "steps",
                                              *self.state_keys))
        state_checks.seed(shared["seed"], "seed")
        state_checks.count(shared["forward_passes"], "forward_passes")
        state_checks.count(shared["steps"], "steps")

    def _commit(self, evaluations: int) -> None:
        """Counts a step that succeeded and the objective evaluations it took."""
        self.shared["forward_passes"] += evaluations
        self.shared["steps"] += 1

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["sharpzo"] = {"class": type(self).__name__, "format": STATE_FORMAT,
                            "numel": self._numel(), "frozen": list(self._frozen),
                            **copy.deepcopy(self.shared)}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Resumes from a ``state_dict()`` of the same class over as many parameter elements,
        adopting its hyperparameters (Note [Hyperparameters and state]). State dicts of
        sharpzo_ext 0.1.0 are upgraded (legacy.py). Everything is checked before anything
        changes: a bad state dict (wrong shapes or types, missing entries, negative counters)
        is a ValueError naming the entry, and the optimizer is left as it was."""
        state_dict = dict(state_dict)
        record = state_dict.pop("sharpzo", None)
        name, numel = type(self).__name__, self._numel()
        if not isinstance(record, dict) or record.get("class") != name:
            found = record.get("class") if isinstance(record, dict) else None
            raise ValueError(f"not a {name} state dict (saved by {found or 'something else'})")
        if "format" not in record:  # sharpzo_ext 0.1.0
            state_dict, record = legacy.upgrade(name, state_dict, record, self.param_groups, numel)
        elif record["format"] != STATE_FORMAT:
            raise ValueError(f"the state dict has format {record['format']}; this version of "
                             f"sharpzo_ext reads formats 1 and {STATE_FORMAT}")
        if record["numel"] != numel:
            raise ValueError(f"the state dict is of {record['numel']} parameter elements, this "
                             f"{name} has {numel}")
        frozen = record.get("frozen", [])  # absent before frozen parameters were left alone
        if not isinstance(frozen, list) or frozen != self._frozen:
            raise ValueError(f"the state dict froze parameters {frozen} (in param_groups order), "
                             f"this {name} freezes {self._frozen} (Note [Frozen parameters])")
        self._check_hyperparameters(state_dict["param_groups"])
        shared = {k: v for k, v in record.items()
                  if k not in ("class", "format", "numel", "frozen")}
        self._check_state(shared, state_dict)
        super().load_state_dict(state_dict)
        self.shared = _to_device(copy.deepcopy(shared), self._params()[0].device)


def _to_device(value, device):
    """Tensors anywhere in nested dicts and lists moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value
