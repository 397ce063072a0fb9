"""load_state_dict checks the whole state before it changes anything: a state dict of another
shape, with a missing or unknown entry, or with impossible counters is refused at load time,
naming the entry, and the optimizer is left as it was (#12: such states once failed only at
the next step)."""

import copy

import pytest
import torch

from test_hyperparameters import CASES, make, steps

IDS = [cls.__name__ for cls, _, _ in CASES]


def saved_after_steps(cls, kwargs, n=5):
    p, opt = make(cls, kwargs)
    steps(opt, p, n)
    return copy.deepcopy(opt.state_dict())


def entries(record, prefix=""):
    """(path, container, key) of every entry of a nested state record."""
    for key, value in record.items():
        yield f"{prefix}{key}", record, key
        if isinstance(value, dict):
            yield from entries(value, f"{prefix}{key}.")


@pytest.mark.parametrize("cls, kwargs, other", CASES, ids=IDS)
def test_every_entry_removed_is_refused_naming_it(cls, kwargs, other):
    saved = saved_after_steps(cls, kwargs)
    # the header; "frozen" may be absent (states saved before frozen parameters were left
    # alone read as freezing none)
    paths = [path for path, _, _ in entries(saved["sharpzo"])
             if path not in ("class", "format", "numel", "frozen")]
    for path in paths:
        state = copy.deepcopy(saved)
        for path_, container, key in entries(state["sharpzo"]):
            if path_ == path:
                del container[key]
                break
        p, opt = make(cls, kwargs)
        before = copy.deepcopy(opt.state_dict())
        with pytest.raises(ValueError, match="invalid state dict") as error:
            opt.load_state_dict(state)
        assert repr(path.split(".")[-1]) in str(error.value), (path, str(error.value))
        assert str(opt.state_dict()) == str(before)  # unchanged


@pytest.mark.parametrize("cls, kwargs, other", CASES, ids=IDS)
def test_negative_counters_and_seeds_are_refused(cls, kwargs, other):
    for key, value, match in [("seed", -5, "seed must be in"), ("steps", -3, "steps must be"),
                              ("forward_passes", -1, "forward_passes must be"),
                              ("seed", 2**64, "seed must be in"), ("steps", "3", "steps must")]:
        state = saved_after_steps(cls, kwargs)
        state["sharpzo"][key] = value
        p, opt = make(cls, kwargs)
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(state)


@pytest.mark.parametrize("cls, kwargs, other", CASES, ids=IDS)
def test_tensors_of_another_shape_are_refused(cls, kwargs, other):
    state = saved_after_steps(cls, kwargs)
    tensors = [(path, c, k) for path, c, k in entries(state["sharpzo"])
               if isinstance(c[k], torch.Tensor)]
    tensors += [(f"state[{i}].{k}", s, k) for i, s in state["state"].items() for k in s]
    assert tensors or cls.__name__ == "ZOSGD" and kwargs.get("momentum") == 0
    for path, container, key in tensors:
        broken = copy.deepcopy(state)
        original = container[key]
        for path_, c, k in entries(broken["sharpzo"]):
            if path_ == path:
                c[k] = torch.cat([original.reshape(-1), original.reshape(-1)[:1]])
        if path.startswith("state["):
            index = int(path[6:path.index("]")])
            broken["state"][index][key] = torch.cat([original, original[:1]])
        p, opt = make(cls, kwargs)
        with pytest.raises(ValueError, match="must be a .*tensor of shape"):
            opt.load_state_dict(broken)


def test_a_mask_of_another_size_is_refused():
    cls, kwargs, _ = CASES[1]  # SparseZO
    state = saved_after_steps(cls, kwargs)
    mask = state["sharpzo"]["mask"].clone()
    mask[(~mask).nonzero().flatten()[0]] = True  # k + 1 coordinates
    state["sharpzo"]["mask"] = mask
    p, opt = make(cls, kwargs)
    with pytest.raises(ValueError, match="mask must select k = 5 coordinates, got 6"):
        opt.load_state_dict(state)


@pytest.mark.parametrize("cls, kwargs, other", CASES, ids=IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_tensors_are_refused_naming_them(cls, kwargs, other, bad):
    state = saved_after_steps(cls, kwargs)
    tensors = [(path, c, k) for path, c, k in entries(state["sharpzo"])
               if isinstance(c[k], torch.Tensor) and c[k].is_floating_point()]
    tensors += [(f"state[{i}].{k}", s, k) for i, s in state["state"].items() for k in s]
    for path, container, key in tensors:
        broken = copy.deepcopy(state)
        for path_, c, k in [*entries(broken["sharpzo"]),
                            *[(f"state[{i}].{k}", s, k) for i, s in broken["state"].items()
                              for k in s]]:
            if path_ == path:
                c[k] = c[k].contiguous().clone()
                c[k].view(-1)[-1] = bad
        p, opt = make(cls, kwargs)
        before = copy.deepcopy(opt.state_dict())
        with pytest.raises(ValueError, match="not finite") as error:
            opt.load_state_dict(broken)
        assert path.split(".")[-1] in str(error.value), (path, str(error.value))
        assert str(opt.state_dict()) == str(before)
