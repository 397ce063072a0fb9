"""State dicts saved by sharpzo_ext 0.1.0 (format 1), upgraded to today's layout, so that runs
saved then (`sharpzo-ext train` run directories included) resume where they stopped.

Format 1 kept only lr and weight_decay in ``param_groups``; the other hyperparameters were the
constructor's, so they come from the optimizer that loads the state (build it with the same
arguments as the saved run, as 0.1.0 required). Its optimizer-wide record differed too: CMA-ES
state at the top level instead of under "cma", SparseZO masks per parameter instead of one flat
mask, and SharpZO's two stages as two nested state dicts.
"""

from __future__ import annotations

import torch

from sharpzo_ext.optim import cma

__all__ = ["upgrade"]

def _flat_mask(masks) -> torch.Tensor | None:
    return None if masks is None else torch.cat([m.reshape(-1) for m in masks])


def _common(record: dict) -> dict:
    return {k: record[k] for k in ("seed", "forward_passes", "steps")}


def upgrade(name: str, state_dict: dict, record: dict, param_groups: list[dict],
            numel: int) -> tuple[dict, dict]:
    """(state_dict, record) of format 1 for optimizer class `name`, in today's format. Saved
    hyperparameters win; those format 1 did not save come from `param_groups`."""
    groups = [{**{k: v for k, v in current.items() if k != "params"}, **saved}
              for current, saved in zip(param_groups, state_dict["param_groups"])]
    state_dict = {**state_dict, "param_groups": groups}
    new = {**_common(record), "class": name, "numel": numel}
    if name == "SparseZO":
        new.update(mask=_flat_mask(record["masks"]), refreshes=record["refreshes"])
    elif name == "CMAES":
        new["cma"] = {k: record[k] for k in cma.STATE_KEYS}
        new["numel"] = record["mean"].numel()
    elif name == "SharpZO":
        stage1 = record["stage1"]["sharpzo"]
        stage2 = record["stage2"]["sharpzo"] if record["stage2"] is not None else None
        new.update(stage=record["stage"], best_history=record["best_history"],
                   cma={k: stage1[k] for k in cma.STATE_KEYS},  # its generation: SharpZO's
                   numel=stage1["mean"].numel(),
                   mask=None if stage2 is None else _flat_mask(stage2["masks"]),
                   refreshes=0 if stage2 is None else stage2["refreshes"],
                   sparse_steps=0 if stage2 is None else stage2["steps"])
        if stage2 is not None:
            new["forward_passes"] += stage2["forward_passes"]
    return state_dict, new
